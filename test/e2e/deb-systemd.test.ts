// The .deb under a real systemd (issue 15): each test boots its own overlay
// of the Debian root (build/nspawn-root.sh debian: Debian's libvirtd 9.0 as
// libvirt-daemon-system enables it, QEMU 7.2), brings in the .deb this
// checkout builds and installs it with `dpkg -i` inside, so its maintainer
// scripts run under the container's systemd and reload its libvirtd. What the
// README says of the package is checked against the system's own answers:
// systemctl, libvirtd's debug log, the journal, virsh, dpkg.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { inCI } from '../fixtures/ci';
import { waitFor } from '../fixtures/processes';
import { RELOAD_FAILED, TEXTFILE_DIR, buildDeb, missingBuild, sha256 } from '../packaging/package-kit';
import { CACHE_DIR, MODULE_DIR, QEMU, cacheEntryName, reprobeSummary } from './harness';
import { HOOK_DAEMON, HOOK_NAME, HOOK_QEMU, QXL, hookCalls, hookRuns, warnings } from './modwatch';
import {
  DEBIAN_ROOT,
  bootContainer,
  containerSkip,
  withoutProcps,
  type Container,
  type ContainerOptions,
  type JournalEntry,
} from './systemd';

const PATH_UNIT = 'qemu-modwatch.path';
const SERVICE = 'qemu-modwatch.service';
const LIBVIRTD = 'libvirtd.service';
const TIMER = 'qemu-modwatch-textfile.timer';
const TEXTFILE_SERVICE = 'qemu-modwatch-textfile.service';
/** Where each test puts the .deb inside its container. */
const DEB = '/root/qemu-modwatch.deb';
/** Where a test keeps the module it took out of QEMU's directory, to copy it back by hand. */
const ASIDE = `/root/${QXL}`;
const ENTRY = cacheEntryName(QEMU);
const DISPATCHERS = { qemu: HOOK_QEMU, daemon: HOOK_DAEMON };

function skipReason(): string | false {
  const container = containerSkip(t, DEBIAN_ROOT);
  if (container) return container;
  const build = missingBuild();
  if (!build) return false;
  if (inCI()) t.fail(`the .deb cannot be built under CI: ${build}`);
  else t.comment(`.deb under systemd tests skipped: ${build}`);
  return build;
}
const skip = skipReason();
const scenario = { skip, timeout: 180_000 };

// One .deb for the file, from this checkout's dist/.
const debDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mw-debsd-'));
t.teardown(() => fs.rmSync(debDir, { recursive: true, force: true }));
let debFile = '';
t.before(() => {
  if (skip) return;
  const r = buildDeb(debDir, 'self-contained');
  if (r.status !== 0) throw new Error(`build/package-deb.mjs failed:\n${r.stderr}`);
  debFile = r.stdout.trim();
});

/** An overlay of the Debian root, booted, the .deb brought in (not installed). */
async function boot(t: Test, label: string, more: (o: ContainerOptions) => ContainerOptions = (o) => o) {
  const c = await bootContainer(t, more({ label, product: false, root: DEBIAN_ROOT }));
  t.comment(`container booted in ${c.bootMs} ms (${c.systemState})`);
  fs.copyFileSync(debFile, c.hostPath(DEB));
  return c;
}

const sh = (c: Container, script: string) => c.exec(['sh', '-euc', script]);

/** Takes QXL out of QEMU's module directory (before the install: the baseline lacks it). */
const setQxlAside = (c: Container) => sh(c, `mv ${MODULE_DIR}/${QXL} ${ASIDE}`);

/** What `check`, and so the postinst's refresh, says of a daemon that cannot have loaded the hooks. */
const NOT_LOADED = "started before qemu-modwatch's hooks were installed";

/**
 * `dpkg -i` of the .deb, and the first reload of libvirtd it asks systemd for: the postinst awaits the
 * reload (timeout 30) and then libvirtd's run of our daemon hook (5 s at most) before its refresh, so the
 * refresh finds the hooks loaded: nothing it prints says otherwise.
 */
