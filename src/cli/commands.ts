import * as fs from 'node:fs';
import * as path from 'node:path';
import { assess } from '../core/decide';
import { escapeControl as esc } from '../core/text';
import { runPipeline } from '../app/pipeline';
import { deleteEntries, nudge, type ActResult } from '../app/carry-out';
import { writeFileAtomic } from '../os/atomic-file';
import { readCacheView } from '../host/cache-dir';
import { saveCacheMemo } from '../store/cache-memo';
import { MARK_MARGIN_MS } from '../store/fast-path';
import { sha256Hex } from '../os/file-info';
import { withStateLock } from '../store/lock';
import { log, logTarget } from '../os/log';
import type { Context } from '../app/look';
import { observe } from '../app/look';
import { stateFiles } from '../host/paths';
import { loadState, writeState, type LastAction } from '../store/state-store';
import { VERSION } from '../version';
import { formatNagios } from './format-nagios';
import { formatPrometheus } from './format-prometheus';
import { formatText, table } from './format-text';
import type { Format, NudgeOption } from './options';
import { buildReport, nsToIso, type Report } from './report';

export interface Output {
  stdout: string;
  stderr?: string;
  exitCode: number;
}

/** The file node_exporter's textfile collector reads; it ignores names not ending in .prom. */
export const TEXTFILE_NAME = 'qemu_modwatch.prom';

export interface CheckOptions {
  format: Format;
  /** With --textfile, stdout stays empty unless a format was asked for. */
  formatGiven: boolean;
  textfile?: string | undefined;
  /** Text: every module of a change or finding on its own line. */
  verbose?: boolean;
}

/** Read-only: writes no state and deletes nothing (the textfile aside). */
export function runCheck(ctx: Context, opts: CheckOptions): Output {
  const report = currentReport(ctx);
  const out: Output = { stdout: opts.textfile && !opts.formatGiven ? '' : render(report, opts.format, opts.verbose), exitCode: report.exitCode };
  if (opts.textfile) {
    const problem = writeTextfile(opts.textfile, formatPrometheus(report));
    // The metrics carry the findings; a timer writing them has succeeded.
    if (problem) Object.assign(out, { stderr: `qemu-modwatch: ${problem}\n`, exitCode: 3 });
    else out.exitCode = 0;
  }
  return out;
}

export function currentReport(ctx: Context): Report {
  const observed = observe(ctx, [], { guests: true });
  return buildReport(observed, assess(observed));
}

export function render(report: Report, format: Format, verbose = false): string {
  if (format === 'json') return JSON.stringify(report, null, 2) + '\n';
  if (format === 'nagios') return formatNagios(report);
  if (format === 'prometheus') return formatPrometheus(report);
  return formatText(report, { verbose });
}

/** Writes DIR/qemu_modwatch.prom so that a reader never sees half of it; returns the problem, if any. */
export function writeTextfile(dir: string, text: string): string | null {
  try {
    writeFileAtomic(path.join(path.resolve(dir), TEXTFILE_NAME), text, { mode: 0o644 });
    return null;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return `cannot write ${path.join(dir, TEXTFILE_NAME)}: ${err.code ?? err.message}`;
  }
}

export async function runAccept(ctx: Context, json: boolean): Promise<Output> {
  const files = stateFiles(ctx.paths);
  return withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), () => {
    const observed = observe(ctx);
    const previous = observed.loaded.kind === 'ok' ? observed.loaded.state.lastAction : null;
    writeState(ctx.paths.hostNoFollow(files.state), {
      schema: 1,
      writtenBy: VERSION,
      baseline: observed.fingerprint,
      lastAction: previous,
    });
    saveCacheMemo(ctx.paths.hostNoFollow(files.cacheMemo), observed.cacheMemo);
    const modules = observed.fingerprint.dirs.reduce((n, d) => n + d.modules.length, 0);
    const dirs = observed.fingerprint.dirs.length;
    const summary = { accepted: true, modules, moduleDirs: dirs, emulators: observed.fingerprint.emulators.length };
    return {
      stdout: json ? JSON.stringify(summary) + '\n' : `baseline recorded: ${modules} modules in ${dirs} module directories\n`,
      exitCode: 0,
    };
  });
}

