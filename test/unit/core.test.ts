import t from 'tap';
import { compareFingerprints, moduleChangeKind } from '../../src/core/compare';
import { assess, EXIT_CODE, refusedModules, type Observation } from '../../src/core/decide';
import { assessEntry, dirsUsedBy, emulatorsAffected } from '../../src/core/stale';
import { escapeControl } from '../../src/core/text';
import type { CacheEntry, DirRecord, EmulatorRecord, Fingerprint, ModuleRecord } from '../../src/core/types';

// The pure core on hand-made fingerprints: no files involved.

const S = 'a'.repeat(40);
/** QEMU_PKGVERSION of the emulators here: their upgrade copies are /var/run/qemu/cur. */
const PKG = 'cur';
const SEC = 1_000_000_000n;
const ns = (seconds: number) => (BigInt(seconds) * SEC).toString();

function mod(name: string, over: Partial<ModuleRecord> = {}): ModuleRecord {
  return {
    name,
    size: 1000,
    mtimeNs: ns(100),
    ctimeNs: ns(100),
    ino: '1',
    dev: '1',
    buildId: `${name}-id`,
    stamp: S,
    sha256: null,
    error: null,
    ...over,
  };
}
function dir(path: string, modules: ModuleRecord[], over: Partial<DirRecord> = {}): DirRecord {
  return { path, source: 'default', mtimeNs: ns(100), ctimeNs: ns(100), modules, error: null, ...over };
}
function emu(path: string, over: Partial<EmulatorRecord> = {}): EmulatorRecord {
  return {
    path,
    fileName: path.slice(path.lastIndexOf('/') + 1),
    source: 'path',
    kind: 'elf',
    mode: 0o755,
    size: 10,
    mtimeNs: ns(50),
    ctimeNs: ns(50),
    ino: '9',
    dev: '1',
    stamp: S,
    target: null,
    moduleDir: null,
    dirsInBinary: [X86],
    usesUpgradeDirs: true,
    version: '7.2.0',
    pkgVersion: PKG,
    modinfo: null,
    error: null,
    ...over,
  };
}
function fp(dirs: DirRecord[], emulators: EmulatorRecord[], takenAt = 200): Fingerprint {
  return { takenAtNs: ns(takenAt), dirs, emulators, missingDirs: [] };
}
function entry(emulator: string, mtime: number, over: Partial<CacheEntry> = {}): CacheEntry {
  return {
    file: `${emulator.length.toString(16).padStart(64, '0')}.xml`,
    mtimeNs: ns(mtime),
    size: 1,
    emulator,
    qemuctime: 50,
    qemumoddirmtime: null,
    selfvers: 9000000,
    error: null,
    ...over,
  };
}

const X86 = '/usr/lib/x86_64-linux-gnu/qemu';
const ARM = '/usr/lib/aarch64-linux-gnu/qemu';
const QX = '/usr/bin/qemu-system-x86_64';
const QA = '/usr/bin/qemu-system-aarch64';

t.test('moduleChangeKind: content decides, stat data alone never does', async (t) => {
  const a = mod('m.so');
  t.equal(moduleChangeKind(a, a), null);
  t.equal(moduleChangeKind(null, a), 'added');
  t.equal(moduleChangeKind(a, null), 'removed');
  t.equal(moduleChangeKind(a, { ...a, ctimeNs: ns(300) }), 'metadata', 'same build-id, touched');
  t.equal(moduleChangeKind(a, { ...a, ctimeNs: ns(300), buildId: 'other' }), 'replaced');
  t.equal(moduleChangeKind(a, { ...a, ctimeNs: ns(300), stamp: 'b'.repeat(40) }), 'replaced');
  t.equal(moduleChangeKind(a, { ...a, ctimeNs: ns(300), size: 2 }), 'replaced');
  const noId = mod('n.so', { buildId: null, sha256: 'x' });
  t.equal(moduleChangeKind(noId, { ...noId, ctimeNs: ns(300) }), 'metadata', 'same hash');
  t.equal(moduleChangeKind(noId, { ...noId, ctimeNs: ns(300), sha256: 'y' }), 'replaced');
  t.equal(moduleChangeKind(noId, { ...noId, ctimeNs: ns(300), sha256: null }), 'replaced', 'unsure means replaced');
  t.equal(moduleChangeKind(a, { ...a, ctimeNs: ns(300), error: 'truncated' }), 'replaced');
});