async function install(t: Test, c: Container): Promise<void> {
  const t0 = Date.now();
  const r = await c.exec(['dpkg', '-i', DEB]);
  t.comment(`dpkg -i took ${Date.now() - t0} ms`);
  t.match(r.stdout, /^Setting up qemu-modwatch /m, 'dpkg -i configured the package');
  t.ok(await waitReloads(c, 1), 'systemd reloaded libvirtd.service (its job, done)');
  const out = r.stdout + r.stderr;
  t.notMatch(out, NOT_LOADED, "dpkg's output: no hooks-not-loaded warning", { out });
  t.notMatch(r.stderr, /^qemu-modwatch: /m, 'and no line of the reload: it worked, the hook reported back', { out });
}

/** systemd's record of each reload job of libvirtd.service that completed. */
async function reloads(c: Container): Promise<JournalEntry[]> {
  return (await c.journal(`UNIT=${LIBVIRTD}`, 'JOB_TYPE=reload')).filter((e) => e.fields.JOB_RESULT === 'done');
}

const waitReloads = (c: Container, n: number) => waitFor(async () => (await reloads(c)).length >= n, 30_000, 200);

const systemctl = async (c: Container, ...args: string[]) =>
  (await c.exec(['systemctl', ...args], { allowFail: true })).stdout.trim();

interface Baseline {
  baseline: { takenAtNs: string; dirs: { path: string; modules: { name: string }[] }[] };
}

/** The module names of MODULE_DIR in the recorded baseline. */
function baselineModules(c: Container): string[] {
  const s = JSON.parse(c.stateFile()) as Baseline;
  return s.baseline.dirs.find((d) => d.path === MODULE_DIR)?.modules.map((m) => m.name) ?? [];
}

t.test(
  "install: the path unit enabled and active, the dispatchers where libvirt looks, in use after libvirtd's reload",
  scenario,
  async (t) => {
    const c = await boot(t, 'mw-debsd-install');
    const before = await c.unit(LIBVIRTD);
    t.equal(before.ActiveState, 'active', "Debian's libvirtd.service runs, as its package enabled it");
    await c.defineDomain('g');
    await c.virsh('start', 'g');
    await c.virsh('destroy', 'g');
    t.same(hookCalls(c, 'qemu'), [], 'before the install, a guest start runs no hook of ours');

    await install(t, c);
    t.equal(await systemctl(c, 'is-enabled', PATH_UNIT), 'enabled', `systemctl is-enabled ${PATH_UNIT}`);
    t.equal(await systemctl(c, 'is-active', PATH_UNIT), 'active', `systemctl is-active ${PATH_UNIT}`);
    t.match(await c.unit(PATH_UNIT), { SubState: 'waiting' }, 'it waits for a change');
    for (const [driver, file] of Object.entries(DISPATCHERS)) {
      const installed = c.hostPath(`/etc/libvirt/hooks/${driver}.d/${HOOK_NAME}`);
      t.equal(sha256(fs.readFileSync(installed)), sha256(fs.readFileSync(file)), `${driver}.d/${HOOK_NAME} installed`);
      t.equal(fs.statSync(installed).mode & 0o777, 0o755, 'executable');
    }
    t.ok(c.stateFile(), "the postinst's refresh recorded a baseline");

    const after = await c.unit(LIBVIRTD);
    t.equal(after.MainPID, before.MainPID, 'libvirtd was reloaded, not restarted (same PID)');
    await waitFor(() => hookRuns(c).some((r) => r.op === 'reload' && r.status !== null), 10_000);
    t.same(
      hookRuns(c).map((r) => [r.file, r.op, r.status, r.stdout]),
      [[`/etc/libvirt/hooks/daemon.d/${HOOK_NAME}`, 'reload', 0, '']],
      "on its reload libvirtd ran the daemon dispatcher (its own log): it read the hooks' directories again",
    );
    await c.virsh('start', 'g');
    t.same(
      hookRuns(c)
        .filter((r) => r.file.includes('/qemu.d/'))
        .map((r) => [r.op, r.status, r.stdout]),
      [
        ['prepare', 0, ''],
        ['start', 0, ''],
        ['started', 0, ''],
      ],
      'a guest start now runs the qemu dispatcher, exit 0, nothing on stdout',
    );
    await c.virsh('destroy', 'g');
  },
);