export interface RefreshOptions {
  json: boolean;
  textfile?: string | undefined;
  nudge?: NudgeOption | undefined;
}

/**
 * The hooks' work on demand, for package-manager hooks and timers: exits 0
 * whatever it finds or fails to do (a package transaction must not fail
 * over the capabilities cache); problems go to stderr and the log.
 */
export async function runRefresh(ctx: Context, opts: RefreshOptions): Promise<Output> {
  const run = opts.nudge ? { ...ctx, config: { ...ctx.config, nudge: opts.nudge } } : ctx;
  const result = await runPipeline(run, { kind: 'refresh' });
  // What is left after acting: guests at risk and refused modules are not
  // for refresh to fix, but whoever ran it should hear of them.
  const report = currentReport(ctx);
  const problems: string[] = result.act.errors.map((e) => `qemu-modwatch: refresh: ${e}\n`);
  if (opts.textfile) {
    const problem = writeTextfile(opts.textfile, formatPrometheus(report));
    if (problem) problems.push(`qemu-modwatch: ${problem}\n`);
  }
  const summary = {
    refreshed: true,
    deleted: result.act.deleted,
    nudged: result.act.nudged,
    errors: result.act.errors,
    recorded: result.recorded,
    pending: result.pending,
    report,
  };
  if (opts.json) return { stdout: JSON.stringify(summary, null, 2) + '\n', stderr: problems.join(''), exitCode: 0 };
  const did: string[] = [];
  if (result.act.deleted.length) did.push(`deleted ${plural(result.act.deleted.length, 'capabilities cache entry', 'capabilities cache entries')}`);
  if (result.act.nudged.length) did.push(`nudged ${result.act.nudged.map(esc).join(', ')}`);
  if (result.recorded) did.push('recorded the baseline');
  const lines = [`qemu-modwatch refresh: ${did.length ? did.join('; ') : 'nothing to do'}`];
  if (result.pending) lines.push('  not everything could be done; the hooks try again at the next daemon or guest start');
  const left = report.findings.filter((f) => f.level !== 'OK');
  if (left.length) lines.push('', 'Still needs attention', ...table(left.map((f) => [f.level, esc(f.message)])));
  const advice = report.advice.filter((a) => !a.includes("'qemu-modwatch refresh'") && !a.includes("'qemu-modwatch accept'"));
  if (advice.length) lines.push('', ...advice.map((a) => `Next: ${esc(a)}`));
  return { stdout: lines.join('\n') + '\n', stderr: problems.join(''), exitCode: 0 };
}

export interface InvalidateOptions {
  json: boolean;
  emulator?: string | undefined;
  nudge?: NudgeOption | undefined;
  dryRun: boolean;
}

/**
 * Deletes cache entries (all, or one emulator's) and nudges, whether or not
 * anything changed. Only deleteEntries removes files, and it removes only
 * regular files named like a cache entry.
 */
