import t, { Test } from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import {
  CACHE_HEADER_READ_LIMIT,
  CacheHeader,
  CacheHeaderError,
  parseCacheHeader,
  readCacheHeader,
} from '../../src/formats/cache-header';

// ---------------------------------------------------------------------------
// A realistic capabilities cache file, shaped like the ones libvirt writes.

interface CacheOptions {
  emulator?: string | null;
  qemuctime?: string | null;
  qemumoddirmtime?: string | null;
  selfctime?: string | null;
  selfvers?: string | null;
  /** Approximate size of the whole file in bytes. */
  size?: number;
}

const DEFAULTS = {
  emulator: '/usr/bin/qemu-system-x86_64',
  qemuctime: '1716638400',
  qemumoddirmtime: '1716638401',
  selfctime: '1716638402',
  selfvers: '9000000',
};

const FLAGS = [
  'kvm',
  'no-hpet',
  'spice',
  'boot-index',
  'hda-duplex',
  'ccid-emulated',
  'ccid-passthru',
  'virtio-tx-alg',
  'virtio-blk-pci.ioeventfd',
  'sga',
  'virtio-blk-pci.event_idx',
  'virtio-net-pci.event_idx',
  'piix3-usb-uhci',
  'piix4-usb-uhci',
  'usb-ehci',
  'ich9-usb-ehci1',
  'vt82c686b-usb-uhci',
  'pci-ohci',
  'usb-redir',
  'usb-hub',
  'ich9-ahci',
  'no-acpi',
  'fsdev-readonly',
  'virtio-blk-pci.scsi',
  'drive-copy-on-read',
  'fsdev-writeout',
  'drive-iotune',
  'system_wakeup',
  'scsi-disk.channel',
  'scsi-block',
  'transaction',
  'block-job-async',
  'scsi-cd',
  'ide-cd',
  'hda-micro',
  'dump-guest-memory',
  'nec-usb-xhci',
  'balloon-event',
  'lsi',
  'virtio-scsi-pci',
  'blockio',
  'disable-s3',
  'disable-s4',
  'usb-redir.filter',
  'ide-drive.wwn',
  'scsi-disk.wwn',
  'seccomp-sandbox',
  'reboot-timeout',
  'seamless-migration',
  'block-commit',
  'vnc',
  'drive-mirror',
  'usb-redir.bootindex',
  'usb-host.bootindex',
  'blockdev-snapshot-sync',
  'qxl',
  'VGA',
  'cirrus-vga',
  'vmware-svga',
  'device-video-primary',
  'usb-serial',
  'usb-net',
  'add-fd',
  'nbd-server',
  'virtio-rng',
  'rng-random',
  'rng-egd',
  'dtb',
  'megasas',
  'ipv6-migration',
  'machine-opt',
  'machine-usb-opt',
  'tpm-passthrough',
  'tpm-tis',
  'pci-bridge',
  'vfio-pci',
  'vfio-pci.bootindex',
  'scsi-generic',
  'scsi-generic.bootindex',
  'mem-merge',
  'vnc-websocket',
  'drive-discard',
  'mlock',
  'device-del-event',
  'dmi-to-pci-bridge',
  'i440fx-pci-hole64-size',
  'q35-pci-hole64-size',
  'usb-storage',
  'usb-storage.removable',
  'ich9-intel-hda',
  'kvm-pit-lost-tick-policy',
  'boot-strict',
  'pvpanic',
  'spice-file-xfer-disable',
  'usb-kbd',
  'msg-timestamp',
  'active-commit',
  'change-backing-file',
  'memory-backend-ram',
  'numa',
  'memory-backend-file',
  'usb-audio',
  'rtc-reset-reinjection',
  'splash-timeout',
  'iothread',
  'migrate-rdma',
  'ivshmem',
  'drive-iotune-max',
  'VGA.vgamem_mb',
  'vmware-svga.vgamem_mb',
  'qxl.vgamem_mb',
  'pc-dimm',
  'machine-vmport-opt',
  'aes-key-wrap',
  'dea-key-wrap',
  'pci-serial',
  'vhost-user-multiqueue',
  'migration-event',
  'ioh3420',
  'x3130-upstream',
  'xio3130-downstream',
  'rtl8139',
  'e1000',
  'virtio-net',
  'gic-version',
  'incoming-defer',
  'virtio-gpu',
  'virtio-gpu.virgl',
  'virtio-keyboard',
  'virtio-mouse',
  'virtio-tablet',
  'virtio-input-host',
  'chardev-file-append',
  'ich9-disable-s3',
  'ich9-disable-s4',
  'vserport-change-event',
  'virtio-balloon-pci.deflate-on-oom',
  'mptsas1068',
  'spice-gl',
  'qxl.vram64_size_mb',
  'chardev-logfile',
  'debug-threads',
  'secret',
  'pxb',
  'pxb-pcie',
  'device-tray-moved-event',
  'nec-usb-xhci-ports',
  'virtio-scsi-pci.iothread',
  'name-guest',
  'qxl.max_outputs',
  'spice-unix',
  'drive-detect-zeroes',
  'tls-creds-x509',
  'intel-iommu',
  'smm',
  'virtio-pci-disable-legacy',
  'query-hotpluggable-cpus',
  'virtio-net.rx_queue_size',
  'virtio-vga',
  'drive-iotune-max-length',
  'ivshmem-plain',
  'ivshmem-doorbell',
  'query-qmp-schema',
  'gluster.debug_level',
  'vhost-scsi',
  'drive-iotune-group',
  'query-cpu-model-expansion',
  'virtio-net.host_mtu',
  'spice-rendernode',
  'nvdimm',
  'pcie-root-port',
  'query-cpu-definitions',
  'block-write-threshold',
  'query-named-block-nodes',
  'cpu-cache',
  'qemu-xhci',
  'kernel-irqchip',
  'kernel-irqchip.split',
  'intel-iommu.intremap',
  'intel-iommu.caching-mode',
  'intel-iommu.eim',
  'intel-iommu.device-iotlb',
  'virtio.iommu_platform',
  'virtio.ats',
  'loadparm',
  'vnc-multi-servers',
  'virtio-net.tx_queue_size',
  'chardev-reconnect',
  'virtio-blk.num-queues',
  'vmcoreinfo',
  'numa.dist',
  'disk-share-rw',
  'iscsi.password-secret',
  'isa-serial',
  'dump-completed',
  'qcow2-luks',
  'pcie-pci-bridge',
  'seccomp-blacklist',
  'query-cpus-fast',
  'disk-write-cache',
  'nbd-tls',
  'tpm-crb',
  'pr-manager-helper',
  'qom-list-properties',
  'memory-backend-file.discard-data',
  'virtual-css-bridge',
  'sdl-gl',
  'screendump_device',
  'hda-output',
  'blockdev-del',
  'vmgenid',
  'vhost-vsock',
  'chardev-fd-pass-use-qdev',
  'tpm-emulator',
  'mch',
  'mch.extended-tseg-mbytes',
  'usb-storage.werror',
  'egl-headless.rendernode',
  'memory-backend-file.align',
  'memory-backend-file.pmem',
  'nvdimm.unarmed',
  'scsi-disk.device_id',
  'virtio-pci-non-transitional',
  'overcommit',
  'query-current-machine',
  'machine.virt.iommu',
  'bitmap-merge',
  'nbd-bitmap',
  'x86-max-cpu',
  'cpu-unavailable-features',
  'canonical-cpu-features',
  'bochs-display',
  'migration-file-drop-cache',
  'dbus-vmstate',
  'vhost-user-gpu',
  'vhost-user-vga',
  'incremental-backup',
  'query-cpu-model-baseline',
  'query-cpu-model-comparison',
  'ramfb',
  'dying-guest-info',
  'sev-guest',
  'vfio-ap',
  'zpci',
];

