import t from 'tap';
import {
  judgeHooksLoaded,
  notLoadedMessage,
  reloadCommand,
  type HooksLoadedFacts,
  type RunningDaemon,
} from '../../src/core/hooks-loaded';
import { compareFingerprints } from '../../src/core/compare';
import { assess } from '../../src/core/decide';
import type { Fingerprint } from '../../src/core/types';

const INSTALLED = Date.parse('2025-03-01T10:00:00.000Z');
const at = (ms: number) => ({ earliestMs: INSTALLED + ms, latestMs: INSTALLED + ms + 20 });

const daemon = (more: Partial<RunningDaemon> = {}): RunningDaemon => ({
  name: 'libvirtd',
  pid: 1234,
  started: at(-60_000),
  unit: null,
  ...more,
});

const facts = (more: Partial<HooksLoadedFacts> = {}): HooksLoadedFacts => ({
  hooks: { installedMs: INSTALLED, presentSince: null, otherQemuHookMs: null },
  daemons: [daemon()],
  runs: [],
  systemctlReloadWorks: false,
  ...more,
});

const kinds = (f: HooksLoadedFacts) => judgeHooksLoaded(f).map((v) => v.verdict.kind);
/** The first daemon's hooks-not-loaded text; '' when it is not that. */
const message = (f: HooksLoadedFacts) => {
  const v = judgeHooksLoaded(f)[0];
  return v?.verdict.kind === 'not-loaded' ? notLoadedMessage(v.daemon, v.verdict) : '';
};

t.test('our hooks not installed: nothing to judge', async (t) => {
  t.same(judgeHooksLoaded(facts({ hooks: { installedMs: null, presentSince: null, otherQemuHookMs: null } })), []);
});

t.test('no daemon running: nothing to judge', async (t) => {
  t.same(judgeHooksLoaded(facts({ daemons: [] })), []);
});

t.test('started before the install, no other qemu hook, no run of ours: not loaded', async (t) => {
  const [v] = judgeHooksLoaded(facts());
  t.equal(v?.verdict.kind, 'not-loaded');
  if (v?.verdict.kind !== 'not-loaded') return;
  t.equal(v.verdict.command, 'kill -HUP 1234', 'no systemd: the signal by PID');
  t.equal(
    notLoadedMessage(v.daemon, v.verdict),
    "libvirtd (pid 1234) started before qemu-modwatch's hooks were installed (2025-03-01T10:00:00.000Z) and has " +
      'not run them since: guest starts are not checked until it reloads: run `kill -HUP 1234`',
  );
});

t.test('started after the install: loaded', async (t) => {
  t.same(kinds(facts({ daemons: [daemon({ started: at(5) })] })), ['loaded']);
});

t.test('started about when they were installed (its start time not that precise): cannot tell', async (t) => {
  t.same(kinds(facts({ daemons: [daemon({ started: at(-10) })] })), ['cannot-tell']);
  t.same(kinds(facts({ daemons: [daemon({ started: { earliestMs: INSTALLED, latestMs: INSTALLED } })] })), [
    'cannot-tell',
  ]);
});

t.test('start time unreadable: cannot tell', async (t) => {
  t.same(kinds(facts({ daemons: [daemon({ started: null })] })), ['cannot-tell']);
});

t.test('another qemu hook there before it started: drop-ins are picked up at once', async (t) => {
  const other = INSTALLED - 120_000;
  t.same(kinds(facts({ hooks: { installedMs: INSTALLED, presentSince: null, otherQemuHookMs: other } })), ['loaded']);
  // One that arrived after the daemon started changes nothing: the driver had no hook at the start.
  const late = INSTALLED - 30_000;
  t.same(kinds(facts({ hooks: { installedMs: INSTALLED, presentSince: null, otherQemuHookMs: late } })), [
    'not-loaded',
  ]);
});

t.test('our daemon hook ran in this PID at or after the install: loaded (it reloaded)', async (t) => {
  t.same(kinds(facts({ runs: [{ daemon: 'libvirtd', pid: 1234, atMs: INSTALLED + 3000 }] })), ['loaded']);
  t.same(kinds(facts({ runs: [{ daemon: 'libvirtd', pid: 1234, atMs: INSTALLED }] })), ['loaded'], 'the same ms');
});