t.test('compareFingerprints: per directory; an unreadable directory says nothing', async (t) => {
  const before = fp([dir(X86, [mod('a.so'), mod('b.so')])], [emu(QX)]);
  t.same(compareFingerprints(null, before), { hasBaseline: false, changes: [], copyChanges: [], emulatorChanges: [] });
  const after = fp([dir(X86, [mod('b.so'), mod('c.so')])], [emu(QX, { stamp: 'c'.repeat(40) })]);
  const c = compareFingerprints(before, after);
  t.same(
    c.changes.map((x) => [x.name, x.kind]),
    [
      ['a.so', 'removed'],
      ['c.so', 'added'],
    ],
  );
  t.same(
    c.emulatorChanges.map((e) => [e.path, e.kind]),
    [[QX, 'rebuilt']],
  );
  const unreadable = fp([dir(X86, [], { error: 'EACCES' })], [emu(QX)]);
  t.same(compareFingerprints(before, unreadable).changes, []);
  const gone = fp([], [emu(QX)]);
  t.same(
    compareFingerprints(before, gone).changes.map((x) => x.kind),
    ['removed', 'removed'],
    'a vanished directory removed its modules',
  );
});

t.test('dirsUsedBy: compiled-in, wrapper, upgrade copies of its own build, unsure means all', async (t) => {
  const f = fp(
    [
      dir(X86, []),
      dir(ARM, []),
      dir('/var/run/qemu/old', [mod('block-rbd.so', { stamp: 'd'.repeat(40) })], { source: 'upgrade' }),
      dir('/var/run/qemu/cur', [mod('block-rbd.so')], { source: 'upgrade' }),
      dir('/opt/mods', [], { source: 'config' }),
      dir('/srv/wrapped', [], { source: 'wrapper' }),
    ],
    [
      emu(QX),
      emu(QA, { dirsInBinary: [ARM] }),
      emu('/usr/bin/qemu-wrap', {
        kind: 'wrapper',
        target: QX,
        moduleDir: '/srv/wrapped',
        stamp: null,
        dirsInBinary: [],
      }),
      emu('/usr/bin/qemu-opaque', { kind: 'wrapper', target: null, stamp: null, dirsInBinary: [] }),
      emu('/usr/bin/qemu-old', {
        dirsInBinary: ['/nowhere/qemu'],
        usesUpgradeDirs: false,
        version: '7.2.0',
        pkgVersion: PKG,
        modinfo: null,
      }),
    ],
  );
  const used = (p: string) => {
    const u = dirsUsedBy(p, f);
    return { sure: u.sure, dirs: [...u.dirs].filter((d) => f.dirs.some((x) => x.path === d)).sort() };
  };
  t.same(
    used(QX),
    { sure: true, dirs: ['/opt/mods', X86, '/var/run/qemu/cur'] },
    'config dirs count for every emulator',
  );
  t.same(
    used(QA),
    { sure: true, dirs: ['/opt/mods', ARM, '/var/run/qemu/cur'] },
    'same build stamp: the same upgrade copy',
  );
  t.same(used('/usr/bin/qemu-wrap'), { sure: true, dirs: ['/opt/mods', '/srv/wrapped', X86, '/var/run/qemu/cur'] });
  t.equal(used('/usr/bin/qemu-opaque').sure, false);
  t.equal(used('/usr/bin/qemu-old').sure, false);
  t.equal(used('/not/known').sure, false);
  const noModules = fp(f.dirs, [
    emu('/usr/bin/qemu-system-x86_64-microvm', {
      stamp: null,
      dirsInBinary: ['/usr/share/qemu'],
      usesUpgradeDirs: false,
      version: '7.2.0',
      pkgVersion: PKG,
      modinfo: null,
    }),
  ]);
  t.same(
    dirsUsedBy('/usr/bin/qemu-system-x86_64-microvm', noModules),
    { dirs: new Set(), sure: true },
    'built without modules: uses none',
  );
});