const CPU_MODELS = [
  'qemu64',
  'qemu32',
  'phenom',
  'pentium3',
  'pentium2',
  'pentium',
  'n270',
  'kvm64',
  'kvm32',
  'coreduo',
  'core2duo',
  'athlon',
  'Westmere-IBRS',
  'Westmere',
  'Snowridge',
  'Skylake-Server-noTSX-IBRS',
  'Skylake-Server-IBRS',
  'Skylake-Server',
  'Skylake-Client-noTSX-IBRS',
  'Skylake-Client-IBRS',
  'Skylake-Client',
  'SapphireRapids',
  'SandyBridge-IBRS',
  'SandyBridge',
  'Penryn',
  'Opteron_G5',
  'Opteron_G4',
  'Opteron_G3',
  'Opteron_G2',
  'Opteron_G1',
  'Nehalem-IBRS',
  'Nehalem',
  'IvyBridge-IBRS',
  'IvyBridge',
  'Icelake-Server-noTSX',
  'Icelake-Server',
  'Haswell-noTSX-IBRS',
  'Haswell-noTSX',
  'Haswell-IBRS',
  'Haswell',
  'EPYC-Rome',
  'EPYC-Milan',
  'EPYC-IBPB',
  'EPYC-Genoa',
  'EPYC',
  'Dhyana',
  'Cooperlake',
  'Conroe',
  'Cascadelake-Server-noTSX',
  'Cascadelake-Server',
  'Broadwell-noTSX-IBRS',
  'Broadwell-noTSX',
  'Broadwell-IBRS',
  'Broadwell',
  '486',
];

const BLOCKERS = [
  'avx512f',
  'avx512dq',
  'avx512cd',
  'avx512bw',
  'avx512vl',
  'pku',
  'avx512vnni',
  'la57',
  'avx512-vpopcntdq',
  'hle',
  'rtm',
  'taa-no',
  'pcid',
  'erms',
  'invpcid',
  'mpx',
  'clwb',
  'spec-ctrl',
  'arch-capabilities',
  'ssbd',
  'xsaves',
  'umip',
];

