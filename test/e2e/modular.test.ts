// libvirt's modular daemons, as Fedora, RHEL and SLES run them: upstream
// libvirt 11.3.0 built by build/libvirt-modular.sh, laid over /usr in the
// private world, virtqemud and virtnetworkd started as a service manager
// would, with the hooks installed as in production. The measured failure:
// a module changed, then virtnetworkd starts and runs the daemon hook with
// the same argv as virtqemud; qemu-modwatch must leave the change for
// virtqemud's own hooks to act on, or the running virtqemud serves stale
// capabilities until it restarts (never, while a guest runs).
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { inCI } from '../fixtures/ci';
import { MODULE_DIR, QEMU, e2eSkip, reprobeSummary, useEnv, type Env } from './harness';
import { QXL, TOP, execCount, hookCalls, hookLayout, hookRuns, installProduct, journal, readState, replaceModuleInPlace, settle, warnings } from './modwatch';

const STACK = path.join(TOP, '.stacks/libvirt-11.3.0');

function stackSkip(): string | false {
  const harness = e2eSkip(t);
  if (harness) return harness;
  if (fs.existsSync(path.join(STACK, '.complete'))) return false;
  const why = `${path.relative(TOP, STACK)} is not built (bash build/libvirt-modular.sh)`;
  if (inCI()) t.fail(`the modular-daemon stack is needed under CI: ${why}`);
  else t.comment(`modular daemon tests skipped: ${why}`);
  return why;
}

const skip = stackSkip();
const scenario = { skip, timeout: 300_000 };

/** The world: libvirt 11.3.0 over /usr, the hooks and the executable installed, the executable's starts counted. */
async function modularEnv(t: Test, label: string): Promise<Env> {
  const base = hookLayout(label);
  const env = await useEnv(t, { ...base, overlayDirs: ['/usr'], layers: { '/usr': path.join(STACK, 'usr') }, modular: true });
  await installProduct(env, { countExecs: true });
  return env;
}

t.test('the stack: libvirt 11.3.0 with modular daemons', scenario, async (t) => {
  const env = await modularEnv(t, 'mw-mod-stack');
  await env.startModular('virtqemud');
  const v = (await env.virsh('version')).stdout;
  t.match(v, /Using library: libvirt 11\.3\.0/, 'virsh talks to libvirt 11.3.0');
  t.match(v, /Running hypervisor: QEMU \d+\.\d+/, 'virtqemud drives QEMU');
  t.equal(hookCalls(env, 'daemon', 'start').length, 1, "virtqemud's start ran the daemon hook");
});

t.test('a change first seen by virtnetworkd: virtqemud still re-probes at the next guest start', scenario, async (t) => {
  const env = await modularEnv(t, 'mw-mod-netd');
  await env.startModular('virtqemud');
  await env.defineDomain('g');
  const fresh = await env.domcapsVideoModels();
  t.ok(fresh.includes('qxl'), `qxl at first: ${fresh.join(' ')}`);
  await settle(env, 'g');
  const [entry] = env.cacheFiles();
  t.ok(entry, 'a cache entry');
  const state = fs.readFileSync(env.hostPath('/var/lib/qemu-modwatch/state.json'), 'utf8');
  const execs = execCount(env);

  replaceModuleInPlace(env, MODULE_DIR, QXL);
  await env.startModular('virtnetworkd');
  t.equal(hookCalls(env, 'daemon', 'start').length, 2, "virtnetworkd's start ran the daemon hook too");
  t.equal(execCount(env), execs, 'the dispatcher did not start the executable for virtnetworkd');
  t.same(env.cacheFiles(), [entry], 'the cache entry is left alone');
  t.equal(fs.readFileSync(env.hostPath('/var/lib/qemu-modwatch/state.json'), 'utf8'), state, 'and no baseline recorded: the change is still to be seen');

  const logged = journal(env).length;
  await env.virsh('start', 'g');
  const w = warnings(journal(env).slice(logged));
  t.equal(w.length, 1, `the prepare hook saw the change: ${w[0]?.message}`);
  t.equal(readState(env).lastAction?.trigger, 'hook qemu prepare');
  const models = await env.domcapsVideoModels();
  t.notOk(models.includes('qxl'), `the running virtqemud re-probed: no qxl: ${models.join(' ')}`);
  t.same(reprobeSummary(env), [`${QEMU}: binary`], "libvirt's reason: the nudge");
  await env.virsh('destroy', 'g');
});

