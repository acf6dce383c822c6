// qemu-modwatch installed into a harness env the way production installs it,
// plus what the scenario tests observe it with. Not a test file itself.
//
// Layout (the same for the control runs without the hook, so both differ in
// the hook only):
// - /usr/libexec/qemu-modwatch        private dir: the executable (a copy of
//                                     dist/qemu-modwatch, mode 0755)
// - /usr/bin, /usr/libexec            copy-on-write overlays: the hook's nudge
//                                     (chmod of emulators to their own mode)
//                                     and the fake logger stay in the env
// - /opt/qemu-wrap                    private dir: an emulator wrapper script
//                                     and the module dir it points QEMU at
// - /run/systemd/journal              private dir: `socket` makes the hook log
//                                     to "the journal", i.e. run `logger
//                                     --journald`, which is a fake recording
//                                     every entry in /var/log/libvirt
// - /etc/libvirt/hooks/{qemu,daemon}.d/50-qemu-modwatch: hooks/ unchanged.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { inCI } from '../fixtures/ci';
import { sleep } from '../fixtures/processes';
import {
  MODULE_DIR,
  QEMU,
  canRun,
  isExecutable,
  timeDomainStart,
  type Env,
  type EnvOptions,
  type TestLike,
} from './harness';

function findTop(dir: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'hooks'))) return d;
    if (path.dirname(d) === d) throw new Error(`repository not found above ${dir}`);
  }
}

export const TOP = findTop(__dirname);
/** What `npm run build` produces. */
export const BUILT_EXE = path.join(TOP, 'dist/qemu-modwatch');
export const HOOK_QEMU = path.join(TOP, 'hooks/qemu.d/50-qemu-modwatch');
export const HOOK_DAEMON = path.join(TOP, 'hooks/daemon.d/50-qemu-modwatch');
export const HOOK_NAME = '50-qemu-modwatch';

/** Where the dispatchers exec it (QEMU_MODWATCH= in hooks/). */
export const EXE = '/usr/libexec/qemu-modwatch/qemu-modwatch';
export const STATE_DIR = '/var/lib/qemu-modwatch';
export const STATE_FILE = `${STATE_DIR}/state.json`;
export const MARK_FILE = `${STATE_DIR}/mark`;

export const WRAP_TOP = '/opt/qemu-wrap';
/** An emulator wrapper: sets QEMU_MODULE_DIR=WRAP_MODULES and execs the real QEMU. */
export const WRAPPER = `${WRAP_TOP}/bin/qemu-wrap`;
/** A module directory libvirt does not watch. */
export const WRAP_MODULES = `${WRAP_TOP}/modules`;

export const QXL = 'hw-display-qxl.so';

const JOURNAL_DIR = '/run/systemd/journal';
const JOURNAL_LOG = '/var/log/libvirt/fake-journal.log';
const EXEC_LOG = '/var/log/libvirt/qemu-modwatch-execs.log';

/** A shared object that is not a QEMU module (no qemu_stamp_ symbol). */
const FOREIGN_SO = ['/usr/lib/x86_64-linux-gnu/libz.so.1', '/lib/x86_64-linux-gnu/libz.so.1'];

/** Same mount layout for every env of the scenarios, with or without the hook. */
export function layout(label: string): EnvOptions {
  return {
    label,
    privateDirs: [path.posix.dirname(EXE), WRAP_TOP, JOURNAL_DIR],
    overlayDirs: ['/usr/bin', '/usr/libexec'],
    startDaemon: false,
  };
}

/** layout() plus the two dispatchers from hooks/, unchanged. */
export function hookLayout(label: string): EnvOptions {
  return {
    ...layout(label),
    hooks: { qemuD: { [HOOK_NAME]: HOOK_QEMU }, daemonD: { [HOOK_NAME]: HOOK_DAEMON } },
  };
}

/**
 * Why the scenarios cannot run here, or false. Like the harness's e2eSkip()
 * (a failure under CI), plus: the executable must have been built.
 */
export function scenarioSkip(t: TestLike): string | false {
  const r = canRun();
  let reason: string | null = r.ok ? null : r.reason;
  if (!reason && !isExecutable(BUILT_EXE)) reason = `${path.relative(TOP, BUILT_EXE)} not built (npm run build)`;
  if (!reason) {
    const stale = newestSource();
    if (stale && stale.mtimeMs > fs.statSync(BUILT_EXE).mtimeMs) {
      t.comment(
        `note: ${path.relative(TOP, stale.file)} is newer than ${path.relative(TOP, BUILT_EXE)}; testing ` +
          `the older build`,
      );
    }
    return false;
  }
  if (inCI()) t.fail(`e2e tests cannot run although CI is set: ${reason}`);
  else t.comment(`e2e tests skipped: ${reason}`);
  return reason;
}

