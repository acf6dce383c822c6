import t from 'tap';
import { assess } from '../../src/core/decide';
import { assessGuest, domainFromArgs, emulatorState, parseExeLink } from '../../src/core/guests';
import { libvirtRecheck } from '../../src/core/stale';
import type {
  CacheEntry,
  DirRecord,
  DirSource,
  EmulatorRecord,
  Fingerprint,
  GuestRecord,
  ModuleRecord,
} from '../../src/core/types';

// The running-guest risk decision and libvirt's own re-validation, on
// hand-made data: no files.

const OLD = 'a'.repeat(40);
const NEW = 'b'.repeat(40);
const MODDIR = '/usr/lib/x86_64-linux-gnu/qemu';
/** QEMU_PKGVERSION of the builds here: its upgrade copies are in UPGRADE. */
const PKG = '1:7.2+dfsg-7';
const UPGRADE = '/var/run/qemu/1_7.2+dfsg-7';
const S = 1_000_000_000n;

function mod(name: string, stamp: string | null, extra: Partial<ModuleRecord> = {}): ModuleRecord {
  return {
    name,
    size: 100,
    mtimeNs: '1',
    ctimeNs: '1',
    ino: '1',
    dev: '1',
    buildId: null,
    stamp,
    sha256: null,
    error: null,
    ...extra,
  };
}
function dir(path: string, source: DirSource, modules: ModuleRecord[], mtimeS = 100): DirRecord {
  return {
    path,
    source,
    mtimeNs: (BigInt(mtimeS) * S).toString(),
    ctimeNs: (BigInt(mtimeS) * S).toString(),
    modules,
    error: null,
  };
}
function emu(path: string, stamp: string | null, ctimeS = 50, extra: Partial<EmulatorRecord> = {}): EmulatorRecord {
  return {
    path,
    fileName: path.slice(path.lastIndexOf('/') + 1),
    source: 'path',
    kind: 'elf',
    mode: 0o755,
    size: 1,
    mtimeNs: '1',
    ctimeNs: (BigInt(ctimeS) * S).toString(),
    ino: '1',
    dev: '1',
    stamp,
    target: null,
    moduleDir: null,
    dirsInBinary: [MODDIR],
    usesUpgradeDirs: true,
    version: '7.2.0',
    pkgVersion: PKG,
    modinfo: null,
    error: null,
    ...extra,
  };
}
function fp(dirs: DirRecord[], emulators: EmulatorRecord[] = [emu('/usr/bin/qemu-system-x86_64', NEW)]): Fingerprint {
  return { takenAtNs: (200n * S).toString(), dirs, emulators, missingDirs: [] };
}
function guest(extra: Partial<GuestRecord> = {}): GuestRecord {
  return {
    pid: 1234,
    domain: 'web01',
    sources: ['libvirt', 'proc'],
    exe: '/usr/bin/qemu-system-x86_64',
    exeDeleted: false,
    running: {
      kind: 'elf',
      stamp: OLD,
      dirsInBinary: [MODDIR, '/usr/share/qemu'],
      usesUpgradeDirs: true,
      version: '7.2.0',
      pkgVersion: PKG,
      modinfo: null,
    },
    onDisk: {
      kind: 'elf',
      stamp: OLD,
      dirsInBinary: [MODDIR],
      usesUpgradeDirs: true,
      version: '7.2.0',
      pkgVersion: PKG,
      modinfo: null,
    },
    moduleDirEnv: null,
    loaded: [],
    error: null,
    ...extra,
  };
}

t.test('a guest whose build matches the modules is not at risk', async (t) => {
  const r = assessGuest(
    guest(),
    fp([dir(MODDIR, 'default', [mod('hw-display-qxl.so', OLD), mod('hw-usb-redirect.so', OLD)])]),
  );
  t.equal(r.atRisk, false);
  t.same(r.modules, []);
  t.same(r.searchDirs, [MODDIR]);
  t.equal(r.emulatorState, 'current');
});

t.test('modules of another build make later loads fail; loaded ones are safe', async (t) => {
  const f = fp([
    dir(MODDIR, 'default', [mod('hw-display-qxl.so', NEW), mod('hw-usb-redirect.so', NEW), mod('block-rbd.so', OLD)]),
  ]);
  const r = assessGuest(guest({ loaded: ['hw-usb-redirect.so'] }), f);
  t.equal(r.atRisk, true);
  t.same(r.modules, [
    { name: 'hw-display-qxl.so', file: `${MODDIR}/hw-display-qxl.so`, stamp: NEW, shadowedCopy: null },
  ]);
  t.same(r.loaded, ['hw-usb-redirect.so']);
});

