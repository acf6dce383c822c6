import t from 'tap';
import {
  CLOCK_SLACK_MS,
  judgeHooksLoaded,
  notLoadedMessage,
  reloadCommand,
  type HookFilesFacts,
  type HooksLoadedFacts,
  type ReloadFacts,
  type RunningDaemon,
} from '../../src/core/hooks-loaded';
import { compareFingerprints } from '../../src/core/compare';
import { assess } from '../../src/core/decide';
import type { Fingerprint } from '../../src/core/types';

// U: our qemu dispatcher's ctime (placed by then at the latest). L: the record written before our hooks first
// arrived (they arrived after it).
const U = Date.parse('2025-03-01T10:00:00.000Z');
const L = U - 5000;
const at = (ms: number) => ({ earliestMs: U + ms, latestMs: U + ms + 20 });

const daemon = (more: Partial<RunningDaemon> = {}): RunningDaemon => ({
  name: 'libvirtd',
  pid: 1234,
  started: at(-60_000),
  unit: null,
  ...more,
});

const hooks = (more: Partial<HookFilesFacts> = {}): HookFilesFacts => ({
  qemuPlacedByMs: U,
  installedAfterMs: L,
  otherQemuHookMs: null,
  ...more,
});

const NO_SYSTEMD: ReloadFacts = { systemd: false, binKill: true, systemdVersion: null };

const facts = (more: Partial<HooksLoadedFacts> = {}): HooksLoadedFacts => ({
  hooks: hooks(),
  daemons: [daemon()],
  runs: [],
  reload: NO_SYSTEMD,
  daemonsOutsideRoot: false,
  ...more,
});

const kinds = (f: HooksLoadedFacts) => judgeHooksLoaded(f).map((v) => v.verdict.kind);
const run = (atMs: number, more: Partial<{ daemon: string; pid: number }> = {}) => ({
  daemon: 'libvirtd',
  pid: 1234,
  atMs,
  ...more,
});

t.test('our qemu hook not there: nothing to judge', async (t) => {
  t.same(judgeHooksLoaded(facts({ hooks: hooks({ qemuPlacedByMs: null }) })), []);
});

t.test('no daemon running: nothing to judge', async (t) => {
  t.same(judgeHooksLoaded(facts({ daemons: [] })), []);
});

t.test('started before the record of the install, no other qemu hook, no run of ours: not loaded', async (t) => {
  const [v] = judgeHooksLoaded(facts());
  t.equal(v?.verdict.kind, 'not-loaded');
  if (v?.verdict.kind !== 'not-loaded') return;
  t.equal(v.verdict.command, 'kill -HUP 1234', 'no systemd: the signal by PID');
  t.equal(
    notLoadedMessage(v.daemon, v.verdict),
    "libvirtd (pid 1234) started before qemu-modwatch's hooks were installed (after 2025-03-01T09:59:55.000Z) " +
      'and has not run them since: guest starts are not checked until it reloads: run `kill -HUP 1234`',
  );
});

t.test('started after our qemu hook was in place (its ctime, and the clock slack): loaded', async (t) => {
  t.same(kinds(facts({ daemons: [daemon({ started: at(CLOCK_SLACK_MS + 1) })] })), ['loaded']);
  t.same(
    kinds(facts({ daemons: [daemon({ started: at(CLOCK_SLACK_MS + 1) })], hooks: hooks({ installedAfterMs: null }) })),
    ['loaded'],
    'with no record of the install too',
  );
});

t.test('started between the record and the ctime, or within the slack of either: cannot tell', async (t) => {
  for (const ms of [-4000, -10, 0, CLOCK_SLACK_MS, -5000 - CLOCK_SLACK_MS + 50])
    t.same(kinds(facts({ daemons: [daemon({ started: at(ms) })] })), ['cannot-tell'], `started at U${ms}`);
  t.same(kinds(facts({ daemons: [daemon({ started: at(-5000 - CLOCK_SLACK_MS - 100) })] })), ['not-loaded']);
});

t.test('an admin edited or chmodded our dispatcher after a reload that loaded it: not not-loaded', async (t) => {
  // The daemon started before the install, reloaded after it (our daemon hook ran), then the file was edited:
  // its ctime is now later than that run.
  const edited = hooks({ qemuPlacedByMs: U + 3_600_000 });
  t.same(kinds(facts({ hooks: edited, runs: [run(U + 60_000)] })), ['loaded'], 'the run since the record decides');
  // A daemon started after the install but before the edit: between L and U, no run: cannot tell, never not-loaded.
  t.same(kinds(facts({ hooks: edited, daemons: [daemon({ started: at(60_000) })] })), ['cannot-tell']);
});

