// Stack 3 under a real systemd (issue 13): upstream libvirt 11.3.0's modular
// daemons in a systemd-nspawn container, started by libvirt's own socket and
// service units. Socket activation, the idle exit and the new start are
// systemd's, so the order in which virtqemud, virtnetworkd and the hooks run
// is the one a Fedora or RHEL host has. The measured failure: a module
// changed, then virtnetworkd is socket-activated and runs the daemon hook
// with the same argv as virtqemud; qemu-modwatch must leave the change for
// virtqemud's own hooks, or the running virtqemud serves stale capabilities.
// Each test boots a container of its own (about a second; see systemd.ts):
// they change modules, units and the cache, and isolation costs little.
import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { MODULE_DIR, QEMU, cacheEntryName, reprobeSummary } from './harness';
import { QXL, entryKey, hookCalls, hookCost, hookRuns, replaceModuleInPlace, settle, warnings } from './modwatch';
import { NETWORK_URI, bootContainer, containerSkip, type Container, type ContainerOptions } from './systemd';

const skip = containerSkip(t);
const scenario = { skip, timeout: 240_000 };

const ENTRY = cacheEntryName(QEMU);

async function boot(t: Test, opts: ContainerOptions): Promise<Container> {
  const c = await bootContainer(t, opts);
  t.comment(`container booted in ${c.bootMs} ms (${c.systemState})`);
  return c;
}

const product = (label: string, more: Partial<ContainerOptions> = {}): ContainerOptions => ({
  label,
  product: true,
  countExecs: true,
  ...more,
});

/** The thread that logged a libvirt debug line: the daemon's main thread (its PID) for a daemon hook. */
const threadOf = (line: string) => Number(/^\S+ \S+: (\d+): /.exec(line)?.[1] ?? NaN);
const emulatorCtime = (c: Container) => fs.statSync(c.hostPath(QEMU), { bigint: true }).ctimeNs.toString();

t.test(
  'the stack: virsh socket-activates virtqemud 11.3.0 under systemd, whose start runs the daemon hook once',
  scenario,
  async (t) => {
    const c = await boot(t, product('mw-sd-stack'));
    t.notOk(fs.existsSync(c.hostPath('/dev/kvm')), 'the container has no /dev/kvm');
    const before = await c.unit('virtqemud.service');
    t.equal(before.ActiveState, 'inactive', 'virtqemud is not running after the boot');
    t.match(
      await c.unit('virtqemud.socket'),
      { ActiveState: 'active', SubState: 'listening' },
      "systemd listens on virtqemud's socket",
    );
    t.equal(hookCalls(c, 'daemon').length, 0, 'no daemon hook ran yet');

    const v = (await c.virsh('version')).stdout;
    t.match(v, /Using library: libvirt 11\.3\.0/, 'virsh talks to libvirt 11.3.0');
    t.match(v, /Running hypervisor: QEMU 7\.2\.\d+/, 'virtqemud drives QEMU 7.2');
    const after = await c.unit('virtqemud.service');
    t.equal(after.ActiveState, 'active', 'the connection started virtqemud.service');
    const starts = hookCalls(c, 'daemon', 'start');
    t.equal(starts.length, 1, "virtqemud's start ran the daemon hook once");
    t.equal(threadOf(starts[0] ?? ''), after.MainPID, "from virtqemud's main thread: the service's MainPID");
    t.same(
      hookRuns(c).map((r) => [r.op, r.status, r.stdout]),
      [['start', 0, '']],
      'it exited 0, nothing on stdout',
    );
    const caps = (await c.virsh('capabilities')).stdout;
    t.match(caps, /<domain type='qemu'/, 'libvirt offers TCG guests');
    t.notMatch(caps, /<domain type='kvm'/, 'and no KVM: it probes with TCG only');
  },
);

