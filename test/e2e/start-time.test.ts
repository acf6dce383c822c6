// Start-to-running time with and without the hook installed, measured side
// by side (interleaved) in one run, and a check that an env's teardown
// leaves nothing behind. The numbers are reported, not asserted: timings
// belong in benchmarks (test/e2e/bench-start.ts prints the same as JSON).
import * as fs from 'node:fs';
import t from 'tap';
import { pidsInNamespace, startEnv, useEnv } from './harness';
import { MARK_FILE, benchEnvs, hookLayout, installProduct, mtimeNs, measureStarts, scenarioSkip } from './modwatch';

const skip = scenarioSkip(t);
const RUNS = 10;

t.test(
  `start-to-running, ${RUNS} starts each with and without the hook, interleaved`,
  { skip, timeout: 300_000 },
  async (t) => {
    const envs = await benchEnvs((opts) => useEnv(t, opts));
    const mark = mtimeNs(envs.withHook.hostPath(MARK_FILE));
    const m = await measureStarts(envs, RUNS);
    t.comment(`with hook:    mean ${m.withHookMs} ms  (${m.samples.withHook.join(', ')})`);
    t.comment(`without hook: mean ${m.withoutHookMs} ms  (${m.samples.withoutHook.join(', ')})`);
    t.comment(`ratio with/without: ${m.ratio} (target <= 1.02; reported, not asserted)`);
    t.comment(
      `medians: with ${m.medians.withHookMs} ms, without ${m.medians.withoutHookMs} ms, ratio ${m.medians.ratio}`,
    );
    const hookMs = Object.values(m.hookMsPerStart).reduce((a, b) => a + b, 0);
    t.comment(
      `dispatcher runs per start as libvirtd timed them: ${Object.entries(m.hookMsPerStart)
        .map(([op, ms]) => `${op} ${ms} ms`)
        .join(', ')}; ` +
        `total ${Math.round(hookMs * 10) / 10} ms = ${Math.round((hookMs / m.withoutHookMs) * 1000) / 10}% ` +
        `of the mean start without the hook`,
    );
    t.equal(m.samples.withHook.length, RUNS, `${RUNS} starts with the hook`);
    t.equal(m.samples.withoutHook.length, RUNS, `${RUNS} starts without`);
    t.equal(
      mtimeNs(envs.withHook.hostPath(MARK_FILE)),
      mark,
      'with the hook, every start took the fast path (mark untouched)',
    );
  },
);

t.test('teardown leaves no process, mount or temp dir', { skip, timeout: 120_000 }, async (t) => {
  const mountsBefore = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  const env = await startEnv(hookLayout('mw-teardown'));
  try {
    await installProduct(env);
    await env.startDaemon();
    await env.defineDomain('g');
    await env.virsh('start', 'g');
    t.equal(env.qemuPids().length, 1, 'a guest runs');
  } finally {
    const ns = env.mntNs;
    const pids = env
      .processes()
      .map((p) => p.pid)
      .concat(env.holderPid);
    await env.teardown();
    t.same(pidsInNamespace(ns), [], 'no process left in the namespace');
    t.same(
      pids.filter((p) => fs.existsSync(`/proc/${p}`) && !/\) Z /.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8'))),
      [],
      'every process of the env is gone',
    );
    t.notOk(fs.existsSync(env.dir), 'temp dir removed');
    t.equal(fs.readFileSync('/proc/self/mountinfo', 'utf8'), mountsBefore, "the test process's mounts are unchanged");
  }
});