t.test(
  'a module copied in by hand: the path unit starts the service, whose refresh records it and invalidates the ' +
    "cache entry; libvirt's next answer has the module's device",
  scenario,
  async (t) => {
    const c = await boot(t, 'mw-debsd-path');
    await setQxlAside(c);
    await install(t, c);
    t.notOk(baselineModules(c).includes(QXL), `the baseline has no ${QXL}`);
    const models = await c.domcapsVideoModels();
    t.notOk(models.includes('qxl'), `libvirt probed without it: ${models.join(' ')}`);
    t.ok(
      c.cacheFiles().some((f) => f.name === ENTRY),
      `the emulator's cache entry ${ENTRY}`,
    );
    const unitLogged = (await c.journal(`UNIT=${SERVICE}`, '_PID=1')).length;
    const logged = (await c.journal()).length;

    const copied = await sh(c, `cp ${ASIDE} ${MODULE_DIR}/${QXL}; date +%s%6N`);
    const copiedUs = Number(copied.stdout.trim());
    const done = async () =>
      (await c.journal(`UNIT=${SERVICE}`, '_PID=1'))
        .slice(unitLogged)
        .find((e) => e.fields.JOB_TYPE === 'start' && e.fields.JOB_RESULT !== undefined);
    t.ok(await waitFor(async () => (await done()) !== undefined, 30_000, 200), `${SERVICE} ran and finished`);
    const unitEntries = (await c.journal(`UNIT=${SERVICE}`, '_PID=1')).slice(unitLogged);
    const finished = await done();
    t.equal(finished?.fields.JOB_RESULT, 'done', 'successfully');
    // systemd's "Starting ..." has no job result; its "Finished ..." has one.
    const started = unitEntries.find((e) => e.fields.JOB_RESULT === undefined);
    const at = (e: JournalEntry | undefined) => Number(e?.fields.__REALTIME_TIMESTAMP ?? NaN);
    t.comment(
      `copy to ${SERVICE} starting: ${((at(started) - copiedUs) / 1000).toFixed(0)} ms; to its refresh done: ` +
        `${((at(finished) - copiedUs) / 1000).toFixed(0)} ms (ExecStartPre sleeps 2 s)`,
    );

    const out = await c.journal(`_SYSTEMD_UNIT=${SERVICE}`);
    t.match(
      out.map((e) => e.message).join('\n'),
      /qemu-modwatch refresh: /,
      "the service's journal has refresh's report",
    );
    const w = warnings((await c.journal()).slice(logged));
    t.equal(w.length, 1, `refresh warned once: ${w[0]?.message}`);
    t.match(
      w[0]?.fields ?? {},
      {
        PRIORITY: '4',
        QEMU_MODWATCH_TRIGGER: 'refresh',
        QEMU_MODWATCH_ADDED: new RegExp(`(^| )${MODULE_DIR}/${QXL}( |$)`),
        QEMU_MODWATCH_DELETED: new RegExp(ENTRY),
      },
      // Not _SYSTEMD_UNIT: journald looks that up from logger's PID, which may have exited by then.
      'with the fields: the module added, the entry deleted',
    );
    t.ok(baselineModules(c).includes(QXL), `the baseline now has ${QXL}`);
    t.notOk(
      c.cacheFiles().some((f) => f.name === ENTRY),
      'the cache entry is gone',
    );
    const reprobesBefore = c.reprobes().length;
    const now = await c.domcapsVideoModels();
    t.ok(now.includes('qxl'), `libvirt lists qxl again: ${now.join(' ')}`);
    t.ok((await c.qemuDevices()).includes('qxl'), 'as QEMU itself does');
    t.comment(`libvirt's re-probes: ${reprobeSummary(c, reprobesBefore).join('; ') || 'none'}`);
  },
);

