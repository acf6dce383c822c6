// Benchmark: mean start-to-running time of a tiny TCG guest with and
// without the hook installed, measured side by side (interleaved) in two
// private libvirt envs (see harness.ts). Needs root, `npm run build` first.
// Prints one line of JSON: {"withHookMs":..,"withoutHookMs":..,"ratio":..,"runs":..}
//
//   node --import ./node_modules/@tapjs/typescript/dist/esm/import.mjs test/e2e/bench-start.ts [runs]
//
// (run from the repository; runs defaults to 10). Exits 2 when it cannot run here.
import { canRun, startEnv, type Env } from './harness';
import { BUILT_EXE, benchEnvs, measureStarts } from './modwatch';
import * as fs from 'node:fs';

async function main(): Promise<number> {
  if (process.env.TAP === '1') {
    // Run by tap (e.g. `tap test/e2e/`): a benchmark is not a test.
    process.stdout.write('1..0 # benchmark script, not a test: see its header\n');
    return 0;
  }
  const runs = Number(process.argv[2] ?? 10);
  if (!Number.isInteger(runs) || runs < 1) {
    process.stderr.write(`bench-start: runs must be a positive integer, not ${process.argv[2]}\n`);
    return 2;
  }
  const can = canRun();
  if (!can.ok || !fs.existsSync(BUILT_EXE)) {
    process.stderr.write(
      `bench-start: cannot run here: ${can.ok ? `${BUILT_EXE} not built (npm run build)` : can.reason}\n`,
    );
    return 2;
  }
  const started: Env[] = [];
  try {
    const envs = await benchEnvs(async (opts) => {
      const env = await startEnv(opts);
      started.push(env);
      return env;
    });
    const m = await measureStarts(envs, runs);
    process.stdout.write(
      JSON.stringify({ withHookMs: m.withHookMs, withoutHookMs: m.withoutHookMs, ratio: m.ratio, runs: m.runs }) + '\n',
    );
    return 0;
  } finally {
    await Promise.all(started.map((e) => e.teardown()));
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`bench-start: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
