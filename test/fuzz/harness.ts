import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import type { Test } from 'tap';

// What every fuzz target shares: the budget, the seed, replay of the
// inputs that once failed, and the limits on time and memory per call.
//
// CI (the plain test run): a fixed seed and a fixed number of runs per
// target, a few seconds each, so a red run is reproducible as it is.
// `npm run fuzz`: QEMU_MODWATCH_FUZZ_SECONDS per target, a fresh random
// seed (printed), and failing inputs saved under test/fuzz/regressions/.
//   QEMU_MODWATCH_FUZZ_SEED=<n>      replay one seed (CI or long)
//   QEMU_MODWATCH_FUZZ_SECONDS=<s>   time per target (long mode)
//   QEMU_MODWATCH_FUZZ_RUNS=<n>      runs per target instead (long mode)
//   QEMU_MODWATCH_FUZZ_SAVE=1        save failing inputs (set by npm run fuzz)

export const REGRESSIONS = path.join(__dirname, 'regressions');
/** A single call that takes longer than this is a hang for our purposes. */
export const CALL_LIMIT_MS = Number(process.env.QEMU_MODWATCH_FUZZ_CALL_MS ?? 1000);
/** Memory a single call may leave allocated (measured without a collection in between). */
const CALL_MEMORY_LIMIT = 64 * 1024 * 1024;
/** What a whole target may leak, measured after a full collection. */
const TARGET_LEAK_LIMIT = 32 * 1024 * 1024;

export interface Regression {
  /** Why it is here: what failed, and when. */
  note: string;
  /** The input, base64. */
  input: string;
  /** Extra parameters of the target (chunk sizes, file mode...). */
  extra?: unknown;
}

export interface Target<T> {
  /** File name under regressions/, and the label in the output. */
  name: string;
  arbitrary: fc.Arbitrary<T>;
  /** Throws on a finding: a foreign exception, a bad result. The harness adds the time and memory limits. */
  check(value: T): void;
  encode(value: T): Omit<Regression, 'note'>;
  decode(r: Regression): T;
  /** Runs in CI, chosen so the target takes a few seconds. */
  ciRuns: number;
}

const longSeconds = Number(process.env.QEMU_MODWATCH_FUZZ_SECONDS || 0);
const envSeed = process.env.QEMU_MODWATCH_FUZZ_SEED;

const envRuns = Number(process.env.QEMU_MODWATCH_FUZZ_RUNS || 0);

export function budget(ciRuns: number): {
  seed: number;
  numRuns: number;
  interruptAfterTimeLimit?: number;
  mode: string;
} {
  const long = longSeconds > 0 || envRuns > 0;
  const seed = envSeed !== undefined && envSeed !== '' ? Number(envSeed) : long ? (Math.random() * 2 ** 31) | 0 : 42;
  if (envRuns > 0) return { seed, numRuns: envRuns, mode: `${envRuns} runs` };
  if (longSeconds > 0) {
    return {
      seed,
      numRuns: Number.MAX_SAFE_INTEGER,
      interruptAfterTimeLimit: longSeconds * 1000,
      mode: `${longSeconds} s`,
    };
  }
  return { seed, numRuns: ciRuns, mode: `${ciRuns} runs` };
}

let gc: (() => void) | undefined;
function collect(): void {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  gc();
}

/** The limits every call is held to, whatever the target. */
function bounded<T>(check: (v: T) => void): (v: T) => void {
  return (v) => {
    const before = process.memoryUsage();
    const start = performance.now();
    check(v);
    const ms = performance.now() - start;
    if (ms > CALL_LIMIT_MS) throw new Error(`one call took ${ms.toFixed(0)} ms (limit ${CALL_LIMIT_MS} ms)`);
    const after = process.memoryUsage();
    const grew = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
    if (grew > CALL_MEMORY_LIMIT) throw new Error(`one call left ${(grew / 1e6).toFixed(0)} MB allocated`);
  };
}

export function loadRegressions(name: string): Regression[] {
  const file = path.join(REGRESSIONS, `${name}.json`);
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Regression[]) : [];
}