function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

/** The header lines, as libvirt formats them (absent fields left out). */
function headerXml(o: CacheOptions = {}): string {
  const v = { ...DEFAULTS, ...o };
  let s = '<qemuCaps>\n';
  if (v.emulator !== null) s += `  <emulator>${escapeXml(v.emulator)}</emulator>\n`;
  if (v.qemuctime !== null) s += `  <qemuctime>${v.qemuctime}</qemuctime>\n`;
  if (v.qemumoddirmtime !== null) s += `  <qemumoddirmtime>${v.qemumoddirmtime}</qemumoddirmtime>\n`;
  if (v.selfctime !== null) s += `  <selfctime>${v.selfctime}</selfctime>\n`;
  if (v.selfvers !== null) s += `  <selfvers>${v.selfvers}</selfvers>\n`;
  return s;
}

/** A whole cache file of about o.size (default 200 KB) bytes. */
function cacheXml(o: CacheOptions = {}): string {
  const target = o.size ?? 200 * 1024;
  const parts: string[] = [headerXml(o), '  <usedQMP/>\n', '  <kvmSupportsNesting/>\n'];
  for (const f of FLAGS) parts.push(`  <flag name='${f}'/>\n`);
  parts.push(
    '  <version>8002002</version>\n',
    '  <kvmVersion>0</kvmVersion>\n',
    '  <microcodeVersion>43</microcodeVersion>\n',
    '  <package>Debian 1:8.2.2+ds-0ubuntu1</package>\n',
    '  <kernelVersion>6.8.0-31-generic #31-Ubuntu SMP PREEMPT_DYNAMIC</kernelVersion>\n',
    '  <cpu0Id>0x000806ec</cpu0Id>\n',
    '  <arch>x86_64</arch>\n',
  );
  let size = parts.reduce((n, p) => n + p.length, 0);
  const add = (line: string): void => {
    parts.push(line);
    size += line.length;
  };
  for (const type of ['kvm', 'tcg'] as const) {
    add(`  <hostCPU type='${type}' model='base' migratability='yes'>\n`);
    for (let i = 0; size < target * (type === 'kvm' ? 0.35 : 0.5); i++) {
      const name = i % 3 === 0 ? `vmx-feature-${i}` : `${BLOCKERS[i % BLOCKERS.length]}-${i}`;
      const value = i % 2 === 0 ? 'true' : 'false';
      add(`    <property name='${name}' type='boolean' value='${value}' migratable='yes'/>\n`);
    }
    add('  </hostCPU>\n');
  }
  for (let round = 0; size < target * 0.9; round++) {
    for (const type of ['kvm', 'tcg'] as const) {
      for (const [i, model] of CPU_MODELS.entries()) {
        const name = round === 0 ? model : `${model}-v${round + 1}`;
        const usable = i % 4 === 0 ? 'yes' : 'no';
        if (usable === 'yes') {
          add(`  <cpu type='${type}' name='${name}' typename='${name}-x86_64-cpu' usable='yes'/>\n`);
        } else {
          add(`  <cpu type='${type}' name='${name}' typename='${name}-x86_64-cpu' usable='no'>\n`);
          for (let b = 0; b <= i % 5; b++) add(`    <blocker name='${BLOCKERS[(i + b) % BLOCKERS.length]}'/>\n`);
          add('  </cpu>\n');
        }
      }
    }
  }
  for (let i = 0; size < target; i++) {
    add(
      `  <machine type='kvm' name='pc-q35-${2 + (i % 7)}.${i}' hotplugCpus='yes' maxCpus='1024' ` +
        `defaultCPU='qemu64-x86_64-cpu' numaMemSupported='yes' defaultRAMid='pc.ram'/>\n`,
    );
  }
  add('</qemuCaps>\n');
  return parts.join('');
}

const EXPECTED: CacheHeader = {
  emulator: '/usr/bin/qemu-system-x86_64',
  qemuctime: 1716638400,
  qemumoddirmtime: 1716638401,
  selfvers: 9000000,
};

/** Cuts data into pieces of the given sizes (cycled), the rest in one. */
function cut<T extends string | Buffer>(data: T, sizes: number[]): T[] {
  const out: T[] = [];
  let pos = 0;
  for (let i = 0; pos < data.length; i++) {
    const n = sizes[i % sizes.length] ?? data.length;
    out.push(data.slice(pos, pos + Math.max(1, n)) as T);
    pos += Math.max(1, n);
  }
  return out;
}

