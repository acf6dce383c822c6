import t, { Test } from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { shq } from '../fixtures/shell';
import {
  DOMAIN_XML_LIMIT,
  DomainInfo,
  DomainXmlError,
  parseDomainXml,
  readDomainXml,
} from '../../src/formats/domain-xml';

const MODULE = path.resolve(__dirname, '../../src/formats/domain-xml.ts');
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Realistic documents, shaped like what libvirt hands to a qemu hook.

const UUID = 'c7a5fdbd-cdaf-9455-926a-d65c16db1809';

function domainXml(o: { name?: string; emulator?: string | null; id?: boolean } = {}): string {
  const name = o.name ?? 'web-01';
  const emulator =
    o.emulator === null ? '' : `    <emulator>${o.emulator ?? '/usr/bin/qemu-system-x86_64'}</emulator>\n`;
  return `<domain type='kvm'${o.id === false ? '' : " id='3'"} xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>${name}</name>
  <uuid>${UUID}</uuid>
  <title>Web front end</title>
  <description>nginx &amp; varnish; owner: ops@example.org</description>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static'>4</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
    <firmware>
      <feature enabled='no' name='enrolled-keys'/>
      <feature enabled='no' name='secure-boot'/>
    </firmware>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/web-01_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmport state='off'/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <pm>
    <suspend-to-mem enabled='no'/>
    <suspend-to-disk enabled='no'/>
  </pm>
  <devices>
${emulator}    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2' index='2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/debian-12.5.0-amd64-netinst.iso' index='1'/>
      <backingStore/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <alias name='sata0-0-0'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'>
      <alias name='pcie.0'/>
    </controller>
    <controller type='pci' index='1' model='pcie-root-port'>
      <model name='pcie-root-port'/>
      <target chassis='1' port='0x10'/>
      <alias name='pci.1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0' multifunction='on'/>
    </controller>
    <interface type='network'>
      <mac address='52:54:00:6b:3c:58'/>
      <source network='default' portid='0c3a1c5e-61a6-4f3e-9f0e-2d5b8f0b6f0e' bridge='virbr0'/>
      <target dev='vnet2'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:56'/>
      <source bridge='br0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <driver name='vhost' queues='4'/>
      <alias name='net1'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/run/libvirt/qemu/channel/3-web-01/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='tablet' bus='usb'>
      <alias name='input0'/>
      <address type='usb' bus='0' port='1'/>
    </input>
    <graphics type='spice' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
      <image compression='off'/>
    </graphics>
    <video>
      <model type='virtio' heads='1' primary='yes'/>
      <alias name='video0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <stats period='10'/>
      <alias name='balloon0'/>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <alias name='rng0'/>
      <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-${UUID}</label>
    <imagelabel>libvirt-${UUID}</imagelabel>
  </seclabel>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+994</label>
    <imagelabel>+64055:+994</imagelabel>
  </seclabel>
  <qemu:commandline>
    <qemu:arg value='-fw_cfg'/>
    <qemu:arg value='name=opt/org.example/config,string=1'/>
  </qemu:commandline>
</domain>
`;
}

const EXPECTED: DomainInfo = { name: 'web-01', uuid: UUID, emulator: '/usr/bin/qemu-system-x86_64' };

function domstatusXml(): string {
  return `<domstatus state='running' reason='booted' pid='12345'>
  <taint flag='high-privileges'/>
  <monitor path='/var/lib/libvirt/qemu/domain-3-web-01/monitor.sock' type='unix'/>
  <namespaces>
    <mount/>
  </namespaces>
  <vcpus>
    <vcpu id='0' pid='12350'/>
    <vcpu id='1' pid='12351'/>
  </vcpus>
  <qemuCaps>
    <flag name='kvm'/>
    <flag name='no-hpet'/>
  </qemuCaps>
  <devices>
    <device alias='virtio-disk0'/>
    <device alias='net0'/>
  </devices>
  <libDir path='/var/lib/libvirt/qemu/domain-3-web-01'/>
  <channelTargetDir path='/var/lib/libvirt/qemu/channel/target/domain-3-web-01'/>
  <chardevStdioLogd/>
  <allowReboot value='yes'/>
  <nodename index='2'/>
  <fdset index='0'/>
  <blockjobs active='no'/>
  <agentTimeout>-2</agentTimeout>
${domainXml()
  .split('\n')
  .map((l) => (l ? `  ${l}` : l))
  .join('\n')}</domstatus>
`;
}

