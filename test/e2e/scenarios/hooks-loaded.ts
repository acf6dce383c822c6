// A daemon that started before the hooks were installed (issue 15): libvirt
// decides which drivers have hooks at its start and on SIGHUP, so the first
// hook of a driver waits for a reload. Ground truth from the daemon's own
// debug log: before the reload no qemu hook runs at a guest start, after it
// one does. `--check` and `status` must say so while it is true, and stop
// once it is not. One world: the stack's QEMU daemon, started with no hooks.
// Our hooks arrive as the packages place them: the preinst's record of a
// time before they arrive (build/deb/hooks-present.sh, run in the world),
// then the dispatchers.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Test } from 'tap';
import {
  BUILT_EXE,
  HOOK_DAEMON,
  HOOK_NAME,
  HOOK_QEMU,
  TOP,
  hookCalls,
  hookRuns,
  installProduct,
  layout,
} from '../modwatch';
import { scenarioSkip } from '../modwatch';
import { timeDomainStart, useEnv, type Env } from '../harness';
import { onStack, stackSkip, type Stack } from '../stacks';

const CLEAN_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

interface Finding {
  level: string;
  code: string;
  message: string;
}

async function toolJson(env: Env, args: string[]): Promise<any> {
  const r = await env.exec([BUILT_EXE, ...args, '--json'], { allowFail: true, env: CLEAN_ENV });
  return JSON.parse(r.stdout);
}

/** The hooks-not-loaded findings of `--check` that name this pid (the check sees every root daemon of the host). */
async function notLoaded(env: Env, pid: number): Promise<Finding[]> {
  const report = await toolJson(env, ['--check']);
  return (report.findings as Finding[]).filter(
    (f) => f.code === 'hooks-not-loaded' && f.message.includes(`(pid ${pid})`),
  );
}

async function statusOf(env: Env, pid: number): Promise<any> {
  return ((await toolJson(env, ['status'])).daemons as any[]).find((d) => d.pid === pid) ?? null;
}

/** What the packages do: the preinst's record (in the world, by the shipped shell), then both dispatchers. */
async function installOurHooks(env: Env): Promise<void> {
  const fn = fs.readFileSync(path.join(TOP, 'build/deb/hooks-present.sh'), 'utf8');
  await env.exec(['sh', '-c', `${fn}\nqemu_modwatch_hooks_installed_after`], { env: CLEAN_ENV });
  env.installHook('qemu', HOOK_NAME, HOOK_QEMU);
  env.installHook('daemon', HOOK_NAME, HOOK_DAEMON);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const OUR_QEMU_HOOK = `/etc/libvirt/hooks/qemu.d/${HOOK_NAME}`;

async function until(cond: () => boolean, ms = 30_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
    if (cond()) return true;
  }
  return cond();
}