t.test(
  'a change first seen by a socket-activated virtnetworkd: virtqemud re-probes at the next guest start',
  scenario,
  async (t) => {
    const c = await boot(t, product('mw-sd-netd'));
    await c.defineDomain('g');
    const fresh = await c.domcapsVideoModels();
    t.ok(fresh.includes('qxl'), `qxl at first: ${fresh.join(' ')}`);
    t.ok((await c.qemuDevices()).includes('qxl'), 'QEMU itself has qxl');
    await settle(c, 'g');
    const entry = c.cacheFiles().find((f) => f.name === ENTRY);
    t.ok(entry, `the x86_64 emulator's cache entry ${ENTRY}`);
    const cache = c.cacheFiles();
    const state = c.stateFile();
    t.ok(state, 'a baseline recorded');
    const execs = c.execCount();
    const reprobesBefore = c.reprobes().length;

    const change = replaceModuleInPlace(c, MODULE_DIR, QXL);
    t.equal(change.inoAfter, change.inoBefore, `${QXL} replaced in place (same inode)`);
    t.equal(change.dirMtimeAfter, change.dirMtimeBefore, "the module directory's mtime as it was");
    t.notOk((await c.qemuDevices()).includes('qxl'), 'QEMU itself has no qxl any more');

    t.equal((await c.unit('virtnetworkd.service')).ActiveState, 'inactive', 'virtnetworkd is not running');
    await c.virshAt(NETWORK_URI, 'net-list', '--all');
    const netd = await c.unit('virtnetworkd.service');
    t.equal(netd.ActiveState, 'active', 'a network client socket-activated virtnetworkd.service');
    const netStarts = hookCalls(c.networkDaemon, 'daemon', 'start');
    t.equal(netStarts.length, 1, "virtnetworkd's start ran the daemon hook (its own log)");
    t.equal(threadOf(netStarts[0] ?? ''), netd.MainPID, "from virtnetworkd's main thread: the service's MainPID");
    t.same(
      hookRuns(c.networkDaemon).map((r) => [r.status, r.stdout]),
      [[0, '']],
      'the dispatcher exited 0, nothing on stdout',
    );
    t.equal(hookCalls(c, 'daemon', 'start').length, 1, 'virtqemud did not start again');
    t.equal(c.execCount(), execs, 'the dispatcher did not start the executable for virtnetworkd');
    t.same(c.cacheFiles(), cache, 'the cache entries are left alone');
    t.equal(c.stateFile(), state, 'no baseline recorded: the change is still to be seen');

    const stale = await c.domcapsVideoModels();
    t.ok(stale.includes('qxl'), `the running virtqemud still lists qxl, libvirt missed the change: ${stale.join(' ')}`);
    t.same(reprobeSummary(c, reprobesBefore), [], 'and libvirt re-probed nothing');

    const logged = (await c.journal()).length;
    await c.virsh('start', 'g');
    t.equal(c.execCount(), execs + 1, 'the prepare hook started the executable');
    const w = warnings((await c.journal()).slice(logged));
    t.equal(w.length, 1, `the prepare hook saw the change and warned in the journal: ${w[0]?.message}`);
    t.match(
      w[0]?.fields ?? {},
      {
        SYSLOG_IDENTIFIER: 'qemu-modwatch',
        PRIORITY: '4',
        QEMU_MODWATCH_TRIGGER: 'hook qemu prepare',
        QEMU_MODWATCH_DOMAIN: 'g',
        QEMU_MODWATCH_EMULATOR: QEMU,
        QEMU_MODWATCH_REPLACED: new RegExp(`(^| )${MODULE_DIR}/${QXL}( |$)`),
        QEMU_MODWATCH_DELETED: new RegExp(ENTRY),
        QEMU_MODWATCH_NUDGED: new RegExp(`(^| )${QEMU}( |$)`),
      },
      "the journal entry's fields",
    );
    const models = await c.domcapsVideoModels();
    t.notOk(models.includes('qxl'), `the running virtqemud re-probed: no qxl, as QEMU says: ${models.join(' ')}`);
    t.same(reprobeSummary(c, reprobesBefore), [`${QEMU}: binary`], "libvirt's reason: the nudge");
    await c.virsh('destroy', 'g');
  },
);

t.test(
  'control: without qemu-modwatch, qxl stays listed although QEMU has none, across a restart too',
  scenario,
  async (t) => {
    const c = await boot(t, { label: 'mw-sd-ctl', product: false });
    await c.defineDomain('g');
    t.ok((await c.domcapsVideoModels()).includes('qxl'), 'qxl at first');
    await settle(c, 'g');
    const reprobesBefore = c.reprobes().length;
    replaceModuleInPlace(c, MODULE_DIR, QXL);
    t.notOk((await c.qemuDevices()).includes('qxl'), 'QEMU itself has no qxl any more');
    await c.virshAt(NETWORK_URI, 'net-list', '--all');
    t.equal((await c.unit('virtnetworkd.service')).ActiveState, 'active', 'virtnetworkd socket-activated');
    await c.virsh('start', 'g');
    await c.virsh('destroy', 'g');
    const models = await c.domcapsVideoModels();
    t.ok(models.includes('qxl'), `the guest start changed nothing: qxl still listed: ${models.join(' ')}`);
    const pid = (await c.unit('virtqemud.service')).MainPID;
    await c.exec(['systemctl', 'restart', 'virtqemud.service']);
    const again = await c.unit('virtqemud.service');
    t.ok(
      again.ActiveState === 'active' && again.MainPID !== pid,
      `systemd restarted virtqemud (PID ${pid} -> ${again.MainPID})`,
    );
    const restarted = await c.domcapsVideoModels();
    t.ok(restarted.includes('qxl'), `and after its restart still: ${restarted.join(' ')}`);
    t.same(reprobeSummary(c, reprobesBefore), [], 'libvirt never judged the entry outdated');
    t.same(await c.journal(), [], 'nothing logged by qemu-modwatch: it is not there');
  },
);