function failsWith(t: Test, fn: () => unknown, pattern: RegExp, msg = 'fails'): void {
  let thrown: unknown = undefined;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof DomainXmlError)) {
    t.fail(`${msg}: expected a DomainXmlError, got ${String(thrown)}`);
    return;
  }
  t.match(thrown.message, pattern, msg);
  t.notMatch(thrown.message, /[\r\n]/, `${msg}: message is one line`);
  t.ok(thrown.message.length <= 300, `${msg}: message is short`);
}

function withFile<T>(t: Test, data: string | Buffer, fn: (fd: number) => T): T {
  const dir = t.testdir({});
  const file = path.join(dir, 'stdin.xml');
  fs.writeFileSync(file, data);
  const fd = fs.openSync(file, 'r');
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------

t.test('realistic domain XML', async (t) => {
  const xml = domainXml();
  t.same(parseDomainXml(xml), EXPECTED, 'string');
  t.same(parseDomainXml(Buffer.from(xml)), EXPECTED, 'Buffer');
  t.same(
    parseDomainXml(`<?xml version="1.0" encoding="UTF-8"?>\n<!-- from libvirt -->\n${xml}`),
    EXPECTED,
    'with an XML declaration and a comment',
  );
  t.same(parseDomainXml(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(xml)])), EXPECTED, 'with a BOM');
  t.same(
    withFile(t, xml, (fd) => readDomainXml(fd)),
    EXPECTED,
    'from a file descriptor',
  );
  t.same(parseDomainXml(domainXml({ id: false })), EXPECTED, 'inactive definition');
});

t.test('emulator, name and uuid details', async (t) => {
  t.same(parseDomainXml(domainXml({ emulator: null })), { ...EXPECTED, emulator: null }, 'no emulator');
  t.same(
    parseDomainXml(domainXml({ emulator: '\n      /usr/libexec/qemu-kvm \t\n    ' })),
    { ...EXPECTED, emulator: '/usr/libexec/qemu-kvm' },
    'emulator is trimmed',
  );
  t.same(parseDomainXml(domainXml({ emulator: '  ' })), { ...EXPECTED, emulator: null }, 'blank emulator');
  t.same(
    parseDomainXml(domainXml({ emulator: '/opt/q&amp;e/qemu&#x2d;system-&#xE9;t&#233;' })),
    { ...EXPECTED, emulator: '/opt/q&e/qemu-system-été' },
    'entities in emulator',
  );
  t.same(
    parseDomainXml(domainXml({ name: 'a&lt;b&gt;&quot;c&apos;&amp; ünï 😀' })),
    { ...EXPECTED, name: `a<b>"c'& ünï 😀` },
    'name with predefined entities and non-ASCII',
  );
  t.same(
    parseDomainXml(domainXml({ emulator: '<![CDATA[/usr/bin/qemu]]>-system<!-- x -->-x86_64' })),
    { ...EXPECTED, emulator: '/usr/bin/qemu-system-x86_64' },
    'CDATA and comments inside emulator',
  );
  t.same(parseDomainXml('<domain/>'), { name: null, uuid: null, emulator: null }, 'empty domain');
  t.same(
    parseDomainXml('<domain><uuid>\n  ' + UUID + '\n</uuid><name>x</name></domain>'),
    { name: 'x', uuid: UUID, emulator: null },
    'uuid trimmed, order free',
  );
});

t.test('only direct children of the domain count', async (t) => {
  const xml = `<domain type='kvm'>
  <metadata>
    <app:info xmlns:app='http://example.org/app'>
      <name>decoy-name</name>
      <uuid>decoy-uuid</uuid>
      <devices><emulator>/decoy/metadata</emulator></devices>
    </app:info>
  </metadata>
  <os><name>decoy-os</name></os>
  <name>real<b>ignored</b>-name</name>
  <uuid>${UUID}</uuid>
  <devices>
    <disk type='file'><emulator>/decoy/disk</emulator></disk>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
    <emulator>/second/emulator</emulator>
  </devices>
  <devices><emulator>/second/devices</emulator></devices>
  <name>second-name</name>
</domain>`;
  t.same(parseDomainXml(xml), {
    name: 'real-name',
    uuid: UUID,
    emulator: '/usr/bin/qemu-system-aarch64',
  });
});

