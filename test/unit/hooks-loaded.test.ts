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
  hooks: { installedMs: INSTALLED, otherQemuHookMs: null },
  daemons: [daemon()],
  runs: [],
  systemctlReloadWorks: false,
  ...more,
});

const kinds = (f: HooksLoadedFacts) => judgeHooksLoaded(f).map((v) => v.verdict.kind);

t.test('our hooks not installed: nothing to judge', async (t) => {
  t.same(judgeHooksLoaded(facts({ hooks: { installedMs: null, otherQemuHookMs: null } })), []);
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
  t.same(kinds(facts({ hooks: { installedMs: INSTALLED, otherQemuHookMs: other } })), ['loaded']);
  // One that arrived after the daemon started changes nothing: the driver had no hook at the start.
  const late = INSTALLED - 30_000;
  t.same(kinds(facts({ hooks: { installedMs: INSTALLED, otherQemuHookMs: late } })), ['not-loaded']);
});

t.test('our daemon hook ran in this PID at or after the install: loaded (it reloaded)', async (t) => {
  t.same(kinds(facts({ runs: [{ daemon: 'libvirtd', pid: 1234, atMs: INSTALLED + 3000 }] })), ['loaded']);
  t.same(kinds(facts({ runs: [{ daemon: 'libvirtd', pid: 1234, atMs: INSTALLED }] })), ['loaded'], 'the same ms');
});

t.test('our daemon hook ran in this PID before the files last changed: an upgrade replaced them', async (t) => {
  const [v] = judgeHooksLoaded(facts({ runs: [{ daemon: 'libvirtd', pid: 1234, atMs: INSTALLED - 30_000 }] }));
  t.equal(v?.verdict.kind, 'loaded');
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
