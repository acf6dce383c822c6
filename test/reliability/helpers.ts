import { spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BARE_ENV } from '../fixtures/hooks';
import { shq } from '../fixtures/shell';
import { EMULATOR, EXE, type RunResult, type Sysroot } from '../fixtures/sysroot';

// Running the built hook the way libvirt does, but inside a private mount
// namespace prepared by a shell snippet (read-only bind mounts, a tiny
// tmpfs), optionally without the capabilities that let root ignore file
// modes, and looking at the sysroot from inside that namespace afterwards.

export const isRoot = process.getuid?.() === 0;
export const needsRoot = isRoot ? false : 'needs root (mount namespaces, mknod, setpriv)';

/**
 * setpriv prefix that drops the two capabilities with which root reads
 * anything whatever its mode: root then meets EACCES like everyone else.
 */
export const WITHOUT_DAC = ['setpriv', '--inh-caps=-all', '--bounding-set=-dac_override,-dac_read_search', '--'];

export interface NsRun extends RunResult {
  ms: number;
}

export interface NsOptions {
  /** Shell run before the hook, inside the namespace; any failure aborts. */
  setup?: string;
  /** Shell run after the hook, inside the namespace (the hook's status is kept). */
  after?: string;
  input?: string | Buffer;
  env?: Record<string, string>;
  /** Command words put before the executable (e.g. WITHOUT_DAC). */
  wrap?: string[];
  /** Raw shell words for the hook's arguments instead of `args` (to pass bytes that are not UTF-8). */
  rawArgs?: string;
}

/** `qemu-modwatch --root R hook DRIVER ARGS`, in a private mount namespace. */
export function hookInNs(s: Sysroot, driver: 'qemu' | 'daemon', args: string[], opts: NsOptions = {}): NsRun {
  const big = opts.input !== undefined && opts.input.length > 1024 * 1024;
  const stdinFd = big ? fs.openSync(s.write('/tmp/stdin', opts.input!), 'r') : null;
  const argWords = opts.rawArgs ?? '"$@"';
  const script = [
    'set -e',
    opts.setup ?? ':',
    'set +e',
    `${(opts.wrap ?? []).map(shq).join(' ')} ${shq(EXE)} --root ${shq(s.root)} hook ${driver} ${argWords}`,
    'rc=$?',
    opts.after ?? ':',
    'exit $rc',
  ].join('\n');
  const start = performance.now();
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', ...args], {
    stdio: [stdinFd ?? 'pipe', 'pipe', 'pipe'],
    input: big ? undefined : (opts.input ?? ''),
    encoding: 'utf8',
    env: { ...BARE_ENV, ...opts.env },
    timeout: 120_000,
  });
  const ms = performance.now() - start;
  if (stdinFd !== null) fs.closeSync(stdinFd);
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms };
}

/** Shell that hides `dir` behind a tmpfs of `size` holding a copy of what was there. */
export function tinyTmpfs(s: Sysroot, dir: string, size: string): string {
  const copy = s.host('/tmp/tmpfs-copy');
  return [
    `rm -rf ${shq(copy)}`,
    `cp -a ${shq(dir)} ${shq(copy)}`,
    `mount -t tmpfs -o size=${size},mode=0755 tmpfs ${shq(dir)}`,
    `cp -a ${shq(copy)}/. ${shq(dir)}/`,
    `rm -rf ${shq(copy)}`,
  ].join('\n');
}

/** Shell that makes `dir` a read-only bind mount of itself. */
export function readOnly(dir: string): string {
  return `mount --bind ${shq(dir)} ${shq(dir)}\nmount -o remount,bind,ro ${shq(dir)}`;
}

/** Names and content hashes of the files in the cache directory (symlinks by their target). */
export function cacheSnapshot(s: Sysroot): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of s.cacheFiles()) {
    const p = path.join(s.cacheDir(), name);
    const st = fs.lstatSync(p);
    if (st.isSymbolicLink()) out[name] = `-> ${fs.readlinkSync(p)}`;
    else if (st.isFile()) out[name] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    else out[name] = `mode ${st.mode.toString(8)}`;
  }
  return out;
}

/** The parsed state, or a string saying why it does not parse as the schema the program writes. */
export function stateOf(s: Sysroot):
  | {
      schema: number;
      baseline: { dirs: { path: string; modules: { name: string; buildId: string | null }[] }[] };
      lastAction: unknown;
    }
  | string {
  let text: string;
  try {
    text = fs.readFileSync(s.statePath(), 'utf8');
  } catch (e) {
    return `unreadable: ${(e as Error).message}`;
  }
  try {
    const st = JSON.parse(text);
    if (st?.schema !== 1 || !Array.isArray(st?.baseline?.dirs)) return 'not a schema 1 state';
    return st;
  } catch {
    return `not JSON (${text.length} bytes)`;
  }
}

/** Modules and build-ids recorded in the baseline for one directory. */
export function baselineModules(s: Sysroot, dir: string): Record<string, string | null> | string {
  const st = stateOf(s);
  if (typeof st === 'string') return st;
  const d = st.baseline.dirs.find((x) => x.path === dir);
  return Object.fromEntries((d?.modules ?? []).map((m) => [m.name, m.buildId]));
}

/** Runs the hook with the domain XML on stdin, asynchronously (many at once). */
export function spawnHook(s: Sysroot, args: string[], input: string, env: Record<string, string> = {}) {
  const child = spawn(EXE, ['--root', s.root, 'hook', 'qemu', ...args], {
    env: { ...BARE_ENV, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  child.stdin.on('error', () => undefined);
  child.stdin.end(input);
  const done = new Promise<RunResult & { signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

/** A small deterministic PRNG (mulberry32), so a failing run can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export { EMULATOR };