t.test('domain wrapped in another root', async (t) => {
  t.same(parseDomainXml(domstatusXml()), EXPECTED, 'domstatus');
  const snapshot = `<domainsnapshot>
  <name>before-upgrade</name>
  <state>running</state>
  <creationTime>1716638400</creationTime>
  <memory snapshot='internal'/>
  <disks>
    <disk name='vda' snapshot='internal'/>
  </disks>
  <active>1</active>
${domainXml()}  <cookie><cpu mode='custom'/></cookie>
</domainsnapshot>
`;
  t.same(parseDomainXml(snapshot), EXPECTED, 'domainsnapshot: the snapshot name is not taken');
  failsWith(t, () => parseDomainXml('<network><name>default</name></network>'), /^no <domain> element in domain XML$/);
  failsWith(t, () => parseDomainXml('<domainsnapshot><name>x</name></domainsnapshot>'), /^no <domain> element/);
});

t.test('stops once everything is known', async (t) => {
  const xml = domainXml();
  const afterEmulator = xml.indexOf('</emulator>') + '</emulator>'.length;
  t.same(parseDomainXml(xml.slice(0, afterEmulator) + '\n<<<garbage &bogus; </x>'), EXPECTED, 'garbage after');
  t.same(parseDomainXml(xml.slice(0, afterEmulator)), EXPECTED, 'truncated after emulator');
  t.same(parseDomainXml(domstatusXml() + '<junk'), EXPECTED, 'junk after domstatus');
  const status = domstatusXml();
  t.same(
    parseDomainXml(status.slice(0, status.indexOf('</domstatus>')) + '\u0000'),
    EXPECTED,
    'nothing after the domain is looked at',
  );
  failsWith(
    t,
    () => parseDomainXml(xml.slice(0, xml.indexOf('</emulator>') + 5)),
    /^malformed domain XML at line \d+, column \d+: /,
    'truncated inside emulator',
  );
  failsWith(
    t,
    () => parseDomainXml(domainXml({ emulator: null }).slice(0, 2000)),
    /^malformed domain XML at line \d+, column \d+: unclosed tag: /,
    'truncated without emulator',
  );
  failsWith(
    t,
    () => parseDomainXml('<domain>\n<name>a</name>\n</wrong>'),
    /^malformed domain XML at line 3, column 8: unexpected close tag\.$/,
    'a wrong close tag is not the end of the domain',
  );
  failsWith(
    t,
    () => parseDomainXml(`<domain><name>a</name><uuid>u</uuid><devices><emulator>/e</emulatorX>`),
    /unexpected close tag/,
    'a wrong close tag is not the end of emulator',
  );
});

t.test('DOCTYPE and entities are never expanded', async (t) => {
  const message = /^domain XML has a DOCTYPE; entities are not expanded$/;
  failsWith(t, () => parseDomainXml('<!DOCTYPE domain>\n' + domainXml()), message, 'plain DOCTYPE');
  const laughs =
    '<?xml version="1.0"?>\n<!DOCTYPE domain [\n <!ENTITY lol "lol">\n' +
    Array.from({ length: 9 }, (_, i) => {
      const prev = i === 0 ? 'lol' : `lol${i}`;
      return ` <!ENTITY lol${i + 1} "${`&${prev};`.repeat(10)}">\n`;
    }).join('') +
    `]>\n<domain><name>&lol9;</name><uuid>${UUID}</uuid></domain>\n`;
  const start = process.hrtime.bigint();
  failsWith(t, () => parseDomainXml(laughs), message, 'billion laughs');
  failsWith(t, () => withFile(t, laughs, (fd) => readDomainXml(fd)), message, 'billion laughs on an fd');
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t.ok(ms < 1000, `rejected fast (${ms.toFixed(1)} ms)`);
  failsWith(
    t,
    () =>
      parseDomainXml(
        '<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><domain><name>&xxe;</name></domain>',
      ),
    message,
    'external entity',
  );
  failsWith(
    t,
    () => parseDomainXml('<!DOCTYPE domain SYSTEM "http://example.org/domain.dtd"><domain/>'),
    message,
    'external DTD',
  );
  failsWith(
    t,
    () => parseDomainXml(`<domain>\n  <name>&nbsp;x</name>\n</domain>`),
    /^domain XML uses an undefined entity at line 2, column \d+; entities are not expanded$/,
    'undefined entity without a DOCTYPE',
  );
  failsWith(t, () => parseDomainXml(`<domain type='&foo;'/>`), /undefined entity/, 'undefined entity in an attribute');
  failsWith(
    t,
    () => parseDomainXml('<domain><name>a</name>\n<!DOCTYPE x>\n</domain>'),
    /^malformed domain XML at line 2, column \d+: inappropriately located doctype declaration\.$/,
    'DOCTYPE inside the root',
  );
});