t.test(
  'a module added while the path unit is stopped, with the directory mtime put back: the prepare hook warns in ' +
    'the journal, and libvirt re-probes for the nudge',
  scenario,
  async (t) => {
    const c = await boot(t, 'mw-debsd-hook');
    await setQxlAside(c);
    await install(t, c);
    await c.defineDomain('g');
    t.notOk((await c.domcapsVideoModels()).includes('qxl'), 'libvirt probed without qxl');
    await c.exec(['systemctl', 'stop', PATH_UNIT]);
    t.equal(await systemctl(c, 'is-active', PATH_UNIT), 'inactive', 'the path unit stopped');
    const state = c.stateFile();
    const serviceRuns = (await c.journal(`UNIT=${SERVICE}`, '_PID=1')).length;
    // libvirt 9.0 compares the module directory's mtime (whole seconds): put back, it cannot see the change.
    await sh(c, `m=$(stat -c %y ${MODULE_DIR}); cp -p ${ASIDE} ${MODULE_DIR}/; touch -m -d "$m" ${MODULE_DIR}`);
    t.ok((await c.qemuDevices()).includes('qxl'), 'QEMU itself has qxl now');
    const reprobesBefore = c.reprobes().length;
    const stale = await c.domcapsVideoModels();
    t.notOk(stale.includes('qxl'), `libvirt missed the change: still no qxl: ${stale.join(' ')}`);
    t.same(reprobeSummary(c, reprobesBefore), [], 'and re-probed nothing');
    t.equal((await c.journal(`UNIT=${SERVICE}`, '_PID=1')).length, serviceRuns, 'the service did not run');
    t.equal(c.stateFile(), state, 'nothing recorded');

    const logged = (await c.journal()).length;
    await c.virsh('start', 'g');
    const w = warnings((await c.journal()).slice(logged));
    t.equal(w.length, 1, `the prepare hook warned once: ${w[0]?.message}`);
    t.match(
      w[0]?.fields ?? {},
      {
        SYSLOG_IDENTIFIER: 'qemu-modwatch',
        PRIORITY: '4',
        QEMU_MODWATCH_TRIGGER: 'hook qemu prepare',
        QEMU_MODWATCH_DOMAIN: 'g',
        QEMU_MODWATCH_EMULATOR: QEMU,
        QEMU_MODWATCH_ADDED: new RegExp(`(^| )${MODULE_DIR}/${QXL}( |$)`),
        QEMU_MODWATCH_DELETED: new RegExp(ENTRY),
        QEMU_MODWATCH_NUDGED: new RegExp(`(^| )${QEMU}( |$)`),
      },
      'read back with journalctl -o json: priority warning, the module added, the guest, what it did',
    );
    const models = await c.domcapsVideoModels();
    t.ok(models.includes('qxl'), `libvirt's next answer has qxl: ${models.join(' ')}`);
    t.same(reprobeSummary(c, reprobesBefore), [`${QEMU}: binary`], "libvirt's reason: the nudge");
    t.ok(baselineModules(c).includes(QXL), `the baseline has ${QXL}`);
    await c.virsh('destroy', 'g');
  },
);