function newestSource(): { file: string; mtimeMs: number } | null {
  let best: { file: string; mtimeMs: number } | null = null;
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        const m = fs.statSync(p).mtimeMs;
        if (!best || m > best.mtimeMs) best = { file: p, mtimeMs: m };
      }
    }
  };
  try {
    walk(path.join(TOP, 'src'));
  } catch {
    return null;
  }
  return best;
}

export interface InstallOptions {
  /**
   * Put a counting shell wrapper at EXE (the real one next to it as
   * qemu-modwatch.real): every start of the executable appends a line.
   */
  countExecs?: boolean;
  /** /etc/qemu-modwatch.conf; none (defaults) when absent. */
  config?: string;
}

const FAKE_LOGGER = `#!/bin/sh
# e2e fake logger(1): records what it is asked to log (args, then stdin).
entry=$(cat)
printf '=== %s\\n%s\\n' "$*" "$entry" >> ${JOURNAL_LOG}
`;

/** Installs the executable and the fake journal; call before env.startDaemon(). */
export async function installProduct(env: Env, opts: InstallOptions = {}): Promise<void> {
  const dir = env.hostPath(path.posix.dirname(EXE));
  const exe = env.hostPath(EXE);
  if (opts.countExecs) {
    fs.copyFileSync(BUILT_EXE, `${exe}.real`);
    fs.chmodSync(`${exe}.real`, 0o755);
    fs.writeFileSync(
      exe,
      `#!/bin/sh\n# e2e: count the starts of the executable.\necho "$*" >> ${EXEC_LOG}\nexec ${EXE}.real "$@"\n`,
      { mode: 0o755 },
    );
  } else {
    fs.copyFileSync(BUILT_EXE, exe);
  }
  fs.chmodSync(exe, 0o755);
  fs.chmodSync(dir, 0o755);
  // A journal to log to: the executable only checks that the socket exists,
  // then runs `logger --journald`.
  fs.writeFileSync(path.join(env.hostPath(JOURNAL_DIR), 'socket'), '');
  await env.writeFile('/usr/bin/logger', FAKE_LOGGER, 0o755);
  if (opts.config !== undefined) await env.setConfig(opts.config);
}

/** Starts of the executable so far (countExecs only). */
export function execCount(env: Env): number {
  return readLines(env.hostPath(EXEC_LOG)).length;
}

export function execLines(env: Env): string[] {
  return readLines(env.hostPath(EXEC_LOG));
}

function readLines(file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

export interface JournalEntry {
  /** logger's arguments. */
  args: string;
  /** FIELD=value lines of a --journald entry. */
  fields: Record<string, string>;
  message: string;
  priority: number | null;
}

/** Everything the hook logged, oldest first. */
export function journal(env: Env): JournalEntry[] {
  let text = '';
  try {
    text = fs.readFileSync(env.hostPath(JOURNAL_LOG), 'utf8');
  } catch {
    return [];
  }
  return text
    .split(/^=== /m)
    .filter(Boolean)
    .map((chunk) => {
      const [args = '', ...rest] = chunk.split('\n');
      const fields: Record<string, string> = {};
      for (const line of rest) {
        const i = line.indexOf('=');
        if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1);
      }
      const priority = fields.PRIORITY !== undefined ? Number(fields.PRIORITY) : null;
      return { args, fields, message: fields.MESSAGE ?? rest.join('\n').trim(), priority };
    });
}

/** Warnings (priority 4) and errors (3) among the journal entries. */
export function warnings<E extends { priority: number | null }>(entries: E[]): E[] {
  return entries.filter((e) => e.priority !== null && e.priority <= 4);
}

export interface StateFile {
  schema: number;
  lastAction: { at: string; trigger: string; summary: string; deleted: string[]; nudged: string[] } | null;
  [k: string]: unknown;
}

/** state.json, parsed (throws when it is not valid JSON). */
export function readState(env: Env): StateFile {
  return JSON.parse(fs.readFileSync(env.hostPath(STATE_FILE), 'utf8')) as StateFile;
}

export function mtimeNs(file: string): string | null {
  try {
    return fs.statSync(file, { bigint: true }).mtimeNs.toString();
  } catch {
    return null;
  }
}