t.test('malformed XML', async (t) => {
  failsWith(
    t,
    () => parseDomainXml("<domain type='kvm'>\n  <name>a</name>\n  <uuid>x</uuid\n</domain>"),
    /^malformed domain XML at line \d+, column \d+: .+$/,
  );
  failsWith(
    t,
    () => parseDomainXml('<domain type=kvm/>'),
    /^malformed domain XML at line 1, column \d+: unquoted attribute value\.$/,
  );
  failsWith(t, () => parseDomainXml('not xml'), /^malformed domain XML at line 1, column \d+: /);
  failsWith(t, () => parseDomainXml('<domain>\u0001</domain>'), /disallowed character/);
  const huge = 'a'.repeat(100000);
  failsWith(
    t,
    () => parseDomainXml(`<domain ${huge}='1' ${huge}='2'/>`),
    /^malformed domain XML at line 1, column \d+: duplicate attribute: a{150,200}\.\.\.$/,
    'input quoted in messages is cut short',
  );
  failsWith(
    t,
    () => parseDomainXml(`<domain ${'b\n'.repeat(10)}/>`),
    /^malformed domain XML at line \d+, column \d+: .*$/,
    'multi-line input, one-line message',
  );
});

t.test('empty input', async (t) => {
  const message = /^no domain XML on stdin$/;
  failsWith(t, () => parseDomainXml(''), message, 'empty string');
  failsWith(t, () => parseDomainXml(Buffer.alloc(0)), message, 'empty Buffer');
  failsWith(t, () => parseDomainXml(' \n\t\r\n'), message, 'whitespace');
  failsWith(t, () => withFile(t, '', (fd) => readDomainXml(fd)), message, 'empty file');
  const devnull = fs.openSync('/dev/null', 'r');
  try {
    failsWith(t, () => readDomainXml(devnull), message, '/dev/null');
  } finally {
    fs.closeSync(devnull);
  }
  failsWith(t, () => readDomainXml(987654), message, 'closed fd (EBADF) is end of input');
  const dir = fs.openSync(t.testdir({}), 'r');
  try {
    failsWith(t, () => readDomainXml(dir), /^cannot read domain XML from stdin: EISDIR$/, 'read error');
  } finally {
    fs.closeSync(dir);
  }
});

t.test('size limit', async (t) => {
  t.equal(DOMAIN_XML_LIMIT, 16 * MiB);
  const xml = domainXml();
  // 17 MiB of valid XML: the domain ends early, but the input is too large.
  const big = Buffer.alloc(17 * MiB, 0x20);
  big.write(xml, 0);
  const realReadSync = fs.readSync;
  let requested = 0;
  fs.readSync = function (this: unknown, ...args: unknown[]): number {
    requested += args[3] as number;
    return Reflect.apply(realReadSync, fs, args) as number;
  } as typeof fs.readSync;
  try {
    failsWith(t, () => withFile(t, big, (fd) => readDomainXml(fd)), /^domain XML on stdin is larger than 16 MiB$/);
  } finally {
    fs.readSync = realReadSync;
  }
  t.ok(requested <= 16 * MiB + 1, `asked for ${requested} bytes, at most 16 MiB + 1`);
  // Exactly 16 MiB is accepted.
  t.same(
    withFile(t, big.subarray(0, 16 * MiB), (fd) => readDomainXml(fd)),
    EXPECTED,
    'exactly 16 MiB',
  );
  failsWith(
    t,
    () => withFile(t, big.subarray(0, 16 * MiB + 1), (fd) => readDomainXml(fd)),
    /larger than 16 MiB/,
    '16 MiB + 1',
  );
  failsWith(t, () => parseDomainXml(big), /^domain XML is larger than 16 MiB$/, 'parseDomainXml too');
  failsWith(t, () => parseDomainXml('é'.repeat(8 * MiB + 1)), /larger than 16 MiB/, 'counted in UTF-8 bytes');
});