export async function runInvalidate(ctx: Context, opts: InvalidateOptions): Promise<Output> {
  const files = stateFiles(ctx.paths);
  const mode = opts.nudge ?? ctx.config.nudge;
  const work = () => {
    const cache = readCacheView(ctx.paths);
    // libvirt names the file after the path as spelled; the header says the same unless damaged.
    const byName = opts.emulator ? sha256Hex(opts.emulator) + '.xml' : null;
    const chosen = cache.entries.filter((e) => !opts.emulator || e.emulator === opts.emulator || e.file === byName);
    const leftAlone = (e: (typeof chosen)[number]) => e.error !== null && /symlink|not a regular file/.test(e.error);
    const selected = chosen.filter((e) => !leftAlone(e));
    const skipped = chosen.filter(leftAlone).map((e) => ({ file: e.file, reason: e.error! }));
    // The daemon keeps what it loaded in memory: nudge the emulators even
    // when their files are already gone.
    const observed = observe(ctx);
    const known = observed.fingerprint.emulators.filter((e) => e.kind !== 'missing' && (e.source === 'path' || e.source === 'config')).map((e) => e.path);
    const targets = opts.emulator ? [opts.emulator] : [...new Set([...selected.flatMap((e) => (e.emulator ? [e.emulator] : [])), ...known])].sort();
    const act: ActResult = { deleted: [], nudged: [], errors: [] };
    if (opts.dryRun) {
      act.deleted = selected.map((e) => e.file);
      if (mode === 'emulator-ctime') act.nudged = targets.filter((t) => fs.existsSync(ctx.paths.host(t)));
      else if (mode === 'moddir-mtime' && observed.libvirtModdir) act.nudged = [observed.libvirtModdir];
    } else {
      deleteEntries(ctx.paths, selected.map((e) => e.file), act);
      if (mode !== 'none') nudge(ctx.paths, mode, targets, observed.libvirtModdir, act);
      recordAction(ctx, act);
    }
    const emulatorOf = new Map(cache.entries.map((e) => [e.file, e.emulator]));
    return { act, skipped, emulatorOf };
  };
  const { act, skipped, emulatorOf } = opts.dryRun ? work() : await withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), work);
  // For the journal's record of who touched the cache; on a terminal stdout already says it.
  if (!opts.dryRun && (act.deleted.length || act.nudged.length) && logTarget(ctx.paths) !== 'stderr') {
    log(ctx.paths, { priority: 'notice', message: `invalidate: ${actionSummary(act)}`, fields: { TRIGGER: 'invalidate', DELETED: act.deleted.join(' '), NUDGED: act.nudged.join(' ') } });
  }
  const exitCode = act.errors.length ? 1 : 0;
  if (opts.json) {
    const out = {
      dryRun: opts.dryRun,
      emulator: opts.emulator ?? null,
      nudge: mode,
      deleted: act.deleted.map((file) => ({ file, emulator: emulatorOf.get(file) ?? null })),
      nudged: act.nudged,
      skipped,
      errors: act.errors,
    };
    return { stdout: JSON.stringify(out, null, 2) + '\n', exitCode };
  }
  const would = opts.dryRun ? 'would delete' : 'deleted';
  const lines: string[] = [];
  if (opts.dryRun) lines.push('dry run: nothing is changed');
  lines.push(`${would} ${plural(act.deleted.length, 'capabilities cache entry', 'capabilities cache entries')}${act.deleted.length ? ':' : ''}`);
  lines.push(...table(act.deleted.map((f) => [f, esc(emulatorOf.get(f) ?? '?')])));
  if (mode === 'none') lines.push('no nudge (--nudge none)');
  else lines.push(`${opts.dryRun ? 'would nudge' : 'nudged'} (${mode}): ${act.nudged.length ? act.nudged.map(esc).join(', ') : 'nothing'}`);
  for (const s of skipped) lines.push(`left alone: ${s.file} (${esc(s.reason)})`);
  return { stdout: lines.join('\n') + '\n', stderr: act.errors.map((e) => `qemu-modwatch: ${e}\n`).join(''), exitCode };
}

/** An invalidate is recorded as the last action; the baseline stays as it was. */
function recordAction(ctx: Context, act: ActResult): void {
  if (!act.deleted.length && !act.nudged.length) return;
  const file = ctx.paths.host(stateFiles(ctx.paths).state);
  const loaded = loadState(file);
  if (loaded.kind !== 'ok') return;
  const lastAction: LastAction = { at: new Date().toISOString(), trigger: 'invalidate', summary: actionSummary(act), deleted: act.deleted, nudged: act.nudged };
  writeState(file, { ...loaded.state, lastAction });
}

