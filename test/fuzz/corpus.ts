import * as fs from 'node:fs';
import * as path from 'node:path';

// Realistic inputs for the mutation fuzzers: what libvirt, distributions
// and admins actually produce, so mutations start close to the paths the
// parsers take in production.

const UUID = 'c7a5fdbd-cdaf-9455-926a-d65c16db1809';

export const DOMAIN_XMLS: string[] = [
  // What libvirt hands a prepare hook for a typical KVM guest.
  `<domain type='kvm' id='3' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web-01</name>
  <uuid>${UUID}</uuid>
  <title>Web front end</title>
  <description>nginx &amp; varnish &lt;prod&gt;</description>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <vcpu placement='static'>4</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <graphics type='spice' autoport='yes'><listen type='address'/></graphics>
    <video><model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/></video>
    <redirdev bus='usb' type='spicevmc'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-device'/>
  </qemu:commandline>
</domain>
`,
  // The smallest guest that starts under TCG.
  `<domain type='qemu'><name>tiny</name><memory unit='KiB'>65536</memory><os><type arch='x86_64' ` +
    `machine='pc'>hvm</type></os><devices><emulator>/usr/libexec/qemu-kvm</emulator><serial ` +
    `type='pty'/><video><model type='none'/></video><memballoon model='none'/></devices></domain>`,
  // A status document wrapping the domain, as on reconnect and restore.
  `<?xml version="1.0" encoding="UTF-8"?>
<!-- WARNING: THIS IS AN AUTO-GENERATED FILE. -->
<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-3-web-01/monitor.sock' type='unix'/>
  <vcpus><vcpu id='0' pid='4250'/></vcpus>
  <qemuCaps><flag name='kvm'/></qemuCaps>
  <domain type='kvm' id='3'>
    <name>web-01</name>
    <uuid>${UUID}</uuid>
    <devices>
      <emulator>
        /usr/bin/qemu-system-x86_64
      </emulator>
    </devices>
  </domain>
</domstatus>
`,
  // Names and paths with everything XML allows: entities, character references, CDATA, UTF-8, CRLF.
  `\uFEFF<?xml version="1.0"?>\r\n<domain type="kvm">\r\n  <name>gäst &#x1F600; &amp; ` +
    `&#60;x&#62;</name>\r\n  <uuid> ${UUID} </uuid>\r\n  <?pi data?>\r\n  <devices><!-- emulator below ` +
    `--><emulator><![CDATA[/opt/qemu ü/bin/qemu-system-x86_64]]></emulator></devices>\r\n</domain>\r\n`,
  // A wrapper script as emulator, and elements that look like the ones read but are not.
  `<domain type='kvm'><name>i386</name><metadata><name>not ` +
    `this</name><devices><emulator>/not/this</emulator></devices></metadata>` +
    `<devices><disk><emulator>/nor/this</emulator></disk><emulator>/usr/bin/qemu-system-i386</emulator></devices>` +
    `<devices><emulator>/second/devices</emulator></devices></domain>`,
];

export const DOMAIN_TOKENS = [
  '<domain>',
  '</domain>',
  '<domstatus>',
  '</domstatus>',
  '<name>',
  '</name>',
  '<uuid>',
  '</uuid>',
  '<devices>',
  '</devices>',
  '<emulator>',
  '</emulator>',
  '<!--',
  '-->',
  '<![CDATA[',
  ']]>',
  '<?xml version="1.0"?>',
  '<?pi x?>',
  '<!DOCTYPE d>',
  '<!DOCTYPE d [<!ENTITY e "x">]>',
  '&e;',
  '&amp;',
  '&#0;',
  '&#x10FFFF;',
  '&#xD800;',
  '&#1114112;',
  '\uFEFF',
  '\u2028',
  '\u0000',
  '\u001b[31m',
  "'",
  '"',
  '=',
  ' xmlns:q="urn:x"',
  '<q:emulator>',
  '</q:emulator>',
  '/>',
  '<',
  '>',
  '&',
  ']]>',
  '\ud83d',
  '\ude00',
  'é',
  '\r\n',
];

function header(o: { emulator?: string; moddir?: boolean } = {}): string {
  return [
    '<qemuCaps>',
    `  <emulator>${o.emulator ?? '/usr/bin/qemu-system-x86_64'}</emulator>`,
    '  <qemuctime>1716638400</qemuctime>',
    ...(o.moddir === false ? [] : ['  <qemumoddirmtime>1716638401</qemumoddirmtime>']),
    '  <selfctime>1716638402</selfctime>',
    '  <selfvers>9000000</selfvers>',
  ].join('\n');
}