// ---------------------------------------------------------------------------
// Through real pipes, in a child process reading its own stdin (fd 0).

interface ChildResult {
  ok?: DomainInfo;
  error?: string;
  message?: string;
  isDomainXmlError?: boolean;
  probe?: string;
}

const CHILD_CODE = `
const fs = require('node:fs');
const m = require(process.env.DOMAIN_XML_MODULE);
const out = {};
if (process.env.DOMAIN_XML_READY) {
  // Opening process.stdin makes a pipe on fd 0 non-blocking.
  void process.stdin;
  try { fs.readSync(0, Buffer.alloc(1), 0, 1, null); out.probe = 'data'; }
  catch (e) { out.probe = e.code; }
  fs.writeFileSync(process.env.DOMAIN_XML_READY, '');
}
try { out.ok = m.readDomainXml(0); }
catch (e) { out.error = e.name; out.message = e.message; out.isDomainXmlError = e instanceof m.DomainXmlError; }
fs.writeSync(1, JSON.stringify(out));
process.exit(0);
`;

function nodeArgs(): string[] {
  const ts = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  return ts.length > 0 ? ts : process.execArgv;
}

/** Runs `producer | node -e CHILD_CODE` through /bin/sh. */
function runChild(t: Test, producer: string, env: Record<string, string> = {}): ChildResult {
  const quoted = nodeArgs().map(shq).join(' ');
  const res = spawnSync('/bin/sh', ['-c', `${producer} | "$NODE_BIN" ${quoted} -e "$CHILD_CODE"`], {
    env: { ...process.env, NODE_BIN: process.execPath, CHILD_CODE, DOMAIN_XML_MODULE: MODULE, ...env },
    cwd: path.resolve(__dirname, '../..'),
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 1024 * 1024,
  });
  t.equal(res.status, 0, `child exited cleanly ${res.stderr ? res.stderr.slice(0, 500) : ''}`);
  try {
    return JSON.parse(res.stdout) as ChildResult;
  } catch {
    t.fail(`child output: ${res.stdout.slice(0, 500)} ${res.stderr.slice(0, 500)}`);
    return {};
  }
}

t.test('stdin through a real pipe', async (t) => {
  const dir = t.testdir({ 'domain.xml': domainXml(), 'status.xml': domstatusXml() });
  const ok = runChild(t, `cat '${path.join(dir, 'domain.xml')}'`);
  t.same(ok, { ok: EXPECTED }, 'realistic domain XML');
  t.same(runChild(t, `cat '${path.join(dir, 'status.xml')}'`), { ok: EXPECTED }, 'domstatus');

  const big = runChild(t, `"$NODE_BIN" -e "process.stdout.write(Buffer.alloc(17 * 1024 * 1024, 32))" 2>/dev/null`);
  t.same(
    big,
    { error: 'DomainXmlError', message: 'domain XML on stdin is larger than 16 MiB', isDomainXmlError: true },
    '17 MiB',
  );
  t.same(
    runChild(t, ': '),
    { error: 'DomainXmlError', message: 'no domain XML on stdin', isDomainXmlError: true },
    'empty stdin',
  );
  t.same(
    runChild(t, `printf '<domain><name>x</nam>'`),
    {
      error: 'DomainXmlError',
      message: 'malformed domain XML at line 1, column 21: unexpected close tag.',
      isDomainXmlError: true,
    },
    'malformed',
  );
});