t.test('an upgrade copy of its build serves a module gone from the module directory', async (t) => {
  const f = fp([
    dir(MODDIR, 'default', [mod('hw-display-qxl.so', NEW)]),
    dir(UPGRADE, 'upgrade', [mod('hw-display-qxl.so', OLD), mod('block-rbd.so', OLD)]),
  ]);
  const r = assessGuest(guest(), f);
  t.same(r.searchDirs, [MODDIR, UPGRADE]);
  t.same(r.servedByUpgradeCopy, [{ name: 'block-rbd.so', file: `${UPGRADE}/block-rbd.so` }]);
  // QEMU 7.2+ stops at the first file that exists: the copy is hidden.
  t.same(r.modules, [
    {
      name: 'hw-display-qxl.so',
      file: `${MODDIR}/hw-display-qxl.so`,
      stamp: NEW,
      shadowedCopy: `${UPGRADE}/hw-display-qxl.so`,
    },
  ]);
});

t.test("an upgrade copy of another build is not in the guest's search path", async (t) => {
  const f = fp([
    dir(MODDIR, 'default', [mod('hw-display-qxl.so', OLD)]),
    dir('/var/run/qemu/other', 'upgrade', [mod('ui-gtk.so', 'c'.repeat(40))]),
  ]);
  const r = assessGuest(guest(), f);
  t.same(r.searchDirs, [MODDIR]);
  t.equal(r.atRisk, false);
});

t.test("QEMU_MODULE_DIR in the guest's environment comes first", async (t) => {
  const f = fp([
    dir(MODDIR, 'default', [mod('hw-display-qxl.so', NEW)]),
    dir('/opt/mods', 'config', [mod('hw-display-qxl.so', OLD)]),
  ]);
  const r = assessGuest(guest({ moduleDirEnv: '/opt/mods' }), f);
  t.same(r.searchDirs, ['/opt/mods', MODDIR]);
  t.equal(r.atRisk, false, 'the first file found has its stamp');
});

t.test('a binary naming no scanned directory is held to all of them', async (t) => {
  const f = fp([dir('/usr/lib64/qemu', 'default', [mod('hw-display-qxl.so', NEW)])]);
  const r = assessGuest(guest(), f);
  t.same(r.searchDirs, ['/usr/lib64/qemu'], 'the one scanned directory, although its binary does not name it');
  t.equal(r.atRisk, true);
});

t.test('unreadable binaries and modules', async (t) => {
  const f = fp([dir(MODDIR, 'default', [mod('hw-display-qxl.so', null, { error: 'EACCES' })])]);
  t.equal(assessGuest(guest({ running: null, error: 'cannot read its binary: EACCES' }), f).atRisk, null);
  t.equal(
    assessGuest(
      guest({
        running: {
          kind: 'elf',
          stamp: null,
          dirsInBinary: [MODDIR],
          usesUpgradeDirs: false,
          version: '7.2.0',
          pkgVersion: PKG,
          modinfo: null,
        },
      }),
      f,
    ).atRisk,
    null,
  );
  t.equal(assessGuest(guest(), f).atRisk, false, 'an unreadable module is its own finding, not a risk');
  const noStamp = fp([dir(MODDIR, 'default', [mod('ui-gtk.so', null)])]);
  t.same(
    assessGuest(guest(), noStamp).modules.map((m) => m.name),
    ['ui-gtk.so'],
    'a module without a stamp is refused',
  );
});

t.test('emulator state: current, replaced, deleted, unknown', async (t) => {
  t.equal(emulatorState(guest()), 'current');
  t.equal(emulatorState(guest({ exeDeleted: true })), 'replaced', 'kernel says deleted, a file is at the path');
  t.equal(emulatorState(guest({ exeDeleted: true, onDisk: null })), 'deleted');
  t.equal(emulatorState(guest({ onDisk: null })), 'deleted');
  t.equal(
    emulatorState(
      guest({
        onDisk: {
          kind: 'elf',
          stamp: NEW,
          dirsInBinary: [],
          usesUpgradeDirs: false,
          version: '7.2.0',
          pkgVersion: PKG,
          modinfo: null,
        },
      }),
    ),
    'replaced',
    'another stamp at the path',
  );
  t.equal(emulatorState(guest({ exe: null })), 'unknown');
});

