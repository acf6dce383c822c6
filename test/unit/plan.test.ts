import t from 'tap';
import { compareFingerprints } from '../../src/core/compare';
import { assess, assessSeen } from '../../src/core/decide';
import {
  describeTrigger,
  invalidateAction,
  logLine,
  planAccept,
  planInvalidate,
  planRun,
  refusalLine,
  stateToRecord,
  triggerEmulators,
  type Look,
  type NudgeMode,
  type OnChange,
  type Outcome,
  type Trigger,
} from '../../src/core/plan';
import type { StateStatus } from '../../src/core/decide';
import type {
  CacheEntry,
  DirRecord,
  EmulatorRecord,
  Fingerprint,
  LastAction,
  ModuleRecord,
} from '../../src/core/types';

// The plan on hand-made looks: every policy, trigger and nudge rule, no files.

const S = 'a'.repeat(40);
const ns = (s: number) => (BigInt(s) * 1_000_000_000n).toString();
const X86 = '/usr/lib/x86_64-linux-gnu/qemu';
const QX = '/usr/bin/qemu-system-x86_64';
const QA = '/usr/bin/qemu-system-aarch64';

const mod = (name: string, over: Partial<ModuleRecord> = {}): ModuleRecord => ({
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
});
const dir = (modules: ModuleRecord[], over: Partial<DirRecord> = {}): DirRecord => ({
  path: X86,
  source: 'default',
  mtimeNs: ns(100),
  ctimeNs: ns(100),
  modules,
  error: null,
  ...over,
});
const emu = (path: string, over: Partial<EmulatorRecord> = {}): EmulatorRecord => ({
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
  usesUpgradeDirs: false,
  version: '7.2.0',
  pkgVersion: '',
  modinfo: null,
  error: null,
  ...over,
});
const fp = (dirs: DirRecord[], emulators = [emu(QX)], takenAt = 200): Fingerprint => ({
  takenAtNs: ns(takenAt),
  dirs,
  emulators,
  missingDirs: [],
});
const entry = (emulator: string, over: Partial<CacheEntry> = {}): CacheEntry => ({
  file: `${emulator.length.toString(16).padStart(64, '0')}.xml`,
  mtimeNs: ns(150),
  size: 1,
  emulator,
  qemuctime: 50,
  qemumoddirmtime: null,
  selfvers: 9000000,
  error: null,
  ...over,
});
const PREVIOUS: LastAction = {
  at: '2024-01-01T00:00:00.000Z',
  trigger: 'refresh',
  summary: 'x',
  deleted: [],
  nudged: [],
};

function lookOf(before: Fingerprint | null, now: Fingerprint, entries: CacheEntry[] = [], state?: StateStatus): Look {
  return {
    fingerprint: now,
    baseline: before,
    state: state ?? (before ? { kind: 'ok' } : { kind: 'none' }),
    comparison: compareFingerprints(before, now),
    cache: { dir: '/var/cache/libvirt/qemu/capabilities', exists: true, entries, error: null },
    libvirtModdir: X86,
    lastAction: before ? PREVIOUS : null,
  };
}
function plan(l: Look, trigger: Trigger, onChange: OnChange = 'invalidate', nudge: NudgeMode = 'emulator-ctime') {
  return planRun(l, assess({ ...l, guests: null, guestDirs: [] }), trigger, { onChange, nudge });
}

const base = fp([dir([mod('a.so')])]);
/** A module replaced: the x86 emulator's cache entry is stale. */
const changed = lookOf(base, fp([dir([mod('a.so', { buildId: 'new', ctimeNs: ns(150) })])], [emu(QX)], 300), [
  entry(QX),
]);
const unchanged = lookOf(base, fp([dir([mod('a.so')])], [emu(QX)], 300), [entry(QX)]);

const PREPARE: Trigger = { kind: 'qemu', op: 'prepare', domain: 'g', emulator: QX };
const TRIGGERS: Trigger[] = [
  { kind: 'daemon-start', daemon: 'virtqemud' },
  { kind: 'daemon-start', daemon: 'libvirtd' },
  { kind: 'daemon-start', daemon: null },
  { kind: 'daemon-reload', daemon: 'virtqemud' },
  PREPARE,
  { kind: 'qemu', op: 'migrate', domain: 'g', emulator: QX },
  { kind: 'qemu', op: 'restore', domain: 'g', emulator: null },
  { kind: 'refresh' },
];
const done = (over: Partial<Outcome['done']> = {}) => ({ deleted: [], nudged: [], errors: [], ...over });