/** A textfile's samples, without the timestamps and durations that differ between two runs. */
const samples = (prom: string) =>
  prom
    .split('\n')
    .filter((l) => l && !l.startsWith('#') && !/_(timestamp|duration)_seconds[{ ]/.test(l))
    .sort();

t.test(
  'the textfile timer: not enabled by the package; skipped without the textfile directory; enabled by the ' +
    'admin, its service writes what the check says outside the sandbox; purge removes the units',
  scenario,
  async (t) => {
    const c = await boot(t, 'mw-debsd-textfile');
    await install(t, c);
    t.equal(await systemctl(c, 'is-enabled', TIMER), 'disabled', 'the package installs the timer disabled');
    t.equal(await systemctl(c, 'is-active', TIMER), 'inactive', 'and does not start it');

    await c.exec(['systemctl', 'start', TEXTFILE_SERVICE]);
    t.equal(await systemctl(c, 'show', '-P', 'ConditionResult', TEXTFILE_SERVICE), 'no', `no ${TEXTFILE_DIR}: skipped`);
    t.match(await c.unit(TEXTFILE_SERVICE), { ActiveState: 'inactive', Result: 'success' }, 'not failed');

    // As node_exporter's package makes it (root's, 0755).
    await c.exec(['install', '-d', '-m', '0755', TEXTFILE_DIR]);
    await c.exec(['systemctl', 'enable', '--now', TIMER]);
    t.equal(await systemctl(c, 'is-enabled', TIMER), 'enabled', `systemctl enable --now ${TIMER}`);
    t.equal(await systemctl(c, 'is-active', TIMER), 'active', 'the timer runs');
    t.match(await systemctl(c, 'list-timers', '--no-legend', TIMER), TIMER, 'systemctl list-timers lists it');
    t.not(await systemctl(c, 'show', '-P', 'NextElapseUSecMonotonic', TIMER), '', 'with a next run');

    await c.exec(['systemctl', 'start', TEXTFILE_SERVICE]);
    t.match(await c.unit(TEXTFILE_SERVICE), { Result: 'success', ExecMainStatus: '0' }, 'the service ran, exit 0');
    const prom = fs.readFileSync(c.hostPath(`${TEXTFILE_DIR}/qemu_modwatch.prom`), 'utf8');
    t.match(prom, /^qemu_modwatch_check_success 1$/m, 'qemu_modwatch.prom: a successful check');
    const direct = (await c.exec(['qemu-modwatch', '--check', '--format', 'prometheus'], { allowFail: true })).stdout;
    t.same(samples(prom), samples(direct), 'the same samples as a check run outside the sandbox');

    await c.exec(['dpkg', '--purge', 'qemu-modwatch']);
    t.equal(await systemctl(c, 'list-unit-files', '--no-legend', 'qemu-modwatch*'), '', 'no unit file of ours');
    t.equal(await systemctl(c, 'show', '-P', 'LoadState', TIMER), 'not-found', 'systemd does not know the timer');
    t.notOk(
      fs.existsSync(c.hostPath(`/etc/systemd/system/timers.target.wants/${TIMER}`)),
      "the admin's enablement link is gone",
    );
    t.notMatch(await systemctl(c, 'list-timers', '--all', '--no-legend'), TIMER, 'list-timers: not there');
  },
);

interface Node {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  target?: string;
  sha256?: string;
}

/** What a path is: type, mode, owner, and a file's content or a link's target; null when absent. */
function nodeAt(file: string): Node | null {
  const st = fs.lstatSync(file, { throwIfNoEntry: false });
  if (!st) return null;
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
  // A whiteout is how the overlay records a removal: to the merged view, nothing is there.
  if (st.isCharacterDevice() && st.rdev === 0) return null;
  const n: Node = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  if (type === 'symlink') n.target = fs.readlinkSync(file);
  if (type === 'file') n.sha256 = sha256(fs.readFileSync(file));
  return n;
}

/** File systems mounted over the container's root (nspawn's /run, /tmp): walked whole, they are small. */
const MOUNTED = ['/run', '/tmp'];
const mounted = (p: string) => MOUNTED.some((m) => p === m || p.startsWith(`${m}/`));

/**
 * The container's tree where it can differ from the root: every path the overlay changed (all others
 * are the read-only root's, unchanged by construction), and all of /run and /tmp.
 */
function treeSnapshot(c: Container): Map<string, Node | null> {
  const out = new Map<string, Node | null>();
  for (const p of c.overlayChanges()) if (!mounted(p)) out.set(p, nodeAt(c.hostPath(p)));
  const walk = (p: string) => {
    const n = nodeAt(c.hostPath(p));
    out.set(p, n);
    if (n?.type === 'dir') for (const e of fs.readdirSync(c.hostPath(p))) walk(path.posix.join(p, e));
  };
  for (const m of MOUNTED) walk(m);
  return out;
}

interface Change {
  path: string;
  before: Node | null;
  after: Node | null;
}

/** Paths whose node differs between two snapshots; a path one of them lacks is as the root has it. */
function treeDiff(c: Container, before: Map<string, Node | null>, after: Map<string, Node | null>): Change[] {
  const at = (s: Map<string, Node | null>, p: string) =>
    s.has(p) ? s.get(p)! : mounted(p) ? null : nodeAt(c.lowerPath(p));
  return [...new Set([...before.keys(), ...after.keys()])]
    .sort()
    .map((p) => ({ path: p, before: at(before, p), after: at(after, p) }))
    .filter((d) => JSON.stringify(d.before) !== JSON.stringify(d.after));
}

/** A file there before and after, with the same mode and owner: only its content changed. */
const rewritten = (d: Change) =>
  d.before?.type === 'file' &&
  d.after?.type === 'file' &&
  d.before.mode === d.after.mode &&
  d.before.uid === d.after.uid &&
  d.before.gid === d.after.gid;

/** Changes the system itself makes, whoever installs what; each says whose doing it is. */
const LEGITIMATE: ((d: Change) => boolean)[] = [
  // Logs: dpkg's of its runs, the journal, libvirtd's debug log (the fixture's log settings), QEMU's log
  // of each guest start. A log of ours (a new file) would not be among them.
  (d) => rewritten(d) && /^\/var\/log\/(dpkg\.log|libvirt\/libvirtd\.log|libvirt\/qemu\/g\.log)$/.test(d.path),
  (d) => /^\/var\/log\/journal\/[0-9a-f]{32}\/[^/]+\.journal~?$/.test(d.path),
  // dpkg's copy of its previous status file, replaced by every dpkg run; the status itself is compared.
  (d) => rewritten(d) && d.path === '/var/lib/dpkg/status-old',
  // libvirt's capabilities entry, probed afresh after the package's service invalidated it: libvirt's
  // file, same name, mode and owner, a new probe.
  (d) => rewritten(d) && d.path === `${CACHE_DIR}/${ENTRY}`,
  // The test's own `journalctl --sync`: journald notes when it last synced.
  (d) => d.path === '/run/systemd/journal/synced' && d.after?.type === 'file',
  // console-getty's agetty makes it when it starts, which can be after the boot counted as done.
  (d) => d.path === '/run/agetty.reload' && d.before === null && d.after?.type === 'file',
];

t.test(
  'purge leaves nothing: the tree as before the install, the units gone, libvirtd reloaded',
  scenario,
  async (t) => {
    const c = await boot(t, 'mw-debsd-purge');
    // What libvirt makes of a first probe and a first guest, before the snapshot: not the package's doing.
    await c.defineDomain('g');
    await c.virsh('start', 'g');
    await c.virsh('destroy', 'g');
    const before = treeSnapshot(c);
    const libvirtd = (await c.unit(LIBVIRTD)).MainPID;

    await install(t, c);
    await c.virsh('start', 'g');
    await c.virsh('destroy', 'g');
    const serviceRuns = (await c.journal(`UNIT=${SERVICE}`, '_PID=1', 'JOB_TYPE=start')).length;
    await c.exec(['touch', MODULE_DIR]);
    t.ok(
      await waitFor(
        async () => (await c.journal(`UNIT=${SERVICE}`, '_PID=1', 'JOB_TYPE=start')).length > serviceRuns,
        30_000,
        200,
      ),
      'the service ran once too (its sandbox, its state)',
    );
    const hooksBefore = hookCalls(c, 'qemu').length;
    t.ok(hooksBefore > 0, 'the hooks ran');

    const purge = await c.exec(['dpkg', '--purge', 'qemu-modwatch']);
    t.match(purge.stdout, /Purging configuration files for qemu-modwatch /, 'dpkg --purge');
    t.ok(await waitReloads(c, 2), 'systemd reloaded libvirtd.service again');
    t.equal((await c.unit(LIBVIRTD)).MainPID, libvirtd, 'the same libvirtd, reloaded, not restarted');
    t.equal(await systemctl(c, 'list-unit-files', '--no-legend', 'qemu-modwatch*'), '', 'no unit file of ours');
    t.equal(
      await systemctl(c, 'show', '-P', 'LoadState', PATH_UNIT),
      'not-found',
      'systemd does not know the path unit',
    );
    const q = await c.exec(['dpkg-query', '-W', 'qemu-modwatch'], { allowFail: true });
    t.not(q.code, 0, 'dpkg no longer knows the package');
    await c.virsh('start', 'g');
    await c.virsh('destroy', 'g');
    t.equal(hookCalls(c, 'qemu').length, hooksBefore, 'a guest start runs no hook of ours');

    const diff = treeDiff(c, before, treeSnapshot(c)).filter((d) => !LEGITIMATE.some((ok) => ok(d)));
    t.same(diff, [], 'every path (type, mode, owner, content) as before the install, but what the system itself keeps');
  },
);

interface Finding {
  level: string;
  code: string;
  message: string;
}

interface DaemonStatus {
  name: string;
  pid: number;
  hooks: string;
  why: string;
  command: string | null;
}

/** The installed tool's JSON report, run inside (`--check` exits non-zero on a warning). */
async function toolJson<T>(c: Container, ...args: string[]): Promise<T> {
  const r = await c.exec(['qemu-modwatch', ...args, '--json'], { allowFail: true });
  return JSON.parse(r.stdout) as T;
}

/** `--check`'s hooks-not-loaded findings. */
async function notLoaded(c: Container): Promise<Finding[]> {
  return (await toolJson<{ findings: Finding[] }>(c, '--check')).findings.filter((f) => f.code === 'hooks-not-loaded');
}

/** What `status` says of the daemon with this PID. */
async function daemonStatus(c: Container, pid: number): Promise<DaemonStatus | undefined> {
  return (await toolJson<{ daemons: DaemonStatus[] }>(c, 'status')).daemons.find((d) => d.pid === pid);
}

/** The guest's QEMU process (libvirt's pid file). */
const qemuPid = (c: Container, domain: string) =>
  Number(fs.readFileSync(c.hostPath(`/run/libvirt/qemu/${domain}.pid`), 'utf8').trim());

/** The processes in a unit's cgroup, as the container sees them (its own cgroup namespace and PIDs). */
async function unitProcesses(c: Container, unit: string): Promise<number[]> {
  const cg = await systemctl(c, 'show', '-P', 'ControlGroup', unit);
  const procs = await c.exec(['cat', `/sys/fs/cgroup${cg}/cgroup.procs`]);
  return procs.stdout
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .sort((a, b) => a - b);
}

/** QEMU's own line when a signal ends it (SIGHUP is one of its termination signals). */
const TERMINATED = /terminating on signal \d+.*/g;
const guestLog = (c: Container, domain: string) =>
  fs.readFileSync(c.hostPath(`/var/log/libvirt/qemu/${domain}.log`), 'utf8');

t.test(
  "a host without /bin/kill: the postinst's failed reload said in one line, --check says hooks-not-loaded, and " +
    'the command the line names reloads libvirtd, only its main process',
  scenario,
  async (t) => {
    const c = await boot(t, 'mw-debsd-noprocps', withoutProcps);
    const q = await c.exec(['dpkg-query', '-W', '-f=${Status}', 'procps'], { allowFail: true });
    t.notMatch(q.stdout, /install ok installed/, 'dpkg: procps is not installed');
    t.notOk(fs.existsSync(c.hostPath('/bin/kill')), 'no /bin/kill');
    const before = await c.unit(LIBVIRTD);
    t.equal(before.ActiveState, 'active', 'libvirtd.service is active: it does not need procps');
    const pid = before.MainPID;
    await c.defineDomain('g');
    // Past the 2 s check allows between the daemon's start and the record the preinst writes (clock steps).
    await new Promise((r) => setTimeout(r, 2500));

    const r = await c.exec(['dpkg', '-i', DEB]);
    t.match(r.stdout, /^Setting up qemu-modwatch /m, 'dpkg -i configured the package (exit 0)');
    const said = r.stderr.split('\n').filter(Boolean);
    t.equal(said.length, 1, `one line on stderr: ${said.join(' | ')}`);
    const m = RELOAD_FAILED.exec(said[0] ?? '');
    if (!t.ok(m, 'in the documented form') || !m) return;
    const [, daemon, what, meaning, command = ''] = m;
    t.equal(daemon, 'libvirtd', 'it names libvirtd');
    t.equal(what, 'systemctl reload libvirtd.service exited with status 1', 'and what failed');
    t.equal(meaning, "qemu-modwatch's hooks are not active in it until it reloads", 'and what that means');
    t.equal(
      command,
      'systemctl kill --signal=HUP --kill-whom=main libvirtd.service',
      `the command for this systemd (${(await c.exec(['systemctl', '--version'])).stdout.split('\n')[0]})`,
    );
    // The refresh after the failed reload: its report (stdout) has the warning, true here, with that command.
    t.match(r.stdout, `libvirtd (pid ${pid}) ${NOT_LOADED}`, "the postinst's refresh says hooks-not-loaded");
    t.match(r.stdout, `run \`${command}\``, 'with the command the line named');

    const unitLog = await c.journal(`UNIT=${LIBVIRTD}`);
    t.same(
      unitLog.filter((e) => e.fields.JOB_TYPE === 'reload' && e.fields.JOB_RESULT).map((e) => e.fields.JOB_RESULT),
      ['failed'],
      "systemd's journal: the one reload job of libvirtd.service failed",
    );
    const messages = unitLog.map((e) => e.message);
    t.ok(
      messages.includes('libvirtd.service: Failed at step EXEC spawning /bin/kill: No such file or directory'),
      'its ExecReload could not run /bin/kill',
    );
    t.ok(
      messages.includes('libvirtd.service: Control process exited, code=exited, status=203/EXEC'),
      'systemd: the reload process exited 203/EXEC',
    );
    const after = await c.unit(LIBVIRTD);
    t.same([after.ActiveState, after.MainPID], ['active', pid], 'libvirtd still runs, the same PID');
    t.same(hookRuns(c), [], "libvirtd's log: it ran no hook of ours (no reload reached it)");
    await c.virsh('start', 'g');
    t.same(hookCalls(c, 'qemu'), [], 'ground truth: a guest start runs no qemu hook');

    const findings = await notLoaded(c);
    t.equal(findings.length, 1, `--check: ${findings[0]?.message}`);
    t.equal(findings[0]?.level, 'WARNING', 'a warning');
    t.match(
      findings[0]?.message ?? '',
      new RegExp(`^libvirtd \\(pid ${pid}\\) started before qemu-modwatch's hooks were installed \\(after `),
      'it names the daemon and says why',
    );
    t.ok(
      (findings[0]?.message ?? '').endsWith(`run \`${command}\``),
      "no /bin/kill: the command the package's line named, systemd's signal to the unit's main process",
    );
    const st = await daemonStatus(c, pid);
    t.same([st?.name, st?.hooks, st?.command], ['libvirtd', 'not-loaded', command], `status says the same: ${st?.why}`);

    // The textfile timer's service runs in a mount namespace of its own (ProtectSystem=strict): the
    // daemon it judges is still the one that reads the same hooks directory.
    await c.exec(['install', '-d', '-m', '0755', TEXTFILE_DIR]);
    await c.exec(['systemctl', 'start', TEXTFILE_SERVICE]);
    const sample = /^qemu_modwatch_findings\{code="hooks-not-loaded"\} \d+$/m;
    t.match(
      fs.readFileSync(c.hostPath(`${TEXTFILE_DIR}/qemu_modwatch.prom`), 'utf8').match(sample)?.[0],
      /} 1$/,
      'the textfile service counts the finding too',
    );

    // No machined and no cgroup controllers: the guest's QEMU stays in libvirtd's cgroup, the one other
    // process there, so a signal to the whole unit would reach it, and QEMU ends on SIGHUP.
    const withGuest = [pid, qemuPid(c, 'g')].sort((a, b) => a - b);
    t.same(await unitProcesses(c, LIBVIRTD), withGuest, "libvirtd's cgroup: it and the guest's QEMU");

    await c.exec(['sh', '-c', command]);
    t.ok(
      await waitFor(() => hookRuns(c).some((h) => h.op === 'reload' && h.status !== null), 10_000),
      'libvirtd reloaded',
    );
    t.match(
      hookCalls(c, 'daemon'),
      [/ id=- op=reload subop=begin extra=SIGHUP$/],
      "libvirtd's log: its one run of our daemon hook, `- reload begin SIGHUP`",
    );
    t.equal((await c.unit(LIBVIRTD)).MainPID, pid, 'the same libvirtd');
    t.same(await notLoaded(c), [], '--check: the finding is gone');
    t.equal((await daemonStatus(c, pid))?.hooks, 'loaded', 'status: loaded');
    t.same(await unitProcesses(c, LIBVIRTD), withGuest, "the guest's QEMU still runs");
    t.equal((await c.virsh('domstate', 'g')).stdout.trim(), 'running', 'libvirt: g is running');
    t.notMatch(guestLog(c, 'g'), TERMINATED, "QEMU's log: no signal ended it");
    await c.virsh('destroy', 'g');

    const runs = hookRuns(c).length;
    await c.virsh('start', 'g');
    t.same(
      hookRuns(c)
        .slice(runs)
        .filter((h) => h.file.includes('/qemu.d/'))
        .map((h) => [h.op, h.status]),
      [
        ['prepare', 0],
        ['start', 0],
        ['started', 0],
      ],
      'ground truth: a guest start now runs the qemu dispatcher',
    );

    // The control: the same signal to the whole unit does reach the guest, which the check above relies on.
    await c.exec(['systemctl', 'kill', '--signal=HUP', '--kill-whom=all', LIBVIRTD]);
    t.ok(
      await waitFor(async () => (await c.virsh('domstate', 'g')).stdout.trim() === 'shut off', 10_000),
      'control: --kill-whom=all ends the guest',
    );
    // The last: `virsh destroy` ended the earlier run with SIGTERM from libvirtd.
    const ended = guestLog(c, 'g').match(TERMINATED)?.at(-1);
    t.match(ended, /^terminating on signal 1 from pid 1 /, `QEMU's log: SIGHUP from systemd (${ended})`);
  },
);