const BODY = [
  '  <usedQMP/>',
  '  <kvmSupportsNesting/>',
  ...Array.from({ length: 40 }, (_, i) => `  <flag name='flag-${i}'/>`),
  '  <version>7002000</version>',
  '  <kvmVersion>0</kvmVersion>',
  '  <microcodeVersion>43</microcodeVersion>',
  '  <package>Debian 1:7.2+dfsg-7+deb12u6</package>',
  "  <hostCPU type='kvm' model='base' migratability='yes'>",
  "    <property name='vmx-apicv-xapic' type='boolean' value='true' migratable='yes'/>",
  '  </hostCPU>',
  '</qemuCaps>',
  '',
].join('\n');

export const CACHE_XMLS: string[] = [
  `${header()}\n${BODY}`,
  `<?xml version="1.0"?>\n${header({ moddir: false, emulator: '/usr/bin/qemu-ü-😀' })}\n${BODY}`,
  `<qemuCaps><emulator>/usr/libexec/qemu-kvm</emulator><qemuctime>0</qemuctime></qemuCaps>`,
  `<!-- written by libvirt -->\n<qemuCaps>\n  <emulator> /opt/q/bin/qemu </emulator>\n  <qemuctime>\n 17 ` +
    `\n</qemuctime>\n  <selfvers>10005000</selfvers>\n</qemuCaps>\n`,
];

export const CACHE_TOKENS = [
  '<qemuCaps>',
  '</qemuCaps>',
  '<emulator>',
  '</emulator>',
  '<qemuctime>',
  '</qemuctime>',
  '<qemumoddirmtime>',
  '</qemumoddirmtime>',
  '<selfctime>',
  '</selfctime>',
  '<selfvers>',
  '</selfvers>',
  '<usedQMP/>',
  '<!DOCTYPE x>',
  '&amp;',
  '&x;',
  '&#0;',
  '<![CDATA[',
  ']]>',
  '<!--',
  '-->',
  '<?pi ?>',
  '9007199254740993',
  '-1',
  '1e3',
  '0x10',
  ' ',
  '\n',
  '<',
  '>',
  '\ud83d',
  'é',
  '\u0000',
];

const exampleConfig = fs.readFileSync(path.join(__dirname, '../../hooks/qemu-modwatch.conf'), 'utf8');

export const CONFIGS: string[] = [
  exampleConfig,
  exampleConfig.replace(/^#(\w+ = .*)$/gm, '$1'),
  '[modules]\ndirs = /opt/qemu/lib/qemu, /srv/qemu-mods\ncontent_hash = yes\n[emulators]\npaths[] = ' +
    '/opt/a\npaths[] = /opt/b\n[policy]\non_change = refuse\nnudge = none\nfail = closed\n[libvirt]\nmoddir ' +
    '= /usr/lib64/qemu\n',
  '; comment\n# comment\n\n[policy]\r\non_change=warn\r\n',
];

export const CONFIG_TOKENS = [
  '[modules]',
  '[emulators]',
  '[policy]',
  '[libvirt]',
  '[__proto__]',
  '[constructor]',
  '[prototype]',
  '[a.b]',
  '[]',
  '[',
  ']',
  'dirs',
  'content_hash',
  'paths',
  'paths[]',
  'on_change',
  'nudge',
  'fail',
  'moddir',
  '__proto__',
  'constructor',
  'toString',
  ' = ',
  '=',
  '/',
  '/opt/x',
  'relative',
  'yes',
  'no',
  'true',
  'TRUE',
  'invalidate',
  'warn',
  'refuse',
  'emulator-ctime',
  'moddir-mtime',
  'none',
  'open',
  'closed',
  '"',
  "'",
  ';',
  '#',
  '\\',
  ',',
  '\n',
  '\r\n',
  '\u0000',
  'é',
  '\ufeff',
  '   ',
];

export const WRAPPERS: string[] = [
  // Debian's qemu-system-i386 style.
  '#! /bin/sh\n# Debian wrapper\nexe=/usr/libexec/qemu-system-i386\nexec "$exe" "$@"\n',
  '#!/bin/sh\nexport QEMU_MODULE_DIR=/opt/qemu/lib/qemu\nexec /opt/qemu/bin/qemu-system-x86_64 "$@"\n',
  '#!/bin/bash\nset -e\nQEMU_MODULE_DIR="/srv/mods" exec env FOO=1 /usr/bin/qemu-system-x86_64 -enable-kvm "$@"\n',
  '#!/bin/sh\nQ=\'/opt/q u/qemu\'\nexec "${Q}" "$@" # comment\n',
  '#!/bin/sh\nexec $(which qemu-system-x86_64) "$@"\n',
];

export const WRAPPER_TOKENS = [
  'exec ',
  'env ',
  'export ',
  'QEMU_MODULE_DIR=',
  '="',
  "='",
  '"',
  "'",
  '$',
  '${',
  '}',
  '`',
  '#',
  ';',
  '\n',
  ' ',
  '\t',
  '/',
  '*',
  '?',
  '"$@"',
  'exe=',
  '$exe',
  '\\',
  '\u0000',
  '/usr/bin/qemu-system-x86_64',
  '/opt/q',
];