function actionSummary(act: ActResult): string {
  return `deleted ${act.deleted.length} capabilities cache entries${act.nudged.length ? `, nudged ${act.nudged.join(', ')}` : ''}`;
}

export interface StatusReport {
  stateFile: string;
  state: 'ok' | 'none' | 'corrupt';
  problem: string | null;
  writtenBy: string | null;
  baseline: { takenAt: string; ageSeconds: number; modules: number; moduleDirs: number; emulators: number } | null;
  lastAction: (LastAction & { ageSeconds: number }) | null;
  /** When the hooks last ran a full check (their fast path's mark); null when the next one will. */
  lastFullCheck: { at: string; ageSeconds: number } | null;
}

export function runStatus(ctx: Context, json: boolean, now = new Date()): Output {
  const files = stateFiles(ctx.paths);
  const loaded = loadState(ctx.paths.host(files.state));
  const age = (iso: string) => Math.max(0, Math.round((now.getTime() - Date.parse(iso)) / 1000));
  const mark = (() => {
    try {
      return fs.statSync(ctx.paths.host(files.mark)).mtimeMs;
    } catch {
      return null;
    }
  })();
  const s: StatusReport = {
    stateFile: files.state,
    state: loaded.kind,
    problem: loaded.kind === 'corrupt' ? loaded.reason : null,
    writtenBy: loaded.kind === 'ok' ? loaded.state.writtenBy : null,
    baseline: null,
    lastAction: null,
    // The mark is back-dated by a margin; undo it to tell when the check began.
    lastFullCheck: mark !== null ? { at: new Date(mark + MARK_MARGIN_MS).toISOString(), ageSeconds: age(new Date(mark + MARK_MARGIN_MS).toISOString()) } : null,
  };
  if (loaded.kind === 'ok') {
    const b = loaded.state.baseline;
    const takenAt = nsToIso(b.takenAtNs);
    s.baseline = { takenAt, ageSeconds: age(takenAt), modules: b.dirs.reduce((n, d) => n + d.modules.length, 0), moduleDirs: b.dirs.length, emulators: b.emulators.length };
    const a = loaded.state.lastAction;
    if (a && typeof a.at === 'string') s.lastAction = { ...a, ageSeconds: age(a.at) };
  }
  const exitCode = loaded.kind === 'corrupt' ? 1 : 0;
  if (json) return { stdout: JSON.stringify(s, null, 2) + '\n', exitCode };
  const rows: string[][] = [['State', `${esc(s.stateFile)}${s.writtenBy ? ` (written by qemu-modwatch ${esc(s.writtenBy)})` : ''}`]];
  if (loaded.kind === 'none') rows.push(['Baseline', "none recorded yet (the hooks record one on their first run; or 'qemu-modwatch accept')"]);
  if (loaded.kind === 'corrupt') rows.push(['Baseline', `unusable: ${esc(loaded.reason)}`]);
  if (s.baseline) {
    rows.push(['Baseline', `${s.baseline.takenAt} (${ago(s.baseline.ageSeconds)}): ${s.baseline.modules} modules in ${plural(s.baseline.moduleDirs, 'module directory', 'module directories')}`]);
  }
  if (s.lastAction) {
    const a = s.lastAction;
    rows.push(['Last action', `${a.at} (${ago(a.ageSeconds)}) by ${esc(a.trigger)}: ${esc(a.summary)}`]);
  } else if (loaded.kind === 'ok') {
    rows.push(['Last action', 'none yet']);
  }
  rows.push(['Last full check', s.lastFullCheck ? `${s.lastFullCheck.at} (${ago(s.lastFullCheck.ageSeconds)}), by a hook or refresh` : 'none recorded; the next hook runs one']);
  return { stdout: table(rows).map((l) => l.slice(2)).join('\n') + '\n', exitCode };
}

function ago(seconds: number): string {
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172_800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86_400)} days ago`;
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