t.test('nothing changed: no lock, nothing done, nothing said unless something could not be seen', async (t) => {
  for (const trigger of TRIGGERS) {
    for (const onChange of ['invalidate', 'warn', 'refuse'] as const) {
      const p = plan(unchanged, trigger, onChange);
      t.equal(p.acts, false, `${describeTrigger(trigger)}, ${onChange}`);
      t.same([p.delete, p.nudge, p.record, p.refuse, p.leaveStanding], [[], null, 'none', false, false]);
      t.equal(logLine(p, { done: done(), keptAs: null, recorded: false }), null);
    }
  }
  const blind = lookOf(base, fp([dir([], { error: `cannot list ${X86}: EACCES` })], [emu(QX)], 300));
  blind.baseline = blind.fingerprint;
  blind.comparison = compareFingerprints(blind.fingerprint, blind.fingerprint);
  const p = plan(blind, { kind: 'refresh' });
  t.equal(p.acts, false);
  t.same(logLine(p, { done: done(), keptAs: null, recorded: false }), {
    priority: 'warning',
    message: `nothing changed that could be seen; problems: cannot list ${X86}: EACCES, its modules were not checked`,
  });
});

t.test('no baseline, or a damaged one: record one, delete nothing', async (t) => {
  const first = lookOf(null, base);
  const p = plan(first, { kind: 'daemon-start', daemon: 'virtqemud' });
  t.same([p.acts, p.record, p.delete, p.nudge, p.keepCorrupt], [true, 'baseline', [], null, false]);
  t.same(logLine(p, { done: done(), keptAs: null, recorded: true }), {
    priority: 'notice',
    message: 'recorded a first baseline: 1 modules in 1 module directories',
  });
  t.same(stateToRecord(p, done(), new Map(), new Date(0)), { baseline: base, lastAction: null });
  t.same(
    logLine(p, { done: done({ errors: ['cannot record the baseline in /s: ENOSPC'] }), keptAs: null, recorded: false }),
    {
      priority: 'err',
      message: 'cannot record the baseline in /s: ENOSPC',
    },
  );
  const corrupt = lookOf(null, base, [], { kind: 'corrupt', reason: '/s is not valid JSON (empty)' });
  const c = plan(corrupt, { kind: 'refresh' });
  t.same([c.acts, c.keepCorrupt, c.record], [true, true, 'baseline']);
  t.same(logLine(c, { done: done(), keptAs: '/s.corrupt', recorded: true }), {
    priority: 'warning',
    message: '/s is not valid JSON (empty), kept as /s.corrupt; recording a new baseline',
  });
});

t.test('a change under on_change = invalidate: delete the stale entries, nudge, record the action', async (t) => {
  for (const trigger of TRIGGERS) {
    const p = plan(changed, trigger, 'invalidate');
    t.equal(p.acts, true);
    t.same(p.delete, [entry(QX).file], describeTrigger(trigger));
    t.equal(p.record, 'action');
    t.equal(p.refuse, false);
    const qemuStarting = trigger.kind === 'daemon-start' && trigger.daemon !== null;
    t.same(
      p.nudge,
      qemuStarting ? null : { mode: 'emulator-ctime', targets: [QX] },
      `${describeTrigger(trigger)} ${trigger.kind === 'daemon-start' ? trigger.daemon : ''}: nudge`,
    );
  }
  const p = plan(changed, { kind: 'daemon-reload', daemon: 'libvirtd' });
  const d = done({ deleted: [entry(QX).file], nudged: [QX] });
  const moved = new Map([[QX, { size: 10, mtimeNs: ns(50), ctimeNs: ns(400), ino: '9', dev: '1' }]]);
  const rec = stateToRecord(p, d, moved, new Date(0))!;
  t.equal(rec.baseline.emulators[0]!.ctimeNs, ns(400), 'our own nudge is recorded');
  t.same(rec.lastAction, {
    at: '1970-01-01T00:00:00.000Z',
    trigger: 'hook daemon reload',
    summary: `QEMU modules changed (replaced a.so); deleted 1 capabilities cache entries, nudged ${QX}`,
    deleted: d.deleted,
    nudged: [QX],
  });
  t.equal(
    stateToRecord(p, { ...d, errors: ['cannot nudge x: EPERM'] }, moved, new Date(0)),
    null,
    'a failed action is not recorded: the next run tries again',
  );
  const line = logLine(p, { done: d, keptAs: null, recorded: true })!;
  t.equal(line.priority, 'warning');
  t.equal(line.message, `QEMU modules changed (replaced a.so): deleted 1 capabilities cache entries, nudged ${QX}`);
  t.same(line.fields, {
    TRIGGER: 'hook daemon reload',
    ADDED: '',
    REMOVED: '',
    REPLACED: `${X86}/a.so`,
    DELETED: d.deleted[0],
    NUDGED: QX,
    DAEMON: 'libvirtd',
  });
  t.equal(refusalLine(p, { done: d, keptAs: null, recorded: true }), null);
});

