// End-to-end scenarios 4-6 (guest starts, parallel starts, save/restore)
// against a real libvirt daemon and real QEMU on one stack (stacks.ts), each
// first without the hook, then with it installed as in production. See
// modules.ts for 1-3.
import * as fs from 'node:fs';
import type { Test } from 'tap';
import {
  MODULE_DIR,
  QEMU,
  reprobeSummary,
  timeDomainStart,
  useEnv,
  type CacheFile,
  type Env,
  type EnvOptions,
} from '../harness';
import { onStack, stackSkip, type Stack } from '../stacks';
import {
  MARK_FILE,
  QXL,
  STATE_FILE,
  diffLines,
  entryKey,
  execCount,
  execLines,
  hookCalls,
  hookCost,
  hookLayout,
  hookRuns,
  installProduct,
  journal,
  layout,
  mtimeNs,
  readState,
  replaceModuleInPlace,
  scenarioSkip,
  settle,
  warnings,
  watchCacheEntry,
  type LineDiff,
} from '../modwatch';

const mean = (xs: number[]) => Math.round((xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)) * 10) / 10;

function fileId(p: string): { ino: string; mtimeNs: string; size: number } | null {
  try {
    const st = fs.statSync(p, { bigint: true });
    return { ino: st.ino.toString(), mtimeNs: st.mtimeNs.toString(), size: Number(st.size) };
  } catch {
    return null;
  }
}

/** `cycles` start/destroy cycles of `name`; the start-to-running times. */
async function cycles(env: Env, name: string, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    times.push(await timeDomainStart(env, name));
    await env.virsh('destroy', name);
  }
  return times;
}

const CYCLES = 20;

const GUESTS = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8'];

async function startAll(env: Env): Promise<{ code: number; stderr: string }[]> {
  return Promise.all(GUESTS.map((g) => env.virshAllowFail('start', g)));
}

/** Runtime values that differ between two runs of one guest: numbers. */
const shape = (d: LineDiff[]) =>
  JSON.stringify(
    d.map((h) => ({
      before: h.before.map((l) => l.replace(/\d+/g, 'N')),
      after: h.after.map((l) => l.replace(/\d+/g, 'N')),
    })),
  );

interface SaveRestore {
  live: LineDiff[];
  inactive: LineDiff[];
  models: string[];
  cacheBefore: CacheFile[];
  cacheAfter: CacheFile[];
}

/** start, save, change a module, restore; dumpxml differences before/after. */
async function saveChangeRestore(t: Test, env: Env): Promise<SaveRestore> {
  const img = '/var/lib/libvirt/saved.img';
  await env.virsh('start', 'saved');
  const live0 = (await env.virsh('dumpxml', 'saved')).stdout;
  const inactive0 = (await env.virsh('dumpxml', '--inactive', 'saved')).stdout;
  await env.virsh('save', 'saved', img);
  t.equal(await env.domstate('saved'), 'shut off', 'saved: not running');
  const cacheBefore = env.cacheFiles();
  replaceModuleInPlace(env, MODULE_DIR, QXL);
  const r = await env.virshAllowFail('restore', img);
  t.equal(r.code, 0, `virsh restore succeeds ${r.stderr.trim()}`);
  t.equal(await env.domstate('saved'), 'running', 'restored: running');
  const live1 = (await env.virsh('dumpxml', 'saved')).stdout;
  const inactive1 = (await env.virsh('dumpxml', '--inactive', 'saved')).stdout;
  const cacheAfter = env.cacheFiles();
  const models = await env.domcapsVideoModels();
  await env.virsh('destroy', 'saved');
  return { live: diffLines(live0, live1), inactive: diffLines(inactive0, inactive1), models, cacheBefore, cacheAfter };
}