/** An iterable that records how many pieces and bytes were pulled from it. */
function counting(pieces: Iterable<string | Buffer>): {
  chunks: Iterable<string | Buffer>;
  pulled: { pieces: number; bytes: number };
} {
  const pulled = { pieces: 0, bytes: 0 };
  function* gen(): Generator<string | Buffer> {
    for (const p of pieces) {
      pulled.pieces += 1;
      pulled.bytes += typeof p === 'string' ? Buffer.byteLength(p) : p.length;
      yield p;
    }
  }
  return { chunks: gen(), pulled };
}

function headerError(t: Test, fn: () => unknown, pattern: RegExp, msg = 'fails'): void {
  let thrown: unknown = undefined;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof CacheHeaderError)) {
    t.fail(`${msg}: expected a CacheHeaderError, got ${String(thrown)}`);
    return;
  }
  t.match(thrown.message, pattern, msg);
  t.notMatch(thrown.message, /[\r\n]/, `${msg}: message is one line`);
}

function writeFixture(t: Test, name: string, data: string | Buffer): string {
  const dir = t.testdir({});
  const file = path.join(dir, name);
  fs.writeFileSync(file, data);
  return file;
}

function readFile(file: string): CacheHeader {
  const fd = fs.openSync(file, 'r');
  try {
    return readCacheHeader(fd, fs.fstatSync(fd).size);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------

t.test('realistic 200 KB cache file', async (t) => {
  const xml = cacheXml();
  t.ok(xml.length >= 200 * 1024 && xml.length < 220 * 1024, `fixture is ~200 KB (${xml.length})`);
  t.same(parseCacheHeader([xml]), EXPECTED, 'one string');
  t.same(parseCacheHeader([Buffer.from(xml)]), EXPECTED, 'one Buffer');
  const file = writeFixture(t, 'caps.xml', xml);
  t.same(readFile(file), EXPECTED, 'from a file descriptor');
});

t.test('qemumoddirmtime is optional', async (t) => {
  const xml = cacheXml({ qemumoddirmtime: null });
  t.same(parseCacheHeader([xml]), { ...EXPECTED, qemumoddirmtime: null });
  t.same(readFile(writeFixture(t, 'caps.xml', xml)), { ...EXPECTED, qemumoddirmtime: null });
});

t.test('other numbers may be absent too, emulator may not', async (t) => {
  const xml = cacheXml({ qemuctime: null, selfctime: null, selfvers: null, qemumoddirmtime: null });
  t.same(parseCacheHeader([xml]), {
    emulator: EXPECTED.emulator,
    qemuctime: null,
    qemumoddirmtime: null,
    selfvers: null,
  });
  // libvirt before 5.x did not write <emulator> at all.
  headerError(t, () => parseCacheHeader([cacheXml({ emulator: null })]), /^no <emulator> in header$/);
  headerError(t, () => parseCacheHeader(['<qemuCaps/>']), /^no <emulator> in header$/, 'empty root');
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps><emulator></emulator><usedQMP/></qemuCaps>']),
    /<emulator> is empty/,
  );
});

t.test('header order does not matter; the header ends at </qemuCaps> too', async (t) => {
  const xml = '<qemuCaps><selfvers>1</selfvers><emulator>/e</emulator><qemuctime>2</qemuctime></qemuCaps>';
  t.same(parseCacheHeader([xml]), {
    emulator: '/e',
    qemuctime: 2,
    qemumoddirmtime: null,
    selfvers: 1,
  });
});

t.test('XML declaration, BOM, comments, entities and CDATA are fine', async (t) => {
  const bom = Buffer.from([0xef, 0xbb, 0xbf]);
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n<!-- cache -->\n<qemuCaps>\n' +
    '  <emulator>/opt/a&amp;b/qemu&#x2d;system&#45;x86_64</emulator>\n' +
    '  <qemuctime> 1716638400 </qemuctime>\n' +
    '  <qemumoddirmtime><![CDATA[17166]]><!-- x -->38402</qemumoddirmtime>\n' +
    '  <?pi data?>\n  <usedQMP/>\n</qemuCaps>\n';
  t.same(parseCacheHeader([Buffer.concat([bom, Buffer.from(body)])]), {
    emulator: '/opt/a&b/qemu-system-x86_64',
    qemuctime: 1716638400,
    qemumoddirmtime: 1716638402,
    selfvers: null,
  });
});

t.test('chunk boundaries anywhere, including inside tags and UTF-8 characters', async (t) => {
  const emulator = '/opt/émulateur/ünïcødé/qemu-system-x86_64-日本語-😀';
  const xml = cacheXml({ emulator, size: 40 * 1024 });
  const buf = Buffer.from(xml);
  const expected = { ...EXPECTED, emulator };
  const headerEnd = buf.indexOf('<kvmSupportsNesting/>') + 40;
  let allOk = true;
  // Two pieces, split at every byte of the header.
  for (let i = 1; i < headerEnd; i++) {
    const r = parseCacheHeader([buf.subarray(0, i), buf.subarray(i)]);
    if (JSON.stringify(r) !== JSON.stringify(expected)) {
      allOk = false;
      t.fail(`split at byte ${i}`);
      break;
    }
  }
  t.ok(allOk, 'every two-way byte split of the header parses the same');
  // Tiny pieces of many sizes.
  for (const size of [1, 2, 3, 5, 7, 13, 16, 31, 4096]) {
    t.same(parseCacheHeader(cut(buf, [size])), expected, `${size}-byte pieces`);
  }
  t.same(parseCacheHeader(cut(buf, [1, 2, 3, 4, 5, 6, 7])), expected, 'irregular pieces');
  // Strings split inside surrogate pairs.
  const emojiAt = xml.indexOf('😀');
  t.same(
    parseCacheHeader([xml.slice(0, emojiAt + 1), xml.slice(emojiAt + 1)]),
    expected,
    'string split between the halves of a surrogate pair',
  );
  t.same(parseCacheHeader(cut(xml, [1])), expected, 'one UTF-16 unit at a time');
  // Strings and Buffers mixed, a Buffer ending inside a character.
  const nAt = buf.indexOf('ü') + 1;
  t.same(
    parseCacheHeader([buf.subarray(0, nAt), buf.subarray(nAt, nAt + 1), xml.slice(xml.indexOf('ü') + 1)]),
    expected,
    'Buffer pieces then a string',
  );
  // And through a real file descriptor, with the header crossing a 16 KiB read.
  // Pad so that the 4-byte emoji starts 4 bytes before the end of the first
  // 16 KiB read; shifting by 0..7 bytes moves every split point through it.
  const emojiOffset = buf.indexOf('😀');
  const padded = `<!--${'p'.repeat(16 * 1024 - 4 - emojiOffset - 8)}-->\n` + xml;
  const pbuf = Buffer.from(padded);
  t.equal(pbuf.indexOf('😀'), 16 * 1024 - 4, 'fixture puts the emoji at the end of the first read');
  for (let shift = 0; shift < 8; shift++) {
    const shifted = Buffer.concat([Buffer.from(' '.repeat(shift)), pbuf]);
    t.same(readFile(writeFixture(t, `shift${shift}.xml`, shifted)), expected, `shifted by ${shift}`);
  }
});

t.test('stops reading as soon as the header is complete', async (t) => {
  const xml = cacheXml();
  const c = counting(cut(Buffer.from(xml), [16 * 1024]));
  t.same(parseCacheHeader(c.chunks), EXPECTED);
  t.equal(c.pulled.pieces, 1, 'only the first 16 KiB piece was pulled');

  const small = counting(cut(Buffer.from(xml), [10]));
  t.same(parseCacheHeader(small.chunks), EXPECTED);
  const firstChild = xml.indexOf('<usedQMP/>') + '<usedQMP/'.length;
  t.ok(small.pulled.bytes <= firstChild + 10, `pulled ${small.pulled.bytes} bytes, header ends at ${firstChild}`);

  // Garbage right after the first non-header tag name is never looked at.
  const header = headerXml();
  for (const tail of [
    '  <usedQMP/>\n<<<&&&]]>\u0000 not xml at all',
    '  <usedQMP \u0001\u0002 garbage',
    "  <flag name='kvm'/>\n</qemuCapsWRONG>",
    '  <usedQMP/>\n&undefined; &#0; <!DOCTYPE x [<!ENTITY a "b">]>',
  ]) {
    t.same(parseCacheHeader([header + tail]), EXPECTED, `garbage after header: ${JSON.stringify(tail.slice(0, 20))}`);
  }

  // Truncation anywhere after the first non-header element's name is fine.
  const full = Buffer.from(xml);
  const okFrom = xml.indexOf('<usedQMP/>') + '<usedQMP/'.length;
  for (const at of [okFrom, okFrom + 1, okFrom + 100, 50 * 1024, full.length - 1]) {
    t.same(parseCacheHeader([full.subarray(0, at)]), EXPECTED, `truncated at ${at}`);
  }

  // A 200 KB file whose bytes after the first 16 KiB are garbage.
  const garbage = Buffer.concat([full.subarray(0, 16 * 1024), Buffer.alloc(200 * 1024, 0xff)]);
  t.same(readFile(writeFixture(t, 'garbage.xml', garbage)), EXPECTED, 'fd: garbage after 16 KiB');
});

t.test('readCacheHeader reads only what it needs, from offset 0', async (t) => {
  const xml = cacheXml();
  const file = writeFixture(t, 'caps.xml', xml);
  const realReadSync = fs.readSync;
  const reads: { length: number; position: unknown; got: number }[] = [];
  fs.readSync = function (this: unknown, ...args: unknown[]): number {
    const got = Reflect.apply(realReadSync, fs, args) as number;
    reads.push({ length: args[3] as number, position: args[4], got });
    return got;
  } as typeof fs.readSync;
  t.teardown(() => {
    fs.readSync = realReadSync;
  });

  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, Buffer.alloc(100), 0, 100, null); // moves the fd's offset
    reads.length = 0;
    t.same(readCacheHeader(fd, fs.fstatSync(fd).size), EXPECTED);
  } finally {
    fs.closeSync(fd);
  }
  t.equal(reads.length, 1, 'one read');
  t.equal(reads[0]?.position, 0, 'read from offset 0, not the fd offset');
  t.ok((reads[0]?.length ?? Infinity) <= 16 * 1024, 'read at most 16 KiB');

  // A header that never ends: at most 1 MiB is read.
  const endless = writeFixture(
    t,
    'endless.xml',
    `<qemuCaps>\n<emulator>/e</emulator>\n<!--${'x'.repeat(3 * 1024 * 1024)}-->\n<usedQMP/>\n</qemuCaps>\n`,
  );
  reads.length = 0;
  headerError(t, () => readFile(endless), /^no end of header in the first 1 MiB$/);
  const total = reads.reduce((n, r) => n + r.got, 0);
  t.ok(total <= CACHE_HEADER_READ_LIMIT, `read ${total} bytes, at most 1 MiB`);
  t.equal(CACHE_HEADER_READ_LIMIT, 1024 * 1024);

  // The file size given is respected: a file that grew is read only so far.
  const grown = writeFixture(t, 'grown.xml', xml);
  const fd2 = fs.openSync(grown, 'r');
  try {
    reads.length = 0;
    headerError(t, () => readCacheHeader(fd2, 100), /malformed XML at line \d+: unclosed tag/);
    t.ok(
      reads.every((r) => r.length <= 100),
      'never asked for more than the size given',
    );
    t.throws(() => readCacheHeader(fd2, -1), RangeError);
    t.throws(() => readCacheHeader(fd2, Number.NaN), RangeError);
  } finally {
    fs.closeSync(fd2);
  }
});