t.test(
  "virtqemud's idle exit by systemd: the next socket activation's start hook removes the stale entry before " +
    'libvirt loads it',
  scenario,
  async (t) => {
    const c = await boot(t, product('mw-sd-idle', { countExecs: false, qemuIdleTimeout: 5 }));
    const fresh = await c.domcapsVideoModels();
    t.ok(fresh.includes('qxl'), `qxl at first: ${fresh.join(' ')}`);
    const first = await c.unit('virtqemud.service');
    t.equal(first.ActiveState, 'active', 'virtqemud socket-activated');
    t.ok(
      await c.waitUnit('virtqemud.service', 'inactive', 40_000),
      'virtqemud.service became inactive by itself (--timeout 5 from the drop-in)',
    );
    t.match(
      await c.unit('virtqemud.service'),
      { Result: 'success', ExecMainStatus: '0' },
      'it exited 0: its own idle exit, not a kill',
    );
    t.match(
      await c.unit('virtqemud.socket'),
      { ActiveState: 'active', SubState: 'listening' },
      'systemd still listens on its socket',
    );
    t.ok(hookCalls(c, 'daemon', 'shutdown').length >= 1, 'running the shutdown hook');
    const entry = c.cacheFiles().find((f) => f.name === ENTRY);
    t.ok(entry, 'the cache entry stays while virtqemud is down');

    replaceModuleInPlace(c, MODULE_DIR, QXL);
    t.notOk((await c.qemuDevices()).includes('qxl'), 'QEMU itself has no qxl any more');
    const logged = (await c.journal()).length;
    const models = await c.domcapsVideoModels();
    const second = await c.unit('virtqemud.service');
    t.ok(
      second.ActiveState === 'active' && second.MainPID !== first.MainPID,
      `the next virsh call re-activated virtqemud (PID ${first.MainPID} -> ${second.MainPID})`,
    );
    const starts = hookCalls(c, 'daemon', 'start');
    t.equal(starts.length, 2, 'its second start ran the daemon hook');
    t.equal(threadOf(starts[1] ?? ''), second.MainPID, 'from the new virtqemud');
    const w = warnings((await c.journal()).slice(logged));
    t.equal(w.length, 1, `the start hook saw the change: ${w[0]?.message}`);
    t.match(
      w[0]?.fields ?? {},
      {
        QEMU_MODWATCH_TRIGGER: 'hook daemon start',
        QEMU_MODWATCH_DAEMON: 'virtqemud',
        QEMU_MODWATCH_DELETED: new RegExp(ENTRY),
      },
      'and deleted the entry',
    );
    t.not(
      entryKey(c.cacheFiles().find((f) => f.name === ENTRY)),
      entryKey(entry),
      'the entry libvirt has now is a new one',
    );
    t.notOk(models.includes('qxl'), `probed afresh: no qxl, as QEMU says: ${models.join(' ')}`);
    t.same(reprobeSummary(c), [], "libvirt found no entry to judge outdated: the hook's deletion came first");
  },
);

t.test(
  'a socket-activated daemon without QEMU capabilities while nothing changed: nothing touched',
  scenario,
  async (t) => {
    const c = await boot(t, product('mw-sd-quiet'));
    await c.defineDomain('g');
    await settle(c, 'g');
    const cache = c.cacheFiles();
    const state = c.stateFile();
    const ctime = emulatorCtime(c);
    const execs = c.execCount();
    await c.virshAt(NETWORK_URI, 'net-list', '--all');
    t.equal((await c.unit('virtnetworkd.service')).ActiveState, 'active', 'virtnetworkd socket-activated');
    t.same(
      hookRuns(c.networkDaemon).map((r) => [r.op, r.status, r.stdout]),
      [['start', 0, '']],
      'its daemon hook ran and exited 0, nothing on stdout',
    );
    t.equal(c.execCount(), execs, 'no executable start');
    t.same(c.cacheFiles(), cache, 'no cache file touched');
    t.equal(emulatorCtime(c), ctime, "the emulator's ctime unchanged: no nudge");
    t.equal(c.stateFile(), state, 'the state unchanged');
  },
);

t.test("the hooks' cost under systemd, as virtqemud and virtnetworkd time them", scenario, async (t) => {
  const c = await boot(t, product('mw-sd-cost'));
  await c.defineDomain('g');
  await settle(c, 'g');
  const runsBefore = hookRuns(c).length;
  const execs = c.execCount();
  const CYCLES = 10;
  for (let i = 0; i < CYCLES; i++) {
    await c.virsh('start', 'g');
    await c.virsh('destroy', 'g');
  }
  await c.virshAt(NETWORK_URI, 'net-list', '--all');
  const runs = hookRuns(c).slice(runsBefore);
  const net = hookRuns(c.networkDaemon);
  t.same(
    [...runs, ...net].filter((r) => r.status !== 0 || r.stdout !== ''),
    [],
    'every run exited 0 with nothing on stdout',
  );
  t.equal(c.execCount(), execs, 'nothing changed: the executable never started');
  t.equal(runs.filter((r) => r.op === 'prepare' && r.ms !== null).length, CYCLES, 'a prepare hook per start, timed');
  t.equal(net.filter((r) => r.op === 'start' && r.ms !== null).length, 1, "virtnetworkd's start hook, timed");
  t.comment(
    `libvirt 11.3.0 under systemd, ${CYCLES} start/destroy cycles: virtqemud ${hookCost(runs)}; ` +
      `virtnetworkd ${hookCost(net)}`,
  );
});