export function hooksLoadedScenarios(t: Test, stack: Stack): void {
  const skip = scenarioSkip(t) || stackSkip(t, stack);

  t.test(
    'hooks installed after the daemon started: --check says it until a SIGHUP, as libvirt itself shows',
    { skip, timeout: 240_000 },
    async (t) => {
      const env = await useEnv(t, onStack(stack, layout('mw-hooks-loaded')));
      await installProduct(env);
      await env.startDaemon();
      const pid = env.daemonPid();
      if (!t.ok(pid, `${env.qemuDaemon} running`) || !pid) return;
      await env.defineDomain('g');
      // Past the clock slack between the daemon's start and the record.
      await sleep(2500);
      await installOurHooks(env);

      const before = await notLoaded(env, pid);
      t.equal(before.length, 1, `--check: ${before[0]?.message}`);
      t.equal(before[0]?.level, 'WARNING');
      t.match(
        before[0]?.message ?? '',
        new RegExp(`^${env.qemuDaemon} \\(pid ${pid}\\) started before qemu-modwatch's hooks were installed \\(after `),
        'it names the daemon and says why',
      );
      t.match(before[0]?.message ?? '', `run \`kill -HUP ${pid}\``, 'no systemd here: the signal by PID');
      const st = await statusOf(env, pid);
      t.same([st?.hooks, st?.command], ['not-loaded', `kill -HUP ${pid}`], 'status says the same');

      await timeDomainStart(env, 'g');
      t.equal(hookCalls(env, 'qemu').length, 0, `ground truth: ${env.qemuDaemon} ran no qemu hook at the guest start`);
      await env.virsh('destroy', 'g');

      process.kill(pid, 'SIGHUP');
      const reloaded = () => hookRuns(env).some((r) => r.op === 'reload' && r.status !== null);
      t.ok(await until(reloaded), `${env.qemuDaemon} reloaded and ran our daemon hook ('- reload begin SIGHUP')`);
      t.same(await notLoaded(env, pid), [], '--check: the finding is gone');
      t.equal((await statusOf(env, pid))?.hooks, 'loaded', 'status: loaded');

      await timeDomainStart(env, 'g');
      t.ok(
        await until(() => hookCalls(env, 'qemu', 'prepare').length > 0),
        `ground truth: now ${env.qemuDaemon} runs the qemu hook at a guest start`,
      );
      await env.virsh('destroy', 'g');

      // An admin edits and chmods our dispatcher (a conffile): its ctime is now after the reload that loaded it.
      const ours = env.hostPath(OUR_QEMU_HOOK);
      fs.appendFileSync(ours, "# an admin's edit\n");
      fs.chmodSync(ours, 0o700);
      t.same(await notLoaded(env, pid), [], '--check after the edit: still no finding');
      const edited = await statusOf(env, pid);
      t.equal(edited?.hooks, 'loaded', `status after the edit: loaded (${edited?.why})`);
      const calls = hookCalls(env, 'qemu', 'prepare').length;
      await timeDomainStart(env, 'g');
      t.ok(
        await until(() => hookCalls(env, 'qemu', 'prepare').length > calls),
        `ground truth: after the edit ${env.qemuDaemon} still runs our qemu hook at a guest start`,
      );
      await env.virsh('destroy', 'g');
    },
  );

  t.test(
    "an admin's own qemu hook there at the daemon's start: ours are used at once, and --check says so",
    { skip, timeout: 240_000 },
    async (t) => {
      const env = await useEnv(t, onStack(stack, layout('mw-hooks-other')));
      await installProduct(env);
      // The admin's drop-in: it calls qemu-modwatch by name, but is not ours.
      const admin = env.hostPath('/etc/libvirt/hooks/qemu.d/10-admin');
      fs.mkdirSync(path.dirname(admin), { recursive: true, mode: 0o755 });
      fs.writeFileSync(admin, "#!/bin/sh\n# The admin's: runs qemu-modwatch refresh now and then.\nexit 0\n");
      fs.chmodSync(admin, 0o755);
      await sleep(2500);
      await env.startDaemon();
      const pid = env.daemonPid();
      if (!t.ok(pid, `${env.qemuDaemon} running`) || !pid) return;
      await env.defineDomain('g');
      await sleep(2500);
      await installOurHooks(env);

      t.same(await notLoaded(env, pid), [], '--check: no hooks-not-loaded');
      const st = await statusOf(env, pid);
      t.equal(st?.hooks, 'loaded', `status: loaded (${st?.why})`);
      t.match(st?.why ?? '', /another qemu hook was there when it started/, "by the admin's hook, not a run of ours");
      t.equal(hookRuns(env).filter((r) => r.op === 'reload').length, 0, 'it has not reloaded');

      await timeDomainStart(env, 'g');
      t.ok(
        await until(() => hookCalls(env, 'qemu', 'prepare').length > 0),
        `ground truth: ${env.qemuDaemon} runs our qemu hook at a guest start, with no reload`,
      );
      await env.virsh('destroy', 'g');
    },
  );
}