t.test('parseCacheHeader never looks past 1 MiB', async (t) => {
  const doc = `<qemuCaps><emulator>/e</emulator><!--${'x'.repeat(2 * 1024 * 1024)}--><usedQMP/></qemuCaps>`;
  const c = counting(cut(Buffer.from(doc), [64 * 1024]));
  headerError(t, () => parseCacheHeader(c.chunks), /^no end of header in the first 1 MiB$/);
  t.ok(c.pulled.bytes <= CACHE_HEADER_READ_LIMIT, `pulled ${c.pulled.bytes} bytes`);
  const s = counting(cut(doc, [300 * 1024]));
  headerError(t, () => parseCacheHeader(s.chunks), /^no end of header in the first 1 MiB$/);
  // Exactly at the limit with the header done inside it is fine.
  const fits = `<qemuCaps><emulator>/e</emulator><!--${'x'.repeat(CACHE_HEADER_READ_LIMIT - 60)}--><usedQMP/>`;
  t.ok(Buffer.byteLength(fits) < CACHE_HEADER_READ_LIMIT);
  t.equal(parseCacheHeader([fits + 'x'.repeat(4 * 1024 * 1024)]).emulator, '/e');
});

t.test('a file truncated inside the header fails', async (t) => {
  const xml = cacheXml({ emulator: '/usr/bin/qemu-system-ä' });
  const buf = Buffer.from(xml);
  const firstChild = buf.indexOf('<usedQMP/>');
  let failures = 0;
  for (let at = 0; at < firstChild; at++) {
    try {
      parseCacheHeader([buf.subarray(0, at)]);
    } catch (err) {
      if (err instanceof CacheHeaderError) failures++;
    }
  }
  t.equal(failures, firstChild, 'every truncation before the first non-header element fails');
  headerError(
    t,
    () => readFile(writeFixture(t, 'trunc.xml', buf.subarray(0, buf.indexOf('</selfctime>')))),
    /^malformed XML at line 5: unclosed tag: selfctime$/,
  );
  headerError(t, () => parseCacheHeader([]), /^capabilities cache is empty$/);
  headerError(t, () => parseCacheHeader(['', Buffer.alloc(0)]), /^capabilities cache is empty$/);
  headerError(t, () => readFile(writeFixture(t, 'empty.xml', '')), /^capabilities cache is empty$/);
  headerError(t, () => parseCacheHeader(['  \n ']), /document must contain a root element/);
});

