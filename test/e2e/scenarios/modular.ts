// libvirt's modular daemons, as Fedora, RHEL and SLES run them, on a stack
// of upstream libvirt 11.3.0 (stacks.ts): virtqemud and virtnetworkd
// started as a service manager would, with the hooks installed as in
// production. The measured failure: a module changed, then virtnetworkd
// starts and runs the daemon hook with the same argv as virtqemud;
// qemu-modwatch must leave the change for virtqemud's own hooks to act on,
// or the running virtqemud serves stale capabilities until it restarts
// (never, while a guest runs). The same under systemd: systemd.test.ts.
import * as fs from 'node:fs';
import type { Test } from 'tap';
import { MODULE_DIR, QEMU, reprobeSummary, useEnv, type Env } from '../harness';
import {
  QXL,
  execCount,
  hookCalls,
  hookCost,
  hookLayout,
  hookRuns,
  installProduct,
  journal,
  readState,
  replaceModuleInPlace,
  scenarioSkip,
  settle,
  warnings,
} from '../modwatch';
import { onStack, stackSkip, type Stack } from '../stacks';

/** The modular-daemon scenarios on `stack` (its daemon: virtqemud), as subtests of t. */
export function modularScenarios(t: Test, stack: Stack): void {
  const skip = scenarioSkip(t) || stackSkip(t, stack);
  const scenario = { skip, timeout: 300_000 };

  /** The world: the stack, the hooks and the executable installed, the executable's starts counted. */
  async function modularEnv(t: Test, label: string): Promise<Env> {
    const env = await useEnv(t, onStack(stack, hookLayout(label)));
    await installProduct(env, { countExecs: true });
    return env;
  }
  /** virtnetworkd's own debug log. */
  const netd = (env: Env) => ({ daemonLog: () => env.daemonLog('virtnetworkd') });

  t.test(
    'a change first seen by virtnetworkd: virtqemud still re-probes at the next guest start',
    scenario,
    async (t) => {
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
      t.equal(hookCalls(netd(env), 'daemon', 'start').length, 1, "virtnetworkd's start ran the daemon hook too");
      t.equal(execCount(env), execs, 'the dispatcher did not start the executable for virtnetworkd');
      t.same(env.cacheFiles(), [entry], 'the cache entry is left alone');
      t.equal(
        fs.readFileSync(env.hostPath('/var/lib/qemu-modwatch/state.json'), 'utf8'),
        state,
        'and no baseline recorded: the change is still to be seen',
      );

      const logged = journal(env).length;
      await env.virsh('start', 'g');
      const w = warnings(journal(env).slice(logged));
      t.equal(w.length, 1, `the prepare hook saw the change: ${w[0]?.message}`);
      t.equal(readState(env).lastAction?.trigger, 'hook qemu prepare');
      const models = await env.domcapsVideoModels();
      t.notOk(models.includes('qxl'), `the running virtqemud re-probed: no qxl: ${models.join(' ')}`);
      t.same(reprobeSummary(env), [`${QEMU}: binary`], "libvirt's reason: the nudge");
      await env.virsh('destroy', 'g');
    },
  );

  t.test('a daemon without QEMU capabilities starting while nothing changed: nothing touched', scenario, async (t) => {
    const env = await modularEnv(t, 'mw-mod-quiet');
    await env.startModular('virtqemud');
    await env.defineDomain('g');
    await settle(env, 'g');
    const before = env.cacheFiles();
    const emu = (await env.exec(['stat', '-c', '%Z', QEMU])).stdout;
    const execs = execCount(env);
    await env.startModular('virtnetworkd');
    const runs = hookRuns(netd(env));
    t.equal(runs.length, 1, 'virtnetworkd ran the daemon hook');
    t.same(
      runs.filter((r) => r.status !== 0 || r.stdout !== '' || r.stderr !== ''),
      [],
      'which exited 0 and said nothing',
    );
    // What every socket activation of a daemon without QEMU capabilities costs: a shell.
    t.comment(`the hooks' cost, as virtnetworkd times them: ${hookCost(runs)}`);
    t.equal(execCount(env), execs, 'no executable start');
    t.same(env.cacheFiles(), before, 'no cache file touched');
    t.equal((await env.exec(['stat', '-c', '%Z', QEMU])).stdout, emu, 'no nudge');
  });

  t.test(
    'virtqemud exits when idle and starts again: its daemon hook acts before it loads capabilities',
    scenario,
    async (t) => {
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
      t.notOk(
        env.cacheFiles().some((f) => f.name === entry?.name && f.mtimeNs === entry.mtimeNs),
        'the start hook deleted the stale entry',
      );
      const models = await env.domcapsVideoModels();
      t.notOk(models.includes('qxl'), `probed afresh: ${models.join(' ')}`);
      t.same(reprobeSummary(env), [], 'no entry was left for libvirt to judge outdated');
    },
  );
}