t.test('a daemon without QEMU capabilities starting while nothing changed: nothing touched', scenario, async (t) => {
  const env = await modularEnv(t, 'mw-mod-quiet');
  await env.startModular('virtqemud');
  await env.defineDomain('g');
  await settle(env, 'g');
  const before = env.cacheFiles();
  const emu = (await env.exec(['stat', '-c', '%Z', QEMU])).stdout;
  const execs = execCount(env);
  await env.startModular('virtnetworkd');
  t.equal(execCount(env), execs, 'no executable start');
  t.same(env.cacheFiles(), before, 'no cache file touched');
  t.equal((await env.exec(['stat', '-c', '%Z', QEMU])).stdout, emu, 'no nudge');
});

t.test('virtqemud exits when idle and starts again: its daemon hook acts before it loads capabilities', scenario, async (t) => {
  const env = await modularEnv(t, 'mw-mod-idle');
  await env.startModular('virtqemud', ['--timeout', '5']);
  const fresh = await env.domcapsVideoModels();
  t.ok(fresh.includes('qxl'));
  t.ok(await env.modularExited('virtqemud', 30_000), 'virtqemud exited after 5 s idle');
  t.ok(hookCalls(env, 'daemon', 'shutdown').length >= 1, 'running the shutdown hook');
  const [entry] = env.cacheFiles();
  replaceModuleInPlace(env, MODULE_DIR, QXL);
  // A client connects: a service manager starts it again (socket activation).
  await env.startModular('virtqemud', ['--timeout', '5']);
  t.notOk(env.cacheFiles().some((f) => f.name === entry?.name && f.mtimeNs === entry.mtimeNs), 'the start hook deleted the stale entry');
  const models = await env.domcapsVideoModels();
  t.notOk(models.includes('qxl'), `probed afresh: ${models.join(' ')}`);
  t.same(reprobeSummary(env), [], 'no entry was left for libvirt to judge outdated');
});

t.test("the hooks' cost on this stack, as virtqemud and virtnetworkd time them", scenario, async (t) => {
  const env = await modularEnv(t, 'mw-mod-cost');
  await env.startModular('virtqemud');
  await env.defineDomain('g');
  await settle(env, 'g');
  const runsBefore = hookRuns(env).length;
  const execs = execCount(env);
  const CYCLES = 10;
  for (let i = 0; i < CYCLES; i++) {
    await env.virsh('start', 'g');
    await env.virsh('destroy', 'g');
  }
  await env.startModular('virtnetworkd');
  const runs = hookRuns(env).slice(runsBefore);
  t.same(runs.filter((r) => r.status !== 0 || r.stdout !== ''), [], 'every run exited 0 with nothing on stdout');
  t.equal(execCount(env), execs, 'nothing changed: the executable never started');
  const byOp = new Map<string, number[]>();
  for (const r of runs) if (r.ms !== null) byOp.set(r.op, [...(byOp.get(r.op) ?? []), r.ms]);
  const mean = (xs: number[]) => Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 10) / 10;
  t.comment(`libvirt 11.3.0 modular, ${CYCLES} start/destroy cycles: ${[...byOp].map(([op, ms]) => `${op} ${mean(ms)} ms (${ms.length})`).join(', ')}`);
  t.ok(byOp.get('prepare')?.length === CYCLES, 'a prepare hook per start, timed');
});