t.test('an upgrade replaced the files: the record of since when the hooks are there decides', async (t) => {
  // First installed an hour before the upgrade (INSTALLED, the files' ctime now), to the ms or to the second.
  const FIRST = INSTALLED - 3_600_000;
  const since = (earliestMs: number, latestMs = earliestMs + 1) => ({ earliestMs, latestMs });
  const upgraded = (more: Partial<HooksLoadedFacts> = {}) =>
    facts({ hooks: { installedMs: INSTALLED, presentSince: since(FIRST), otherQemuHookMs: null }, ...more });
  const [v] = judgeHooksLoaded(upgraded());
  t.same(
    [v?.verdict.kind, v?.verdict.why],
    ['loaded', "it started after qemu-modwatch's hooks were installed (2025-03-01T09:00:00.000Z)"],
    'started between the first install and the upgrade: it loaded the old version, which is ours too',
  );
  const before = upgraded({ daemons: [daemon({ started: at(-7_200_000) })] });
  t.same(kinds(before), ['not-loaded'], 'started before the first install: not loaded');
  t.match(message(before), /installed \(2025-03-01T09:00/);
  t.same(
    kinds({ ...before, runs: [{ daemon: 'libvirtd', pid: 1234, atMs: FIRST + 1000 }] }),
    ['loaded'],
    'and then reloaded before the upgrade (our daemon hook ran): loaded',
  );
  const secondOnly = (s: number) =>
    facts({
      daemons: [daemon({ started: { earliestMs: s, latestMs: s + 20 } })],
      hooks: { installedMs: INSTALLED, presentSince: since(FIRST, FIRST + 1000), otherQemuHookMs: null },
    });
  t.same(kinds(secondOnly(FIRST + 500)), ['cannot-tell'], 'a record to the second: a start within it cannot tell');
  t.same(kinds(secondOnly(FIRST + 1001)), ['loaded'], 'after that second: loaded');
  t.same(kinds(secondOnly(FIRST - 100)), ['not-loaded'], 'before it: not loaded');
  t.match(message(secondOnly(FIRST - 100)), /installed \(2025-03-01T09:00:00Z\)/, 'said to the second, as known');
  t.same(
    kinds(facts({ hooks: { installedMs: INSTALLED, presentSince: since(INSTALLED + 5000), otherQemuHookMs: null } })),
    ['not-loaded'],
    'a record later than the files changes nothing',
  );
  t.same(
    judgeHooksLoaded(facts({ hooks: { installedMs: null, presentSince: since(FIRST), otherQemuHookMs: null } })),
    [],
    'a record with none of our hooks there: nothing to judge',
  );
});

t.test('removed and installed again: a run of our daemon hook from before the new hooks does not count', async (t) => {
  // The PID ran our daemon hook, then the hooks were purged (and the record of their time with them), then installed
  // again: the files' time is the new install's, and libvirt may have dropped the old hooks at the purge's reload.
  const old = [{ daemon: 'libvirtd', pid: 1234, atMs: INSTALLED - 30_000 }];
  t.same(kinds(facts({ runs: old })), ['not-loaded'], 'the old run: not loaded');
  t.same(
    kinds(facts({ runs: [...old, { daemon: 'libvirtd', pid: 1234, atMs: INSTALLED + 2000 }] })),
    ['loaded'],
    'a run since the new install (it reloaded): loaded',
  );
});

t.test("a run of another PID or another daemon is not this daemon's", async (t) => {
  t.same(kinds(facts({ runs: [{ daemon: 'libvirtd', pid: 999, atMs: INSTALLED + 3000 }] })), ['not-loaded']);
  t.same(kinds(facts({ runs: [{ daemon: 'virtqemud', pid: 1234, atMs: INSTALLED + 3000 }] })), ['not-loaded']);
});

t.test('one verdict per daemon', async (t) => {
  const f = facts({
    daemons: [daemon(), daemon({ name: 'virtqemud', pid: 77, started: at(1000) })],
  });
  t.same(kinds(f), ['not-loaded', 'loaded']);
});

t.test('the command: the unit where systemctl reload can work, else the signal by PID', async (t) => {
  t.equal(reloadCommand(daemon({ unit: 'libvirtd.service' }), true), 'systemctl reload libvirtd');
  t.equal(reloadCommand(daemon({ unit: 'virtqemud.service' }), true), 'systemctl reload virtqemud');
  t.equal(reloadCommand(daemon({ unit: 'libvirtd.service' }), false), 'kill -HUP 1234', 'no /bin/kill for its unit');
  t.equal(reloadCommand(daemon({ unit: null }), true), 'kill -HUP 1234', 'started by hand under systemd');
});

t.test(
  'assess: a WARNING hooks-not-loaded per daemon not running them; record problems are corrupt-state',
  async (t) => {
    const fp = { dirs: [], emulators: [], missingDirs: [] } as unknown as Fingerprint;
    const base = {
      fingerprint: fp,
      baseline: fp,
      state: { kind: 'ok' as const },
      comparison: compareFingerprints(fp, fp),
      cache: { dir: '/c', exists: true, error: null, entries: [] },
      libvirtModdir: null,
      guests: null,
      guestDirs: [],
    };
    const a = assess({
      ...base,
      hooksLoaded: { ...facts(), problems: ['/var/lib/x is damaged; treated as no record'] },
    });
    const got = a.findings.filter((f) => ['hooks-not-loaded', 'corrupt-state'].includes(f.code));
    t.same(
      got.map((f) => [f.level, f.code]),
      [
        ['WARNING', 'corrupt-state'],
        ['WARNING', 'hooks-not-loaded'],
      ],
    );
    t.equal(a.status, 'WARNING');
    const none = assess({ ...base, hooksLoaded: null });
    t.notOk(
      none.findings.some((f) => f.code === 'hooks-not-loaded'),
      'not looked at (the hooks): nothing said',
    );
  },
);