t.test('assessEntry: the three staleness rules, and what libvirt notices', async (t) => {
  const base = fp([dir(X86, [mod('a.so')]), dir(ARM, [mod('b.so')])], [emu(QX), emu(QA, { dirsInBinary: [ARM] })]);
  const input = (now: Fingerprint, baseline: Fingerprint | null = base) => ({
    fingerprint: now,
    baseline,
    comparison: compareFingerprints(baseline, now),
    libvirtModdir: X86,
  });
  t.equal(assessEntry(entry(QX, 150), input(base)).stale, false, 'written after every change');
  const touched = fp(
    [dir(X86, [mod('a.so', { ctimeNs: ns(160), buildId: 'new' })]), base.dirs[1]!],
    base.emulators,
    300,
  );
  const s1 = assessEntry(entry(QX, 150), input(touched));
  t.equal(s1.stale, true);
  t.match(s1.reasons[0], /a.so changed after it was written/);
  t.equal(assessEntry(entry(QA, 150), input(touched)).stale, false, 'aarch64 does not use the x86 directory');
  const s2 = assessEntry(entry(QX, 150, { qemuctime: 49 }), input(base));
  t.equal(s2.stale, true);
  t.equal(s2.libvirtNotices, true, 'libvirt compares qemuctime itself');
  // Rule 3: ctimes that say nothing (a directory mounted from elsewhere).
  const swapped = fp(
    [dir(X86, [mod('a.so', { ctimeNs: ns(10), ino: '77', buildId: 'new' })]), base.dirs[1]!],
    base.emulators,
    300,
  );
  const s3 = assessEntry(entry(QX, 150), input(swapped));
  t.equal(s3.stale, true);
  t.match(s3.reasons[0], /modules changed since the baseline: a.so/);
  t.equal(assessEntry(entry(QX, 250), input(swapped)).stale, false, 'written after the baseline: re-probed since');
  const s4 = assessEntry(entry('/gone/qemu', 150), input(base));
  t.equal(s4.stale, true);
  t.equal(s4.libvirtNotices, true);
  t.equal(
    assessEntry(entry(QX, 150, { error: 'bad' }), input(base)).stale,
    false,
    'a broken entry is a finding, not stale',
  );
  // libvirt's own module-dir check sees a change of the directory's mtime second.
  const dirTouched = fp(
    [dir(X86, [mod('a.so')], { ctimeNs: ns(170), mtimeNs: ns(170) }), base.dirs[1]!],
    base.emulators,
    300,
  );
  t.equal(assessEntry(entry(QX, 150, { qemumoddirmtime: 100 }), input(dirTouched)).libvirtNotices, true);
});

t.test('emulatorsAffected: only those using a changed directory, or all when unsure', async (t) => {
  const before = fp(
    [dir(X86, [mod('a.so')]), dir(ARM, [mod('b.so')])],
    [emu(QX), emu(QA, { dirsInBinary: [ARM] }), emu('/x', { kind: 'other', stamp: null, dirsInBinary: [] })],
  );
  const after = fp([dir(X86, [mod('a.so'), mod('c.so')]), before.dirs[1]!], before.emulators);
  const c = compareFingerprints(before, after);
  t.same([...emulatorsAffected(c, after, [QX, QA, '/x'])].sort(), [QX, '/x']);
  t.same([...emulatorsAffected(compareFingerprints(before, before), before, [QX, QA])], []);
});

function observation(over: Partial<Observation>): Observation {
  const f = fp([dir(X86, [mod('a.so')])], [emu(QX)]);
  return {
    fingerprint: f,
    baseline: f,
    state: { kind: 'ok' },
    comparison: compareFingerprints(f, f),
    cache: { dir: '/var/cache/libvirt/qemu/capabilities', exists: true, entries: [], error: null },
    libvirtModdir: X86,
    guests: null,
    guestDirs: [],
    ...over,
  } as Observation;
}

t.test('assess: statuses, findings, what to invalidate', async (t) => {
  const quiet = assess(observation({}));
  t.equal(quiet.status, 'OK');
  t.same(quiet.invalidate, []);
  t.equal(quiet.differs, false);
  t.equal(EXIT_CODE[quiet.status], 0);

  t.equal(
    assess(
      observation({
        state: { kind: 'none' },
        baseline: null,
        comparison: compareFingerprints(null, observation({}).fingerprint),
      }),
    ).status,
    'OK',
    'no baseline is not a warning',
  );
  t.equal(assess(observation({ state: { kind: 'corrupt', reason: 'bad' } })).status, 'WARNING');

  const before = fp([dir(X86, [mod('a.so')])], [emu(QX)]);
  const after = fp([dir(X86, [mod('a.so'), mod('q.so')])], [emu(QX)]);
  const o = observation({
    fingerprint: after,
    baseline: before,
    comparison: compareFingerprints(before, after),
    cache: { dir: '/c', exists: true, error: null, entries: [entry(QX, 500), entry(QA, 500)] },
  });
  const a = assess(o);
  t.equal(a.status, 'WARNING');
  t.ok(a.findings.some((f) => f.code === 'module-changed' && /q.so added/.test(f.message)));
  t.same(a.invalidate.map((i) => i.emulator).sort(), [QA, QX], 'QX uses the changed dir; QA is unknown, so unsure');
  t.equal(a.differs, true);

  const bad = fp([dir(X86, [mod('a.so', { stamp: 'e'.repeat(40) }), mod('n.so', { stamp: null })])], [emu(QX)]);
  const crit = assess(observation({ fingerprint: bad, baseline: bad, comparison: compareFingerprints(bad, bad) }));
  t.equal(crit.status, 'CRITICAL');
  t.equal(crit.findings.filter((f) => f.code === 'stamp-mismatch').length, 2);
  t.same(
    refusedModules(bad)?.map((m) => m.name),
    ['a.so', 'n.so'],
  );
  t.equal(
    refusedModules(fp([dir(X86, [mod('a.so')])], [emu(QX, { stamp: null })])),
    null,
    'no emulator stamp: cannot tell',
  );

  const metaOnly = fp([dir(X86, [mod('a.so', { ctimeNs: ns(300) })])], [emu(QX)]);
  const m = assess(
    observation({ fingerprint: metaOnly, baseline: before, comparison: compareFingerprints(before, metaOnly) }),
  );
  t.equal(m.status, 'OK', 'metadata only');
  t.same(m.invalidate, []);
  t.equal(m.differs, true, 'but worth recording');

  const nudged = fp([dir(X86, [mod('a.so')])], [emu(QX, { ctimeNs: ns(400) })]);
  t.equal(
    assess(observation({ fingerprint: nudged, baseline: before, comparison: compareFingerprints(before, nudged) }))
      .differs,
    true,
    'emulator stat moved',
  );
});