t.test('nudge rules: the mode, libvirt module directory, and which emulators', async (t) => {
  const reload: Trigger = { kind: 'daemon-reload', daemon: 'virtqemud' };
  t.same(plan(changed, reload, 'invalidate', 'moddir-mtime').nudge, { mode: 'moddir-mtime', targets: [X86] });
  t.equal(plan(changed, reload, 'invalidate', 'none').nudge, null);
  t.equal(
    plan({ ...changed, libvirtModdir: null }, reload, 'invalidate', 'moddir-mtime').nudge,
    null,
    'no module directory to touch',
  );
  t.equal(
    plan(changed, { kind: 'daemon-start', daemon: 'virtqemud' }).nudge,
    null,
    'a starting QEMU daemon loads after the hook',
  );
  t.same(
    plan(changed, { kind: 'daemon-start', daemon: 'virtnetworkd' }).nudge?.targets,
    [QX],
    'another daemon: a running one may hold them',
  );
  // An emulator without a cache entry that loads the changed directory is nudged too.
  const two = lookOf(
    fp([dir([mod('a.so')])], [emu(QX), emu(QA)]),
    fp([dir([mod('a.so', { buildId: 'n', ctimeNs: ns(150) })])], [emu(QX), emu(QA)], 300),
    [entry(QX)],
  );
  t.same(plan(two, reload).nudge?.targets, [QA, QX]);
});

t.test('on_change = warn: nothing deleted, the changes left standing, the line says so', async (t) => {
  for (const trigger of TRIGGERS.filter((x) => x.kind !== 'refresh')) {
    const p = plan(changed, trigger, 'warn');
    t.same(
      [p.delete, p.nudge, p.record, p.leaveStanding, p.refuse],
      [[], null, 'none', true, false],
      describeTrigger(trigger),
    );
  }
  const refresh = plan(changed, { kind: 'refresh' }, 'warn');
  t.same(
    [refresh.policy, refresh.delete, refresh.leaveStanding],
    ['invalidate', [entry(QX).file], false],
    'refresh is asked for: it acts',
  );
  const p = plan(changed, PREPARE, 'warn');
  t.equal(
    logLine(p, { done: done(), keptAs: null, recorded: false })!.message,
    `QEMU modules changed (replaced a.so) before prepare of domain 'g' (emulator ${QX}): 1 capabilities ` +
      `cache entries are stale; ` +
      "on_change = warn, so nothing was done ('qemu-modwatch accept' once handled)",
  );
  const noBaseline = lookOf(null, base, [entry(QX, { qemuctime: 1 })]);
  t.equal(plan(noBaseline, PREPARE, 'warn').record, 'baseline', 'a missing baseline is recorded even so');
});