function saveRegression(name: string, r: Regression): void {
  const file = path.join(REGRESSIONS, `${name}.json`);
  const all = loadRegressions(name);
  if (all.some((x) => x.input === r.input && JSON.stringify(x.extra) === JSON.stringify(r.extra))) return;
  all.push(r);
  fs.mkdirSync(REGRESSIONS, { recursive: true });
  fs.writeFileSync(file, JSON.stringify(all, null, 2) + '\n');
}

/** Replays the saved inputs, then fuzzes; one tap subtest per target. */
export function fuzz<T>(t: Test, target: Target<T>): Promise<void> {
  return t.test(target.name, async (t) => {
    const check = bounded(target.check);
    const saved = loadRegressions(target.name);
    for (const [i, r] of saved.entries()) {
      t.doesNotThrow(() => check(target.decode(r)), `regression ${i + 1}/${saved.length}: ${r.note}`);
    }

    const b = budget(target.ciRuns);
    t.comment(`seed ${b.seed} (${b.mode}); replay with QEMU_MODWATCH_FUZZ_SEED=${b.seed}`);
    collect();
    const heapBefore = process.memoryUsage().heapUsed;
    const start = performance.now();
    const out = fc.check(
      fc.property(target.arbitrary, (v) => check(v)),
      {
        seed: b.seed,
        numRuns: b.numRuns,
        interruptAfterTimeLimit: b.interruptAfterTimeLimit,
        markInterruptAsFailure: false,
      },
    );
    const ms = performance.now() - start;
    collect();
    const leaked = process.memoryUsage().heapUsed - heapBefore;
    t.comment(`${target.name}: ${out.numRuns} runs in ${(ms / 1000).toFixed(1)} s`);
    if (out.failed) {
      const value = out.counterexample![0] as T;
      const r: Regression = {
        note: `${String((out.errorInstance as Error)?.message ?? out.errorInstance).slice(0, 200)} (seed ${b.seed})`,
        ...target.encode(value),
      };
      if (process.env.QEMU_MODWATCH_FUZZ_SAVE === '1') saveRegression(target.name, r);
      t.fail(`${target.name}: ${r.note}\ninput: ${JSON.stringify(r)}\npath: ${out.counterexamplePath}`);
    } else {
      t.pass(`${target.name}: no finding in ${out.numRuns} runs`);
    }
    t.ok(
      leaked < TARGET_LEAK_LIMIT,
      `${target.name}: heap after a full collection within ${TARGET_LEAK_LIMIT / 1e6} MB of the start ` +
        `(${(leaked / 1e6).toFixed(1)} MB)`,
    );
  }) as unknown as Promise<void>;
}

export const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64');
export const unb64 = (s: string) => Buffer.from(s, 'base64');

/** Byte-level mutations of a realistic input: the operators every text/binary target shares. */
export const byteMutation = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom('flip', 'set', 'delete', 'insert', 'duplicate', 'truncate', 'token'),
  byte: fc.integer({ min: 0, max: 255 }),
  len: fc.integer({ min: 1, max: 64 }),
  token: fc.nat(),
});
export type ByteMutation = typeof byteMutation extends fc.Arbitrary<infer M> ? M : never;

export function mutate(base: Buffer, mutations: ByteMutation[], tokens: string[] = []): Buffer {
  let buf = Buffer.from(base);
  for (const m of mutations) {
    const at = buf.length === 0 ? 0 : m.at % (buf.length + 1);
    switch (m.kind) {
      case 'flip':
        if (at < buf.length) buf[at] = buf[at]! ^ (1 << (m.byte % 8));
        break;
      case 'set':
        if (at < buf.length) buf[at] = m.byte;
        break;
      case 'delete':
        buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + m.len)]);
        break;
      case 'insert':
        buf = Buffer.concat([buf.subarray(0, at), Buffer.alloc(m.len, m.byte), buf.subarray(at)]);
        break;
      case 'duplicate':
        buf = Buffer.concat([buf.subarray(0, at + m.len), buf.subarray(at)]);
        break;
      case 'truncate':
        buf = buf.subarray(0, at);
        break;
      case 'token':
        if (tokens.length)
          buf = Buffer.concat([buf.subarray(0, at), Buffer.from(tokens[m.token % tokens.length]!), buf.subarray(at)]);
        break;
    }
  }
  return buf;
}