t.test('parsing /proc: exe links and -name', async (t) => {
  t.same(parseExeLink('/usr/bin/qemu-system-x86_64 (deleted)'), { path: '/usr/bin/qemu-system-x86_64', deleted: true });
  t.same(parseExeLink('/usr/bin/qemu-system-x86_64'), { path: '/usr/bin/qemu-system-x86_64', deleted: false });
  t.equal(domainFromArgs(['qemu', '-name', 'guest=web01,debug-threads=on']), 'web01');
  t.equal(domainFromArgs(['qemu', '-name', 'guest=a,,b,debug-threads=on']), 'a,b');
  t.equal(domainFromArgs(['qemu', '-name', 'plain']), 'plain');
  t.equal(domainFromArgs(['qemu', '-S']), null);
  t.equal(domainFromArgs(['qemu', '-name', 'process=x']), null);
});

t.test('findings: guest at risk and replaced emulator are WARNING, unchecked is OK', async (t) => {
  const f = fp([dir(MODDIR, 'default', [mod('hw-display-qxl.so', NEW)])], [emu('/usr/bin/qemu-system-x86_64', NEW)]);
  const o = {
    fingerprint: f,
    baseline: f,
    state: { kind: 'ok' as const },
    comparison: { hasBaseline: true, changes: [], copyChanges: [], emulatorChanges: [] },
    cache: { dir: '/c', exists: true, entries: [], error: null },
    libvirtModdir: MODDIR,
    guestDirs: [],
    guests: [
      guest({
        exeDeleted: true,
        onDisk: {
          kind: 'elf',
          stamp: NEW,
          dirsInBinary: [MODDIR],
          usesUpgradeDirs: true,
          version: '7.2.0',
          pkgVersion: PKG,
          modinfo: null,
        },
      }),
      guest({ pid: 5, domain: null, running: null, error: 'cannot read its binary: EACCES' }),
    ],
  };
  const a = assess(o);
  t.equal(a.status, 'WARNING');
  const byCode = (c: string) => a.findings.filter((x) => x.code === c);
  t.match(byCode('guest-at-risk')[0]!.message, /guest 'web01' \(pid 1234\) will fail to load hw-display-qxl.so/);
  t.match(
    byCode('guest-emulator-replaced')[0]!.message,
    /which was replaced since it started \(stamp aaaaaaaaaaaa -> bbbbbbbbbbbb\)/,
  );
  t.equal(byCode('guest-unchecked')[0]!.level, 'OK');
  t.match(byCode('guest-unchecked')[0]!.message, /QEMU process 5: cannot read its binary/);
  t.same(assess({ ...o, guests: null }).guests, [], 'hooks do not look at guests');
});

t.test("libvirt's own re-validation of a cache entry", async (t) => {
  const entry = (e: Partial<CacheEntry>): CacheEntry => ({
    file: 'x.xml',
    mtimeNs: '0',
    size: 1,
    emulator: '/usr/bin/qemu-system-x86_64',
    qemuctime: 50,
    qemumoddirmtime: 100,
    selfvers: 9_000_000,
    error: null,
    ...e,
  });
  const f = fp([dir(MODDIR, 'default', [], 100)]);
  t.equal(libvirtRecheck(entry({}), f, MODDIR), null, 'all checks pass: libvirt keeps the entry');
  t.match(
    libvirtRecheck(entry({ qemuctime: 49 }), f, MODDIR),
    /emulator's ctime \(50\) differs from <qemuctime> \(49\)/,
  );
  t.match(libvirtRecheck(entry({ emulator: '/usr/bin/gone' }), f, MODDIR), /is gone/);
  t.match(
    libvirtRecheck(entry({ qemumoddirmtime: 99 }), f, MODDIR),
    /mtime of .* \(100\) differs from <qemumoddirmtime> \(99\)/,
  );
  t.match(
    libvirtRecheck(entry({ qemumoddirmtime: null }), f, MODDIR),
    /\(0\)/,
    'absent means 0 for a libvirt with the check',
  );
  t.equal(
    libvirtRecheck(entry({ qemumoddirmtime: null, selfvers: 6_000_000 }), f, MODDIR),
    null,
    'an old libvirt has no module-directory check',
  );
  t.equal(
    libvirtRecheck(entry({ qemumoddirmtime: 99 }), f, '/usr/lib64/qemu'),
    null,
    'its directory absent: check skipped',
  );
  t.equal(libvirtRecheck(entry({ qemumoddirmtime: 99 }), f, null), null);
  t.equal(libvirtRecheck(entry({ error: 'bad' }), f, MODDIR), null);
});