t.test('stdin closed', async (t) => {
  const res = spawnSync(process.execPath, [...nodeArgs(), '-e', CHILD_CODE], {
    env: { ...process.env, DOMAIN_XML_MODULE: MODULE },
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.same(JSON.parse(res.stdout), {
    error: 'DomainXmlError',
    message: 'no domain XML on stdin',
    isDomainXmlError: true,
  });
  const shell = spawnSync(
    '/bin/sh',
    [
      '-c',
      `"$NODE_BIN" ${nodeArgs()
        .map((a) => `'${a}'`)
        .join(' ')} -e "$CHILD_CODE" <&-`,
    ],
    {
      env: { ...process.env, NODE_BIN: process.execPath, CHILD_CODE, DOMAIN_XML_MODULE: MODULE },
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  t.same(
    JSON.parse(shell.stdout),
    {
      error: 'DomainXmlError',
      message: 'no domain XML on stdin',
      isDomainXmlError: true,
    },
    'fd 0 closed by the shell',
  );
});

t.test('non-blocking stdin (EAGAIN) is waited for', async (t) => {
  const dir = t.testdir({});
  const ready = path.join(dir, 'ready');
  const xml = domainXml();
  const cut = xml.indexOf('<devices>') + 3;
  const res = runChild(
    t,
    // Writes nothing until the child has seen EAGAIN, then the XML in two
    // parts with a pause between them.
    `( i=0; while [ ! -e "$DOMAIN_XML_READY" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; ` +
      `printf '%s' "$PART1"; sleep 0.3; printf '%s' "$PART2" )`,
    { DOMAIN_XML_READY: ready, PART1: xml.slice(0, cut), PART2: xml.slice(cut) },
  );
  t.equal(res.probe, 'EAGAIN', 'stdin was non-blocking and empty at first');
  t.same(res.ok, EXPECTED, 'read the whole XML anyway');
});

// ---------------------------------------------------------------------------
// Property tests: whatever the input, the result is a DomainInfo or a
// DomainXmlError with a short one-line message, never anything else.

function outcome(fn: () => DomainInfo): DomainInfo | 'error' {
  try {
    const r = fn();
    for (const k of ['name', 'uuid', 'emulator'] as const) {
      if (r[k] !== null && typeof r[k] !== 'string') throw new Error(`bad ${k}`);
    }
    return r;
  } catch (err) {
    if (err instanceof DomainXmlError) {
      if (/[\r\n]/.test(err.message) || err.message.length > 300) throw new Error(`bad message: ${err.message}`);
      return 'error';
    }
    throw err;
  }
}

const FC = { seed: 42, numRuns: 1000 };

t.test('property: arbitrary input', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => {
        outcome(() => parseDomainXml(s));
      }),
      FC,
    ),
  );
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        outcome(() => parseDomainXml(Buffer.from(bytes)));
      }),
      FC,
    ),
  );
  const piece = fc.constantFrom(
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
    '<!DOCTYPE d>',
    '&amp;',
    '&lol;',
    '&#0;',
    '&#x41;',
    '<![CDATA[',
    ']]>',
    '<!--',
    '-->',
    '<?pi ?>',
    "a='1'",
    '/',
    'x',
    'é',
    '\u{1F600}',
    ' ',
    '\n',
    '<',
    '>',
  );
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 40 }), (parts) => {
        outcome(() => parseDomainXml(parts.join('')));
      }),
      FC,
    ),
  );
});

t.test('property: mutated valid documents', async (t) => {
  const base = Buffer.from(domstatusXml());
  const mutation = fc.record({
    at: fc.nat({ max: base.length }),
    kind: fc.constantFrom('flip', 'delete', 'insert', 'truncate'),
    byte: fc.integer({ min: 0, max: 255 }),
    len: fc.integer({ min: 1, max: 8 }),
  });
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
        let buf = Buffer.from(base);
        for (const m of mutations) {
          const at = Math.min(m.at, buf.length);
          if (m.kind === 'flip' && at < buf.length) {
            buf[at] = m.byte;
          } else if (m.kind === 'delete') {
            buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + m.len)]);
          } else if (m.kind === 'insert') {
            buf = Buffer.concat([buf.subarray(0, at), Buffer.alloc(m.len, m.byte), buf.subarray(at)]);
          } else if (m.kind === 'truncate') {
            buf = buf.subarray(0, at);
          }
        }
        const fromBuffer = outcome(() => parseDomainXml(buf));
        const fromString = outcome(() => parseDomainXml(buf.toString('utf8')));
        if (JSON.stringify(fromBuffer) !== JSON.stringify(fromString)) {
          throw new Error(`Buffer and string disagree: ${JSON.stringify([fromBuffer, fromString])}`);
        }
      }),
      FC,
    ),
  );
});