/** Anything with libvirt's debug log: an Env, or a world of another kind. */
export interface DebugLog {
  daemonLog(): string;
}

/** Lines of libvirtd's debug log saying it ran our dispatcher for `op`. */
export function hookCalls(env: DebugLog, driver: 'qemu' | 'daemon', op?: string): string[] {
  const re = new RegExp(`Calling hook /etc/libvirt/hooks/${driver}\\.d/${HOOK_NAME} .*op=${op ?? '\\S+'}\\b`);
  return env
    .daemonLog()
    .split('\n')
    .filter((l) => re.test(l));
}

export interface HookRun {
  /** The hook file libvirt ran. */
  file: string;
  /** id= op= of libvirt's "Calling hook" line. */
  id: string;
  op: string;
  /** null when libvirtd's log has no result (yet). */
  status: number | null;
  stdout: string;
  stderr: string;
  /** From libvirtd's "Calling hook" to its result line (fork, exec, run, wait), ms; null without a result. */
  ms: number | null;
}

const LOG_ENTRY = /^(\S+) (\S+): (\d+): \w+ : (\S+) : ([\s\S]*)$/;

/** "2026-11-26 22:56:55.342+0000" -> ms since the epoch. */
function logTime(date: string, time: string): number {
  return Date.parse(`${date}T${time.replace(/([+-]\d\d)(\d\d)$/, '$1:$2')}`);
}

/**
 * Every run of our dispatchers, from libvirtd's debug log: util.hook says
 * which hook it calls, util.command (same thread, next result) what it
 * returned and printed.
 */
export function hookRuns(env: DebugLog): HookRun[] {
  const entries = env.daemonLog().split(/\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d{4}: )/);
  const waiting = new Map<string, { run: HookRun; at: number }>();
  const out: HookRun[] = [];
  for (const e of entries) {
    const m = LOG_ENTRY.exec(e);
    if (!m) continue;
    const [, date = '', time = '', thread = '', where = '', body = ''] = m;
    const at = logTime(date, time);
    const call = /^Calling hook (\S+) id=(\S+) op=(\S+) /.exec(body);
    if (where.startsWith('virRunScript:') && call) {
      const run: HookRun = {
        file: call[1] ?? '',
        id: call[2] ?? '',
        op: call[3] ?? '',
        status: null,
        stdout: '',
        stderr: '',
        ms: null,
      };
      if (run.file.endsWith(`/${HOOK_NAME}`)) out.push(run);
      waiting.set(thread, { run, at });
      continue;
    }
    const w = waiting.get(thread);
    if (!w) continue;
    const run = w.run;
    const res = /^Result status (-?\d+), stdout: '([\s\S]*)' stderr: '([\s\S]*)'\s*$/.exec(body);
    const failed = /unexpected exit status (\d+): ([\s\S]*)$/.exec(body);
    if (where.startsWith('virCommandRun:') && res) {
      run.status = Number(res[1]);
      run.stdout = res[2] ?? '';
      run.stderr = res[3] ?? '';
      run.ms = at - w.at;
      waiting.delete(thread);
    } else if (where.startsWith('virCommandWait:') && failed) {
      run.status = Number(failed[1]);
      run.stderr = (failed[2] ?? '').trim();
      run.ms = at - w.at;
      waiting.delete(thread);
    }
  }
  return out;
}

/**
 * The mean time of each hook as libvirt timed it ("qemu prepare 5.6 ms
 * (20), ..., daemon start 41 ms (1)"): for the test's output and the README.
 */
export function hookCost(runs: HookRun[]): string {
  const byOp = new Map<string, number[]>();
  for (const r of runs) {
    if (r.ms === null) continue;
    const key = `${/\/daemon(\.d\/|$)/.test(r.file) ? 'daemon' : 'qemu'} ${r.op}`;
    byOp.set(key, [...(byOp.get(key) ?? []), r.ms]);
  }
  const mean = (xs: number[]) => Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 10) / 10;
  return [...byOp].map(([op, ms]) => `${op} ${mean(ms)} ms (${ms.length})`).join(', ');
}

function foreignSharedObject(): Buffer {
  for (const p of FOREIGN_SO) {
    try {
      return fs.readFileSync(p);
    } catch {
      /* next */
    }
  }
  throw new Error(`no foreign shared object found (${FOREIGN_SO.join(', ')})`);
}

export interface InPlaceChange {
  inoBefore: string;
  inoAfter: string;
  dirMtimeBefore: string;
  dirMtimeAfter: string;
}