t.test("QEMU looks in one upgrade-copy directory: its own package version's", async (t) => {
  const elsewhere = '/var/run/qemu/Debian_1_7.2+dfsg-7+deb12u1';
  const f = fp([
    dir(MODDIR, 'default', [mod('hw-display-qxl.so', NEW)]),
    dir(elsewhere, 'upgrade', [mod('hw-display-qxl.so', OLD), mod('block-rbd.so', OLD)]),
  ]);
  const r = assessGuest(guest(), f);
  t.equal(r.upgradeCopyDir, UPGRADE, 'named by the running binary');
  t.same(r.searchDirs, [MODDIR], 'a copy of its stamp under another name is not searched');
  t.same(r.servedByUpgradeCopy, []);
  t.same(
    r.modules.map((m) => [m.name, m.shadowedCopy]),
    [['hw-display-qxl.so', null]],
  );
  const unknown = assessGuest(
    guest({ running: { ...guest().running!, pkgVersion: null } }),
    fp([dir(MODDIR, 'default', []), dir(UPGRADE, 'upgrade', [mod('block-rbd.so', OLD)])]),
  );
  t.equal(unknown.upgradeCopyDir, null, 'its package version unknown: no copy is said to serve it');
  t.same(unknown.servedByUpgradeCopy, []);
});

t.test('a guest from another prefix is judged by the modules beside its binary', async (t) => {
  const beside = '/opt/q/lib/x86_64-linux-gnu/qemu';
  const f = fp([dir(MODDIR, 'default', [mod('hw-usb-redirect.so', OLD)])]);
  const g = guest({ exe: '/opt/q/bin/qemu-system-x86_64' });
  const r = assessGuest(g, f, [dir(beside, 'guest', [mod('hw-usb-redirect.so', NEW)])]);
  t.same(r.searchDirs, [beside], 'QEMU 7.2 relocates its module directory');
  t.same(
    r.modules.map((m) => m.file),
    [`${beside}/hw-usb-redirect.so`],
  );
  const tenOh = assessGuest({ ...g, running: { ...g.running!, version: '10.0.2' } }, f, [
    dir(beside, 'guest', [mod('hw-usb-redirect.so', NEW)]),
  ]);
  t.same(tenOh.searchDirs, [MODDIR], 'a build that does not relocate keeps the compiled-in directory');
  t.equal(tenOh.atRisk, false);
});

t.test('modules its build never loads are no risk: another target, or not in its table', async (t) => {
  const modinfo = [
    { name: 'hw-display-qxl', arch: null },
    { name: 'accel-tcg-i386', arch: 'i386' },
    { name: 'accel-tcg-x86_64', arch: 'x86_64' },
  ];
  const f = fp([
    dir(MODDIR, 'default', [
      mod('accel-tcg-i386.so', NEW),
      mod('hw-s390x-virtio-gpu-ccw.so', NEW),
      mod('hw-display-qxl.so', OLD),
    ]),
  ]);
  const r = assessGuest(guest({ running: { ...guest().running!, modinfo } }), f);
  t.equal(r.atRisk, false);
  const noTable = assessGuest(guest(), f);
  t.same(
    noTable.modules.map((m) => m.name),
    ['accel-tcg-i386.so', 'hw-s390x-virtio-gpu-ccw.so'],
    'without a table every module counts',
  );
});

t.test('the finding says what a refused module does to the guest', async (t) => {
  const f = fp([dir(MODDIR, 'default', [mod('hw-display-qxl.so', NEW)])]);
  const obs = (g: GuestRecord) => ({
    fingerprint: f,
    baseline: f,
    state: { kind: 'ok' as const },
    comparison: { hasBaseline: true, changes: [], copyChanges: [], emulatorChanges: [] },
    cache: { dir: '/c', exists: true, entries: [], error: null },
    libvirtModdir: MODDIR,
    guestDirs: [],
    guests: [g],
  });
  const at = (g: GuestRecord) => assess(obs(g)).findings.find((x) => x.code === 'guest-at-risk')!.message;
  t.match(
    at(guest()),
    /its QEMU aborts on the module load after a refused one, so a hot-plug can kill the guest; restart or migrate it$/,
  );
  t.match(
    at(guest({ running: { ...guest().running!, version: null } })),
    /whether its QEMU survives that is not known for its version/,
  );
  t.equal(assessGuest(guest(), f).refusalAborts, true);
  const many = fp([
    dir(
      MODDIR,
      'default',
      Array.from({ length: 37 }, (_, i) => mod(`m${String(i).padStart(2, '0')}.so`, NEW)),
    ),
  ]);
  t.match(
    assess({ ...obs(guest()), fingerprint: many }).findings.find((x) => x.code === 'guest-at-risk')!.message,
    /will fail to load m00.so, m01.so, m02.so and 34 more:/,
    'a whole upgrade: a few names and a count',
  );
});
