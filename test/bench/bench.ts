// `npm run bench`: every measurement next to its reference, taken in the
// same run and interleaved (these machines are noisy), reported as a
// ratio. Prints one table; `--json` prints the rows as JSON instead.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { domainXml, installDispatchers } from '../fixtures/hooks';
import { EMULATOR, EXE, MODDIR, Sysroot } from '../fixtures/sysroot';

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
// --start-only: the start-up rows (hooks, code caches), not the scans.
const START_ONLY = process.argv.includes('--start-only');
const BARE = { LC_ALL: 'C', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root' };

interface Row {
  what: string;
  ms: number;
  reference: string;
  refMs: number;
  ratio: number;
  target: string;
}
const rows: Row[] = [];

function timeOnce(cmd: string[], input?: string, env: Record<string, string> = BARE): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd[0]!, cmd.slice(1), { input: input ?? '', env, stdio: ['pipe', 'ignore', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0 && r.status !== 1) throw new Error(`${cmd.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Runs a and b alternately RUNS times (after one warm-up each); medians. */
function sideBySide(a: () => number, b: () => number): [number, number] {
  a();
  b();
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    as.push(a());
    bs.push(b());
  }
  return [median(as), median(bs)];
}

function compare(what: string, a: () => number, reference: string, b: () => number, target: string): Row {
  const [ms, refMs] = sideBySide(a, b);
  const row = { what, ms, reference, refMs, ratio: ms / refMs, target };
  rows.push(row);
  return row;
}

/**
 * Runs every command of a group in turn, RUNS rounds (after one warm-up
 * round), and adds a row per command against the group's first: medians.
 */
function compareGroup(what: string, reference: [string, () => number], cmds: [string, () => number][]): void {
  const all = [reference, ...cmds];
  for (const [, f] of all) f();
  const times = all.map((): number[] => []);
  for (let i = 0; i < RUNS; i++) all.forEach(([, f], j) => times[j]!.push(f()));
  const refMs = median(times[0]!);
  cmds.forEach(([name], j) => {
    const ms = median(times[j + 1]!);
    rows.push({ what: `${what}, ${name}`, ms, reference: reference[0], refMs, ratio: ms / refMs, target: 'least' });
  });
}

function peakRssKiB(cmd: string[], input: string): number | null {
  if (!fs.existsSync('/usr/bin/time')) return null;
  const r = spawnSync('/usr/bin/time', ['-f', '%M', ...cmd], { input, env: BARE, encoding: 'utf8' });
  const m = /(\d+)\s*$/.exec(r.stderr.trim());
  return m ? Number(m[1]) : null;
}

const tmp: string[] = [];
function generated(modules: number, config?: string): Sysroot {
  const s = Sysroot.qemuHost(Array.from({ length: modules }, (_, i) => `block-m${i}.so`));
  if (config) s.writeConfig(config);
  tmp.push(s.root);
  return s;
}

/**
 * Files changed within 2 s of a baseline are read again (their times may
 * be too coarse to trust), so a baseline meant for the stat-only path is
 * taken once the files are older than that.
 */
function acceptSettled(s: Sysroot): void {
  spawnSync('sleep', ['2.2']);
  s.run(['accept']);
}

try {
  const version = () => timeOnce([EXE, '--version']);

  // --check with a baseline on this host's modules: a copy of the module
  // directory and emulators in a sysroot, so the host's state is not touched.
  const hostRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-bench-host-'));
  tmp.push(hostRoot);
  const host = new Sysroot(hostRoot);
  if (!START_ONLY && fs.existsSync(MODDIR)) {
    fs.mkdirSync(path.dirname(host.host(MODDIR)), { recursive: true });
    fs.cpSync(MODDIR, host.host(MODDIR), { recursive: true, preserveTimestamps: true });
    for (const e of fs.readdirSync('/usr/bin').filter((n) => n.startsWith('qemu-system-'))) {
      fs.mkdirSync(host.host('/usr/bin'), { recursive: true });
      fs.copyFileSync(`/usr/bin/${e}`, host.host(`/usr/bin/${e}`));
    }
    acceptSettled(host);
    compare(
      '--check, baseline, host modules',
      () => timeOnce([EXE, '--root', hostRoot, '--check']),
      '--version',
      version,
      '<= 1.15',
    );
  }

  // Scan cost and how it grows: stat-only (baseline present), full read
  // (no baseline: every ELF parsed), content hash (no baseline, hashing).
  for (const n of START_ONLY ? [] : [25, 200, 10_000]) {
    const s = generated(n);
    acceptSettled(s);
    compare(
      `stat-only scan, ${n} modules`,
      () => timeOnce([EXE, '--root', s.root, '--check']),
      '--version',
      version,
      n === 10_000 ? '< 300 ms over' : 'linear',
    );
    const fresh = generated(n);
    compare(
      `full read, no baseline, ${n} modules`,
      () => timeOnce([EXE, '--root', fresh.root, '--check']),
      '--version',
      version,
      'linear',
    );
    const hashed = generated(n, '[modules]\ncontent_hash = yes\n');
    compare(
      `content hash, no baseline, ${n} modules`,
      () => timeOnce([EXE, '--root', hashed.root, '--check']),
      '--version',
      version,
      'linear',
    );
  }

  // Issue "hooks": the dispatcher and the hook itself on a settled host.
  const s = generated(37);
  s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  acceptSettled(s);
  const hooks = installDispatchers(s);
  const xml = domainXml('bench');
  spawnSync(hooks.qemu, ['bench', 'prepare', 'begin', '-'], { input: xml, env: BARE });
  const settle = () => fs.utimesSync(s.host('/var/lib/qemu-modwatch/mark'), new Date(), new Date());
  settle();
  compare(
    'qemu dispatcher, no change (fast path)',
    () => timeOnce([hooks.qemu, 'bench', 'prepare', 'begin', '-'], xml),
    '/bin/sh -c true',
    () => timeOnce(['/bin/sh', '-c', 'true']),
    '< 10 ms, no Node',
  );
  compare(
    'qemu dispatcher, ignored op (stopped)',
    () => timeOnce([hooks.qemu, 'bench', 'stopped', 'end', '-'], xml),
    '/bin/true',
    () => timeOnce(['/bin/true']),
    '~1',
  );
  compare(
    'full prepare hook, no change',
    () => timeOnce([EXE, '--root', s.root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'], xml),
    '--version',
    version,
    '<= 1.10',
  );
  // The distro-Node.js packages' executable: the bundle, started by node
  // (the one running this), against the single executable.
  const bundle = [process.execPath, path.join(path.dirname(EXE), 'qemu-modwatch.cjs')];
  compare('--version, bundle on node', () => timeOnce([...bundle, '--version']), '--version', version, 'informative');
  compare(
    'prepare hook, bundle on node',
    () => timeOnce([...bundle, '--root', s.root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'], xml),
    'single executable',
    () => timeOnce([EXE, '--root', s.root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'], xml),
    'informative',
  );
  const starts = hooks.starts();

  // `npm run bench -- --code-cache`: the executable built with each kind of
  // V8 code cache (build/sea.mjs), against the one built without.
  const variants = new Map(
    (process.env.BENCH_CODE_CACHE_EXES ?? '')
      .split(',')
      .filter(Boolean)
      .map((v) => v.split('=') as [string, string]),
  );
  // Each kind against a bare node start, all interleaved, in a clean environment (env -i).
  if (variants.size) {
    const kinds = [...variants];
    const bareNode: [string, () => number] = ['node -e 0', () => timeOnce([process.execPath, '-e', '0'], '', {})];
    const hookArgs = ['--root', s.root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'];
    compareGroup(
      '--version',
      bareNode,
      kinds.map(([kind, exe]) => [kind, () => timeOnce([exe, '--version'], '', {})]),
    );
    compareGroup(
      'prepare hook, no change',
      bareNode,
      kinds.map(([kind, exe]) => [kind, () => timeOnce([exe, ...hookArgs], xml, {})]),
    );
    compareGroup(
      '--check, 37 modules',
      bareNode,
      kinds.map(([kind, exe]) => [kind, () => timeOnce([exe, '--root', s.root, '--check'], '', {})]),
    );
  }
  const none = variants.get('none');
  for (const [kind, exe] of none ? variants : []) {
    if (kind === 'none' || kind === 'snapshot') continue;
    compare(
      `--version, ${kind} code cache`,
      () => timeOnce([exe, '--version']),
      'no code cache',
      () => timeOnce([none!, '--version']),
      '< 1',
    );
    const hookArgs = ['--root', s.root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'];
    compare(
      `prepare hook, ${kind} code cache`,
      () => timeOnce([exe, ...hookArgs], xml),
      'no code cache',
      () => timeOnce([none!, ...hookArgs], xml),
      '< 1',
    );
  }

  const rss = peakRssKiB([EXE, '--root', s.root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'], xml);
  const rss10k = START_ONLY
    ? null
    : peakRssKiB([EXE, '--root', generated(10_000).root, 'hook', 'qemu', 'bench', 'prepare', 'begin', '-'], xml);

  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ runs: RUNS, rows, peakRssKiB: { hook: rss, hookFirstRun10k: rss10k } }, null, 2));
  } else {
    const fmt = (x: number) => x.toFixed(1).padStart(8);
    console.log(
      `qemu-modwatch benchmarks: medians of ${RUNS} interleaved runs, ${os.cpus().length} CPUs, ` +
        `${os.cpus()[0]?.model ?? '?'}, node ${process.version}`,
    );
    console.log(
      `${'measurement'.padEnd(42)} ${'ms'.padStart(8)}  ${'reference'.padEnd(16)} ${'ref ms'.padStart(8)} ` +
        `${'ratio'.padStart(7)} ${'+ms'.padStart(8)}  target`,
    );
    for (const r of rows) {
      console.log(
        `${r.what.padEnd(42)} ${fmt(r.ms)}  ${r.reference.padEnd(16)} ${fmt(r.refMs)} ` +
          `${r.ratio.toFixed(2).padStart(7)} ${fmt(r.ms - r.refMs)}  ${r.target}`,
      );
    }
    console.log(`executable starts during the fast-path runs: ${starts - 1} (0 expected)`);
    console.log(
      `peak RSS of the prepare hook: ${rss ?? '?'} KiB; first run over 10,000 modules: ${rss10k ?? '?'} ` +
        `KiB (target < 80 MB)`,
    );
  }
} finally {
  for (const d of tmp) fs.rmSync(d, { recursive: true, force: true });
}