t.test('escapeControl', async (t) => {
  t.equal(escapeControl('a\nb\x1b[31m\\'), 'a\\x0ab\\x1b[31m\\\\');
  t.equal(escapeControl('plain-name_1.so'), 'plain-name_1.so');
});

t.test('refused or leftover: by the emulators that would load the module', async (t) => {
  const OTHER = 'e'.repeat(40);
  const modinfo = [
    { name: 'hw-display-qxl', arch: null },
    { name: 'accel-tcg-i386', arch: 'i386' },
  ];
  const f = fp(
    [
      dir(X86, [
        mod('hw-display-qxl.so', { stamp: OTHER }),
        mod('accel-tcg-i386.so', { stamp: OTHER }),
        mod('hw-s390x-virtio-gpu-ccw.so', { stamp: OTHER }),
        mod('ok.so'),
      ]),
      dir(ARM, [mod('b.so', { stamp: OTHER })]),
    ],
    [emu(QX, { modinfo: [...modinfo, { name: 'ok', arch: null }] })],
  );
  t.same(
    refusedModules(f)!.map((m) => [m.name, m.refusedBy.map((e) => e.path)]),
    [['hw-display-qxl.so', [QX]]],
    'only what the x86_64 emulator would load',
  );
  const o = assess({
    fingerprint: f,
    baseline: f,
    state: { kind: 'ok' },
    comparison: compareFingerprints(f, f),
    cache: { dir: '/c', exists: true, entries: [], error: null },
    libvirtModdir: X86,
    guests: null,
    guestDirs: [],
  });
  const leftovers = o.findings.filter((x) => x.code === 'leftover-module').map((x) => x.message);
  t.same(
    leftovers.length,
    3,
    `another target, not in its table, a directory no emulator uses: ${leftovers.join(' | ')}`,
  );
  t.equal(
    o.findings.filter((x) => x.code === 'leftover-module').every((x) => x.level === 'WARNING'),
    true,
    'a leftover is a WARNING, not CRITICAL',
  );
  t.equal(o.status, 'CRITICAL', 'qxl is refused');
});

t.test('upgrade copies that come and go are no module change', async (t) => {
  const copy = dir('/var/run/qemu/Debian_1_7.2', [mod('block-rbd.so', { stamp: 'd'.repeat(40) })], {
    source: 'upgrade',
  });
  const before = fp([dir(X86, [mod('a.so')]), copy], [emu(QX)]);
  const after = fp([dir(X86, [mod('a.so')])], [emu(QX)], 300);
  const c = compareFingerprints(before, after);
  t.same(c.changes, [], 'a reboot emptied /run: no module changed');
  t.same(
    c.copyChanges.map((x) => [x.dir, x.name, x.kind]),
    [['/var/run/qemu/Debian_1_7.2', 'block-rbd.so', 'removed']],
  );
  const a = assess({
    fingerprint: after,
    baseline: before,
    state: { kind: 'ok' },
    comparison: c,
    cache: { dir: '/c', exists: true, entries: [entry(QX, 150)], error: null },
    libvirtModdir: X86,
    guests: null,
    guestDirs: [],
  });
  t.equal(a.status, 'OK', 'nothing to warn about');
  t.same(a.invalidate, [], 'nothing invalidated');
  t.match(
    a.findings.find((x) => x.code === 'upgrade-copy-changed')?.message ?? '',
    /upgrade copies in \/var\/run\/qemu\/Debian_1_7.2: 1 removed/,
  );
  t.equal(a.differs, true, 'but recorded, so the next run does not report it again');
});