/** Scenarios 4-6 on `stack`, as subtests of t. */
export function guestScenarios(t: Test, stack: Stack): void {
  const skip = scenarioSkip(t) || stackSkip(t, stack);
  const scenario = { skip, timeout: 300_000 };
  const on = (opts: EnvOptions) => onStack(stack, opts);

  t.test(`4. no change: ${CYCLES} start/destroy cycles touch nothing and log nothing`, scenario, async (t) => {
    t.test('control: without the hook libvirt leaves its cache file alone', async (t) => {
      const env = await useEnv(t, on(layout('mw-s4-control')));
      await env.startDaemon();
      await env.defineDomain('g');
      const before = env.cacheFiles();
      t.equal(before.length, 1, 'one cache entry');
      const times = await cycles(env, 'g', CYCLES);
      t.comment(`start-to-running mean ${mean(times)} ms over ${CYCLES} starts`);
      t.same(env.cacheFiles(), before, 'cache file untouched (inode, mtime, size)');
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind');
    });

    t.test('with the hook: the dispatcher never starts the executable', async (t) => {
      const env = await useEnv(t, on(hookLayout('mw-s4-hook')));
      await installProduct(env, { countExecs: true });
      await env.startDaemon();
      await env.defineDomain('g');
      await settle(env, 'g');
      t.ok(execCount(env) >= 2, `the counter works: ${execLines(env).join(' | ')}`);
      const before = env.cacheFiles();
      t.equal(before.length, 1, 'one cache entry');
      const execs = execCount(env);
      const logged = journal(env).length;
      const prepares = hookCalls(env, 'qemu', 'prepare').length;
      const mark = fileId(env.hostPath(MARK_FILE));
      const state = fileId(env.hostPath(STATE_FILE));
      t.ok(mark, 'the state dir has its mark');

      const runsBefore = hookRuns(env).length;
      const times = await cycles(env, 'g', CYCLES);
      t.comment(`start-to-running mean ${mean(times)} ms over ${CYCLES} starts`);
      const runs = hookRuns(env).slice(runsBefore);
      t.comment(
        `the hooks' cost on ${stack.id}, as ${env.qemuDaemon} times them: ` +
          `${hookCost([...hookRuns(env).filter((r) => r.op === 'start' && r.file.includes('/daemon.d/')), ...runs])}`,
      );
      t.equal(
        runs.length,
        CYCLES * 5,
        'libvirt ran the dispatcher 5 times a cycle (prepare start started stopped release)',
      );
      t.same(
        runs.filter((r) => r.status !== 0 || r.stdout !== '' || r.stderr !== ''),
        [],
        'every run exited 0 with empty stdout and stderr',
      );
      t.equal(
        hookCalls(env, 'qemu', 'prepare').length - prepares,
        CYCLES,
        `libvirt ran the dispatcher's prepare ${CYCLES} times`,
      );
      t.equal(execCount(env) - execs, 0, 'the executable was started 0 times (the mark made the dispatcher skip it)');
      t.same(env.cacheFiles(), before, 'every cache file untouched (same inode, mtime, size)');
      t.same(journal(env).slice(logged), [], 'nothing logged');
      t.same(fileId(env.hostPath(MARK_FILE)), mark, 'mark not rewritten');
      t.same(fileId(env.hostPath(STATE_FILE)), state, 'state.json not rewritten');
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind');
    });
  });

  t.test('5. eight guests started in parallel right after a change', scenario, async (t) => {
    t.test('control: without the hook all start on the stale cache entry', async (t) => {
      const env = await useEnv(t, on(layout('mw-s5-control')));
      await env.startDaemon();
      for (const g of GUESTS) await env.defineDomain(g);
      const [entry] = env.cacheFiles();
      replaceModuleInPlace(env, MODULE_DIR, QXL);
      const watch = watchCacheEntry(env, entry!.name);
      const results = await startAll(env);
      t.same(
        results.map((r) => r.code),
        GUESTS.map(() => 0),
        'all eight virsh start succeed',
      );
      t.same((await env.runningDomains()).sort(), GUESTS, 'all eight running');
      const models = await env.domcapsVideoModels();
      const seen = watch.stop();
      t.same(seen, [entryKey(entry!)], 'the cache entry was never deleted or rewritten');
      t.ok(models.includes('qxl'), 'stale: qxl still listed');
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind');
    });

    t.test('with the hook: all start, the cache is invalidated once', async (t) => {
      const env = await useEnv(t, on(hookLayout('mw-s5-hook')));
      await installProduct(env, { countExecs: true });
      await env.startDaemon();
      for (const g of GUESTS) await env.defineDomain(g);
      await settle(env, 'p1');
      const [entry] = env.cacheFiles();
      const execs = execCount(env);
      const logged = journal(env).length;
      const prepares = hookCalls(env, 'qemu', 'prepare').length;

      replaceModuleInPlace(env, MODULE_DIR, QXL);
      const watch = watchCacheEntry(env, entry!.name);
      const results = await startAll(env);
      for (const [i, r] of results.entries()) t.equal(r.code, 0, `virsh start ${GUESTS[i]} ${r.stderr.trim()}`);
      t.same((await env.runningDomains()).sort(), GUESTS, 'all eight running');
      t.equal(hookCalls(env, 'qemu', 'prepare').length - prepares, GUESTS.length, 'eight prepare hooks ran');
      t.comment(`the executable started ${execCount(env) - execs} times for the ${GUESTS.length} prepares`);

      const models = await env.domcapsVideoModels();
      const seen = watch.stop();
      t.comment(`cache entry states: ${seen.join(' -> ')}`);
      t.equal(seen[0], entryKey(entry!), 'first the old entry');
      t.equal(seen[1], 'absent', 'then deleted');
      const renewed = seen.slice(2);
      const inodes = new Set(renewed.map((k) => k.split('@')[0]));
      t.ok(
        renewed.length >= 1 && !renewed.includes('absent') && inodes.size === 1,
        'then one new file, never deleted again (its creation and its write may show apart)',
      );
      t.notOk(renewed.includes(seen[0]!), 'the new one is not the old entry');
      t.notOk(models.includes('qxl'), `fresh capabilities: no qxl: ${models.join(' ')}`);
      t.same(
        reprobeSummary(env),
        [`${QEMU}: binary`],
        "libvirt's reason for the one re-probe: the hook's nudge (the emulator's ctime)",
      );

      const w = warnings(journal(env).slice(logged));
      t.equal(w.length, 1, `one warning logged: ${w.map((e) => e.message).join(' | ')}`);
      let state: ReturnType<typeof readState> | null = null;
      t.doesNotThrow(() => (state = readState(env)), 'state.json is valid JSON');
      const last = (state as ReturnType<typeof readState> | null)?.lastAction;
      t.equal(last?.trigger, 'hook qemu prepare', 'last action by a prepare hook');
      t.same(last?.deleted, [entry!.name], 'that entry deleted, once');
      t.same(
        hookRuns(env).filter((h) => h.stdout !== '' || h.status !== 0),
        [],
        'every dispatcher run exited 0, nothing on stdout',
      );
      await Promise.all(GUESTS.map((g) => env.virsh('destroy', g)));
    });
  });

  t.test('6. virsh save + restore with a change in between: the domain XML is unchanged', scenario, async (t) => {
    let control: LineDiff[] | null = null;
    t.test('control: without the hook', async (t) => {
      const env = await useEnv(t, on(layout('mw-s6-control')));
      await env.startDaemon();
      await env.defineDomain('saved');
      const r = await saveChangeRestore(t, env);
      control = r.live;
      for (const h of r.live)
        t.comment(`libvirt's own runtime difference: ${h.before.join(' ')} -> ${h.after.join(' ')}`);
      t.ok(
        r.live.every((h) => h.before.length === h.after.length),
        'only values change, no element comes or goes',
      );
      t.same(r.inactive, [], 'inactive XML identical');
      t.same(r.cacheAfter, r.cacheBefore, 'cache entry untouched');
      t.ok(r.models.includes('qxl'), 'stale: qxl still listed');
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind');
    });

    t.test('with the hook: the restore hook acts, the XML stays', async (t) => {
      const env = await useEnv(t, on(hookLayout('mw-s6-hook')));
      await installProduct(env);
      await env.startDaemon();
      await env.defineDomain('saved');
      await settle(env, 'saved');
      const logged = journal(env).length;
      const r = await saveChangeRestore(t, env);
      t.equal(hookCalls(env, 'qemu', 'restore').length, 1, 'libvirt ran the restore hook');
      const restoreRun = hookRuns(env).find((h) => h.op === 'restore');
      t.equal(restoreRun?.status, 0, 'it exited 0');
      t.equal(restoreRun?.stdout, '', 'with nothing on stdout (which libvirt would take as the new domain XML)');
      t.same(
        hookRuns(env).filter((h) => h.stdout !== ''),
        [],
        'no dispatcher run wrote to stdout',
      );
      const w = warnings(journal(env).slice(logged));
      t.equal(w.length, 1, 'one warning logged');
      t.equal(w[0]?.fields.QEMU_MODWATCH_TRIGGER, 'hook qemu restore', `by the restore hook: ${w[0]?.message}`);
      t.equal(w[0]?.fields.QEMU_MODWATCH_DOMAIN, 'saved');
      t.same(
        r.cacheAfter.map(entryKey).filter((k) => r.cacheBefore.map(entryKey).includes(k)),
        [],
        'the old cache entry is gone',
      );
      t.notOk(r.models.includes('qxl'), `fresh capabilities: no qxl: ${r.models.join(' ')}`);
      t.same(
        reprobeSummary(env),
        [`${QEMU}: binary`],
        "libvirt's reason for the one re-probe: the hook's nudge (the emulator's ctime)",
      );
      for (const h of r.live) t.comment(`difference: ${h.before.join(' ')} -> ${h.after.join(' ')}`);
      t.same(r.inactive, [], 'inactive XML identical');
      if (control === null) t.fail('the control run did not run: no baseline of runtime differences');
      else
        t.equal(shape(r.live), shape(control), 'live XML differs only where libvirt itself makes it differ (control)');
      t.equal(readState(env).lastAction?.trigger, 'hook qemu restore');
      t.ok(mtimeNs(env.hostPath(STATE_FILE)), 'state written');
    });
  });
}