/**
 * Overwrites a module in place (same inode, O_TRUNC + write, so the
 * directory's mtime does not move) with a shared object from another
 * build: QEMU refuses to load it, as after a half-done upgrade. `world`
 * maps its paths to the host's: an Env, or a systemd container.
 */
export function replaceModuleInPlace(
  world: { hostPath(p: string): string },
  nsDir: string,
  name: string,
): InPlaceChange {
  const dir = world.hostPath(nsDir);
  const file = path.join(dir, name);
  const bytes = foreignSharedObject();
  const before = fs.statSync(file, { bigint: true });
  const dirBefore = fs.statSync(dir, { bigint: true });
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_TRUNC);
  try {
    fs.writeSync(fd, bytes);
  } finally {
    fs.closeSync(fd);
  }
  const after = fs.statSync(file, { bigint: true });
  const dirAfter = fs.statSync(dir, { bigint: true });
  return {
    inoBefore: before.ino.toString(),
    inoAfter: after.ino.toString(),
    dirMtimeBefore: dirBefore.mtimeNs.toString(),
    dirMtimeAfter: dirAfter.mtimeNs.toString(),
  };
}

/**
 * The wrapper-emulator setup, before the daemon starts: WRAP_MODULES holds
 * every module but hw-display-qxl.so, and so does the compiled-in module
 * dir, because QEMU falls back to it (QEMU_MODULE_DIR first, then
 * CONFIG_QEMU_MODDIR): qxl must be in neither for its absence to show.
 */
export function setUpWrapper(env: Env): void {
  const modules = env.hostPath(WRAP_MODULES);
  fs.mkdirSync(modules, { recursive: true, mode: 0o755 });
  const std = env.hostPath(MODULE_DIR);
  for (const n of fs.readdirSync(std)) {
    if (n.endsWith('.so') && n !== QXL) fs.copyFileSync(path.join(std, n), path.join(modules, n));
  }
  fs.renameSync(path.join(std, QXL), path.join(env.dir, `${QXL}.aside`));
  const bin = path.dirname(env.hostPath(WRAPPER));
  fs.mkdirSync(bin, { recursive: true, mode: 0o755 });
  fs.writeFileSync(
    env.hostPath(WRAPPER),
    `#!/bin/sh\n# QEMU with a private module directory.\nQEMU_MODULE_DIR=${WRAP_MODULES}\nexport ` +
      `QEMU_MODULE_DIR\nexec ${QEMU} "$@"\n`,
    { mode: 0o755 },
  );
  fs.chmodSync(env.hostPath(WRAPPER), 0o755);
}

/** Puts hw-display-qxl.so (the real one) into WRAP_MODULES. */
export function addQxlToWrapperDir(env: Env): void {
  fs.copyFileSync(path.join(env.dir, `${QXL}.aside`), path.join(env.hostPath(WRAP_MODULES), QXL));
}

/**
 * Identity of a cache entry file: inode and mtime. The inode alone is not
 * enough: after a deletion, ext4 may give libvirt's next file the same one.
 */
/** A cache entry's identity (inode and mtime), or 'absent'. */
export function entryKey(f: { ino: string; mtimeNs: string } | undefined): string {
  return f ? `${f.ino}@${f.mtimeNs}` : 'absent';
}

/**
 * Watches the cache dir from the host side every few ms and records each
 * distinct state of one cache entry: entryKey(), or 'absent'. libvirt
 * creates the file, then writes it: one file written anew can show as two
 * states of one inode.
 */
export function watchCacheEntry(env: Env, name: string, everyMs = 5): { stop(): string[] } {
  const file = path.join(env.hostPath('/var/cache/libvirt/qemu/capabilities'), name);
  const seen: string[] = [];
  const look = () => {
    let s: string;
    try {
      const st = fs.statSync(file, { bigint: true });
      s = entryKey({ ino: st.ino.toString(), mtimeNs: st.mtimeNs.toString() });
    } catch {
      s = 'absent';
    }
    if (seen.at(-1) !== s) seen.push(s);
  };
  look();
  const timer = setInterval(look, everyMs);
  return {
    stop() {
      clearInterval(timer);
      look();
      return seen;
    },
  };
}

/**
 * The dispatcher skips the executable only when nothing it watches is newer
 * than the mark, which the executable back-dates by 2 s. After a probe wrote
 * a cache entry (a watched dir changed), one full run more than 2 s later
 * makes the fast path hold: this start/destroy does that run.
 */