t.test('wrong root element', async (t) => {
  headerError(
    t,
    () => parseCacheHeader(['<foo><emulator>/e</emulator></foo>']),
    /^root element is <foo>, expected <qemuCaps>$/,
  );
  headerError(t, () => parseCacheHeader(['<domain/>']), /^root element is <domain>, expected <qemuCaps>$/);
  headerError(t, () => parseCacheHeader(['<qemucaps/>']), /expected <qemuCaps>/, 'case matters');
  headerError(
    t,
    () => parseCacheHeader([`<${'a'.repeat(100000)}/>`]),
    /^root element is <a{64}\.\.\.>, expected <qemuCaps>$/,
    'long names are cut short',
  );
});

t.test('numbers must be non-negative integers', async (t) => {
  for (const [value, pattern] of [
    ['abc', /^<qemuctime> is not a non-negative integer: "abc"$/],
    ['', /^<qemuctime> is not a non-negative integer: ""$/],
    ['-1', /<qemuctime> is not a non-negative integer/],
    ['1.5', /<qemuctime> is not a non-negative integer/],
    ['1e9', /<qemuctime> is not a non-negative integer/],
    ['0x10', /<qemuctime> is not a non-negative integer/],
    ['12 34', /<qemuctime> is not a non-negative integer/],
    ['\u0661\u0662', /<qemuctime> is not a non-negative integer/],
    ['18446744073709551615', /^<qemuctime> is too large: 18446744073709551615$/],
  ] as const) {
    headerError(
      t,
      () => parseCacheHeader([cacheXml({ qemuctime: value, size: 1000 })]),
      pattern,
      `qemuctime ${JSON.stringify(value)}`,
    );
  }
  headerError(t, () => parseCacheHeader([cacheXml({ selfvers: 'v9', size: 1000 })]), /<selfvers>/);
  headerError(t, () => parseCacheHeader([cacheXml({ selfctime: 'x', size: 1000 })]), /<selfctime>/);
  headerError(t, () => parseCacheHeader([cacheXml({ qemumoddirmtime: 'x', size: 1000 })]), /<qemumoddirmtime>/);
  headerError(
    t,
    () => parseCacheHeader([cacheXml({ qemuctime: 'x\n'.repeat(1000), size: 1000 })]),
    /^<qemuctime> is not a non-negative integer: "x x x .{0,60}\.\.\."$/,
    'long values are cut short and flattened',
  );
  t.equal(parseCacheHeader([cacheXml({ qemuctime: '0', size: 1000 })]).qemuctime, 0);
  t.equal(parseCacheHeader([cacheXml({ qemuctime: '007', size: 1000 })]).qemuctime, 7);
  t.equal(
    parseCacheHeader([cacheXml({ selfvers: String(Number.MAX_SAFE_INTEGER), size: 1000 })]).selfvers,
    Number.MAX_SAFE_INTEGER,
  );
});