t.test('start time unreadable: cannot tell', async (t) => {
  t.same(kinds(facts({ daemons: [daemon({ started: null })] })), ['cannot-tell']);
});

t.test('another qemu hook placed (its ctime) before it started: drop-ins are used at once', async (t) => {
  t.same(kinds(facts({ hooks: hooks({ otherQemuHookMs: U - 120_000 }) })), ['loaded']);
  // Changed after the daemon started: it may have been there at the start, or not.
  t.same(kinds(facts({ hooks: hooks({ otherQemuHookMs: U - 30_000 }) })), ['cannot-tell']);
  t.match(
    judgeHooksLoaded(facts({ hooks: hooks({ otherQemuHookMs: U - 30_000 }) }))[0]?.verdict.why,
    /another qemu hook/,
  );
});

t.test('our daemon hook ran in this PID at or after the record: loaded (it reloaded)', async (t) => {
  t.same(kinds(facts({ runs: [run(U + 3000)] })), ['loaded']);
  t.same(kinds(facts({ runs: [run(L)] })), ['loaded'], 'the same ms as the record');
  t.same(kinds(facts({ runs: [run(L - 1)] })), ['not-loaded'], 'before it: of hooks since removed');
});

t.test('no record of the install (an upgrade from a version that kept none): cannot tell, or a run', async (t) => {
  const none = hooks({ installedAfterMs: null });
  const [v] = judgeHooksLoaded(facts({ hooks: none }));
  t.equal(v?.verdict.kind, 'cannot-tell');
  t.match(v?.verdict.why, /no usable record says when the hooks were installed/);
  t.same(kinds(facts({ hooks: none, runs: [run(U - 30_000)] })), ['loaded'], 'any run of this version in this PID');
  t.same(
    kinds(facts({ hooks: none, runs: [run(U - 120_000)] })),
    ['cannot-tell'],
    'a run before this process started is of another process with the PID',
  );
});

t.test("a run of another PID or another daemon is not this daemon's", async (t) => {
  t.same(kinds(facts({ runs: [run(U + 3000, { pid: 999 })] })), ['not-loaded']);
  t.same(kinds(facts({ runs: [run(U + 3000, { daemon: 'virtqemud' })] })), ['not-loaded']);
});

t.test("under --root with a real procfs: the daemons are this machine's, cannot tell", async (t) => {
  const [v] = judgeHooksLoaded(facts({ daemonsOutsideRoot: true }));
  t.same(
    [v?.verdict.kind, v?.verdict.why],
    ['cannot-tell', 'it is a process of this machine, and under --root it cannot be seen which hooks it reads'],
  );
});

t.test('one verdict per daemon', async (t) => {
  const f = facts({
    daemons: [daemon(), daemon({ name: 'virtqemud', pid: 77, started: at(10_000) })],
  });
  t.same(kinds(f), ['not-loaded', 'loaded']);
});

t.test('the command: as the packages print it (build/deb/libvirt-reload.sh)', async (t) => {
  const unit = daemon({ unit: 'libvirtd.service' });
  const r = (more: Partial<ReloadFacts>) => ({ systemd: true, binKill: true, systemdVersion: 252, ...more });
  t.equal(reloadCommand(unit, r({})), 'systemctl reload libvirtd.service', 'its unit, whose reload runs /bin/kill');
  t.equal(reloadCommand(daemon({ unit: 'virtqemud.service' }), r({})), 'systemctl reload virtqemud.service');
  t.equal(
    reloadCommand(unit, r({ binKill: false })),
    'systemctl kill --signal=HUP --kill-whom=main libvirtd.service',
    'no /bin/kill: systemd signals its main process',
  );
  t.equal(
    reloadCommand(unit, r({ binKill: false, systemdVersion: 247 })),
    'systemctl kill --signal=HUP --kill-who=main libvirtd.service',
    'before systemd 252: the old name',
  );
  t.equal(
    reloadCommand(unit, r({ binKill: false, systemdVersion: null })),
    'kill -HUP 1234',
    "systemd's version not found: neither spelling is sure, the signal by PID is",
  );
  t.equal(reloadCommand(unit, r({ systemd: false })), 'kill -HUP 1234', 'systemd not running');
  t.equal(reloadCommand(daemon({ unit: null }), r({})), 'kill -HUP 1234', 'started by hand under systemd');
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