export async function settle(env: { virsh(...args: string[]): Promise<unknown> }, domain: string): Promise<void> {
  await sleep(2_100);
  await env.virsh('start', domain);
  await env.virsh('destroy', domain);
}

// ---------------------------------------------------------------------------
// XML comparison for save/restore

export interface LineDiff {
  before: string[];
  after: string[];
}

/** Line hunks that differ between a and b (LCS), whitespace-trimmed. */
export function diffLines(a: string, b: string): LineDiff[] {
  const x = a
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const y = b
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const n = x.length;
  const m = y.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = x[i] === y[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: LineDiff[] = [];
  let cur: LineDiff | null = null;
  let i = 0;
  let j = 0;
  const flush = () => {
    if (cur) out.push(cur);
    cur = null;
  };
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      flush();
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) {
      cur ??= { before: [], after: [] };
      cur.after.push(y[j]!);
      j++;
    } else {
      cur ??= { before: [], after: [] };
      cur.before.push(x[i]!);
      i++;
    }
  }
  flush();
  return out;
}

// ---------------------------------------------------------------------------
// Start time with and without the hook

export interface StartMeasurement {
  /** Means, ms. */
  withHookMs: number;
  withoutHookMs: number;
  ratio: number;
  runs: number;
  samples: { withHook: number[]; withoutHook: number[] };
  /** Medians, ms, and their ratio: less sensitive to a loaded machine. */
  medians: { withHookMs: number; withoutHookMs: number; ratio: number };
  /**
   * What the dispatcher runs during the measured starts cost as libvirtd
   * saw them (its debug log: hook call to result), mean ms per start, by op.
   */
  hookMsPerStart: Record<string, number>;
}

/** Two envs, identical but for the hook; the tiny guest 'bench' defined and warm in both. */
export async function benchEnvs(
  start: (opts: EnvOptions) => Promise<Env>,
): Promise<{ withHook: Env; withoutHook: Env }> {
  const withoutHook = await start(layout('modwatch-bench-without'));
  await withoutHook.startDaemon();
  const withHook = await start(hookLayout('modwatch-bench-with'));
  await installProduct(withHook);
  await withHook.startDaemon();
  for (const env of [withoutHook, withHook]) {
    await env.defineDomain('bench');
    await settle(env, 'bench');
  }
  return { withHook, withoutHook };
}

const mean = (xs: number[]) => Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 10) / 10;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : Math.round(((s[mid - 1]! + s[mid]!) / 2) * 10) / 10;
};
const ratio = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;

/**
 * `runs` starts in each env, interleaved (the order alternates every run),
 * each followed by a destroy; means in ms. With the hook installed and
 * nothing changed, this is the dispatcher's fast path.
 */
export async function measureStarts(
  envs: { withHook: Env; withoutHook: Env },
  runs: number,
): Promise<StartMeasurement> {
  const samples = { withHook: [] as number[], withoutHook: [] as number[] };
  const runsBefore = hookRuns(envs.withHook).length;
  const one = async (env: Env, into: number[]) => {
    into.push(await timeDomainStart(env, 'bench'));
    await env.virsh('destroy', 'bench');
  };
  for (let i = 0; i < runs; i++) {
    if (i % 2 === 0) {
      await one(envs.withHook, samples.withHook);
      await one(envs.withoutHook, samples.withoutHook);
    } else {
      await one(envs.withoutHook, samples.withoutHook);
      await one(envs.withHook, samples.withHook);
    }
  }
  const withHookMs = mean(samples.withHook);
  const withoutHookMs = mean(samples.withoutHook);
  const med = { withHookMs: median(samples.withHook), withoutHookMs: median(samples.withoutHook), ratio: 0 };
  med.ratio = ratio(med.withHookMs, med.withoutHookMs);
  const hookMsPerStart: Record<string, number> = {};
  for (const r of hookRuns(envs.withHook).slice(runsBefore)) {
    if (['prepare', 'start', 'started'].includes(r.op) && r.ms !== null)
      hookMsPerStart[r.op] = (hookMsPerStart[r.op] ?? 0) + r.ms / runs;
  }
  for (const k of Object.keys(hookMsPerStart)) hookMsPerStart[k] = Math.round(hookMsPerStart[k]! * 10) / 10;
  return {
    withHookMs,
    withoutHookMs,
    ratio: ratio(withHookMs, withoutHookMs),
    runs,
    samples,
    medians: med,
    hookMsPerStart,
  };
}