t.test('header elements must be text-only and appear once', async (t) => {
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps><emulator>/e<b>x</b></emulator></qemuCaps>']),
    /^<emulator> must contain only text, found <b>$/,
  );
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps><emulator>/e</emulator><qemuctime><x/>1</qemuctime></qemuCaps>']),
    /^<qemuctime> must contain only text, found <x>$/,
  );
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps><emulator>/a</emulator><emulator>/b</emulator><usedQMP/></qemuCaps>']),
    /^<emulator> appears twice in the header$/,
  );
});

t.test('DOCTYPE and entity bombs are rejected without expanding anything', async (t) => {
  headerError(
    t,
    () => parseCacheHeader(['<!DOCTYPE qemuCaps>\n' + cacheXml({ size: 1000 })]),
    /^capabilities cache has a DOCTYPE/,
  );
  const laughs =
    '<?xml version="1.0"?>\n<!DOCTYPE qemuCaps [\n <!ENTITY lol "lol">\n' +
    Array.from({ length: 9 }, (_, i) => {
      const prev = i === 0 ? 'lol' : `lol${i}`;
      return ` <!ENTITY lol${i + 1} "${`&${prev};`.repeat(10)}">\n`;
    }).join('') +
    ']>\n<qemuCaps><emulator>&lol9;</emulator><usedQMP/></qemuCaps>\n';
  const start = process.hrtime.bigint();
  headerError(t, () => parseCacheHeader([laughs]), /^capabilities cache has a DOCTYPE/);
  headerError(t, () => parseCacheHeader(cut(Buffer.from(laughs), [7])), /DOCTYPE/, 'in small pieces');
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t.ok(ms < 1000, `billion laughs rejected fast (${ms.toFixed(1)} ms)`);
  headerError(
    t,
    () =>
      parseCacheHeader([
        '<!DOCTYPE q [<!ENTITY x SYSTEM "file:///etc/passwd">]><qemuCaps><emulator>&x;</emulator></qemuCaps>',
      ]),
    /DOCTYPE/,
    'external entity',
  );
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps><emulator>&x;</emulator><usedQMP/></qemuCaps>']),
    /^malformed XML at line 1: undefined entity\.$/,
    'undefined entity without a DOCTYPE',
  );
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps>\n<emulator>/e</emulator>\n<!DOCTYPE x>\n<usedQMP/></qemuCaps>']),
    /^malformed XML at line 3: inappropriately located doctype declaration\.$/,
    'DOCTYPE inside the root',
  );
});