t.test('on_change = refuse: only a guest start is refused, and only once the cache is refreshed', async (t) => {
  for (const trigger of TRIGGERS) {
    const p = plan(changed, trigger, 'refuse');
    t.equal(p.policy, trigger === PREPARE ? 'refuse' : 'invalidate', describeTrigger(trigger));
    t.equal(p.refuse, trigger === PREPARE);
    t.same(p.delete, [entry(QX).file]);
  }
  const p = plan(changed, PREPARE, 'refuse');
  const d = done({ deleted: [entry(QX).file], nudged: [QX] });
  t.equal(
    refusalLine(p, { done: d, keptAs: null, recorded: true }),
    "qemu-modwatch: QEMU modules changed (replaced a.so); libvirt's capabilities were refreshed (1 cache " +
      'entries), start the domain again',
  );
  t.equal(
    refusalLine(p, { done: { ...d, errors: ['x'] }, keptAs: null, recorded: false }),
    null,
    'not refreshed: the start goes ahead',
  );
});

t.test('accept records the fingerprint as it is and keeps the last action', async (t) => {
  t.same(planAccept(changed), { baseline: changed.fingerprint, lastAction: PREVIOUS });
});

t.test('invalidate: all entries or one emulator, symlinks left alone, every known emulator nudged', async (t) => {
  const link = entry('/usr/bin/qemu-x', { file: 'f'.repeat(64) + '.xml', error: 'is a symlink, not read' });
  const l = lookOf(
    base,
    fp([dir([mod('a.so')])], [emu(QX), emu(QA, { kind: 'missing' }), emu('/opt/q', { source: 'cache' })]),
    [entry(QX), entry('/opt/q'), link],
  );
  const all = planInvalidate(l, { fileOfEmulator: null, nudge: 'emulator-ctime' });
  t.same(all.delete, [entry(QX).file, entry('/opt/q').file]);
  t.same(all.skipped, [{ file: link.file, reason: 'is a symlink, not read' }]);
  t.same(all.nudge, { mode: 'emulator-ctime', targets: ['/opt/q', QX] });
  const one = planInvalidate(l, { emulator: QA, fileOfEmulator: entry(QX).file, nudge: 'emulator-ctime' });
  t.same(one.delete, [entry(QX).file], 'by the name libvirt gives its file');
  t.same(one.nudge, { mode: 'emulator-ctime', targets: [QA] });
  t.same(planInvalidate(l, { fileOfEmulator: null, nudge: 'moddir-mtime' }).nudge, {
    mode: 'moddir-mtime',
    targets: [X86],
  });
  t.equal(planInvalidate(l, { fileOfEmulator: null, nudge: 'none' }).nudge, null);
  t.same(invalidateAction(done({ deleted: ['e.xml'], nudged: [QX] }), new Date(0)), {
    at: '1970-01-01T00:00:00.000Z',
    trigger: 'invalidate',
    summary: `deleted 1 capabilities cache entries, nudged ${QX}`,
    deleted: ['e.xml'],
    nudged: [QX],
  });
});

t.test('every trigger has its name in the log and the last action', async (t) => {
  t.same(TRIGGERS.map(describeTrigger), [
    'hook daemon start',
    'hook daemon start',
    'hook daemon start',
    'hook daemon reload',
    'hook qemu prepare',
    'hook qemu migrate',
    'hook qemu restore',
    'refresh',
  ]);
});

t.test('a guest start looks at its emulator too; no other trigger adds one', async (t) => {
  t.same(triggerEmulators(PREPARE), [{ path: QX, source: 'domain' }]);
  t.same(triggerEmulators({ kind: 'qemu', op: 'restore', domain: 'g', emulator: null }), []);
  for (const trigger of TRIGGERS.filter((tr) => tr.kind !== 'qemu')) t.same(triggerEmulators(trigger), []);
});

t.test('assess compares what was seen with its baseline, then judges it', async (t) => {
  for (const l of [changed, unchanged, lookOf(null, changed.fingerprint)]) {
    const { comparison, lastAction, ...seen } = l;
    void lastAction;
    const { observed, assessment } = assessSeen({ ...seen, guests: null, guestDirs: [] });
    t.same(observed.comparison, comparison, 'the comparison of baseline and fingerprint');
    t.same(assessment, assess({ ...l, guests: null, guestDirs: [] }), 'judged as assess judges it');
  }
  const { observed } = assessSeen({ ...unchanged, guests: null, guestDirs: [] });
  t.equal(observed.fingerprint, unchanged.fingerprint, 'what was seen is kept as it was');
});