t.test('malformed XML reports saxes message and line', async (t) => {
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps>\n  <emulator>/e</emulator>\n  <qemuctime>1</qemuctimx>\n']),
    /^malformed XML at line 3: unexpected close tag\.$/,
  );
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps>\n<emulator>/e</emulator>\n</qemuCapz>\n']),
    /^malformed XML at line 3: unexpected close tag\.$/,
    'a wrong close tag for the root is not the end of the header',
  );
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps>\n<emulator>/e</qemuCaps>\n']),
    /^malformed XML at line 2: unexpected close tag\.$/,
  );
  headerError(t, () => parseCacheHeader(['<qemuCaps><emulator>/e</emulator></>']), /weird empty close tag/);
  // After a correct </qemuCaps> nothing more is looked at.
  t.same(parseCacheHeader(['<qemuCaps><emulator>/e</emulator></qemuCaps>trailing <junk']), {
    emulator: '/e',
    qemuctime: null,
    qemumoddirmtime: null,
    selfvers: null,
  });
  t.equal(parseCacheHeader(['<qemuCaps><emulator>/e</emulator></qemuCaps>', '<more/>']).emulator, '/e');
  headerError(t, () => parseCacheHeader(['<qemuCaps><emulator a=b>']), /^malformed XML at line 1: /);
  headerError(
    t,
    () => parseCacheHeader(['<qemuCaps><emulator>\u0001</emulator>']),
    /^malformed XML at line 1: disallowed character/,
  );
  headerError(
    t,
    () => parseCacheHeader([`<qemuCaps ${'z'.repeat(50000)}='1' ${'z'.repeat(50000)}='2'>`]),
    /^malformed XML at line 1: duplicate attribute: z{150,200}\.\.\.$/,
    'long messages are cut short',
  );
});

// ---------------------------------------------------------------------------
// Property tests: whatever the input, the result is a header or a
// CacheHeaderError, never anything else.

function outcome(fn: () => CacheHeader): CacheHeader | 'error' {
  try {
    const r = fn();
    if (typeof r.emulator !== 'string' || r.emulator.length === 0) throw new Error('bad emulator');
    for (const k of ['qemuctime', 'qemumoddirmtime', 'selfvers'] as const) {
      const v = r[k];
      if (v !== null && !(Number.isSafeInteger(v) && v >= 0)) throw new Error(`bad ${k}`);
    }
    return r;
  } catch (err) {
    if (err instanceof CacheHeaderError) {
      if (/[\r\n]/.test(err.message) || err.message.length > 300) throw new Error(`bad message: ${err.message}`);
      return 'error';
    }
    throw err;
  }
}

const FC = { seed: 42, numRuns: 1000 };

t.test('property: arbitrary strings', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => {
        outcome(() => parseCacheHeader([s]));
      }),
      FC,
    ),
  );
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        outcome(() => parseCacheHeader([Buffer.from(bytes)]));
      }),
      FC,
    ),
  );
  // Strings made of XML-ish pieces reach deeper into the parser.
  const piece = fc.constantFrom(
    '<qemuCaps>',
    '</qemuCaps>',
    '<emulator>',
    '</emulator>',
    '<qemuctime>',
    '</qemuctime>',
    '<selfvers>',
    '</selfvers>',
    '<usedQMP/>',
    '<!DOCTYPE x>',
    '&amp;',
    '&lol;',
    '&#0;',
    '&#x41;',
    '<![CDATA[',
    ']]>',
    '<!--',
    '-->',
    '<?pi ?>',
    '/',
    '123',
    '-1',
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
        outcome(() => parseCacheHeader([parts.join('')]));
      }),
      FC,
    ),
  );
});

t.test('property: mutated valid documents, random chunking', async (t) => {
  const base = Buffer.from(cacheXml({ emulator: '/usr/bin/qemu-ü-😀', size: 2000 }));
  const expected = { ...EXPECTED, emulator: '/usr/bin/qemu-ü-😀' };
  const mutation = fc.record({
    at: fc.nat({ max: 400 }),
    kind: fc.constantFrom('flip', 'delete', 'insert', 'truncate'),
    byte: fc.integer({ min: 0, max: 255 }),
    len: fc.integer({ min: 1, max: 8 }),
  });
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }),
        (mutations, sizes) => {
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
          const whole = outcome(() => parseCacheHeader([buf]));
          const pieces = outcome(() => parseCacheHeader(cut(buf, sizes)));
          // Chunking never changes the outcome.
          if (JSON.stringify(whole) !== JSON.stringify(pieces)) {
            throw new Error(`chunking changed the result: ${JSON.stringify([whole, pieces])}`);
          }
        },
      ),
      FC,
    ),
  );
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }), (sizes) => {
        const r = parseCacheHeader(cut(base, sizes));
        if (JSON.stringify(r) !== JSON.stringify(expected)) throw new Error('wrong header');
      }),
      FC,
    ),
  );
});
