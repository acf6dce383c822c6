import * as fs from 'node:fs';
import * as path from 'node:path';
import { emptyDone, deleteEntries, nudge } from '../app/carry-out';
import { look, lookFacts, type Context } from '../app/look';
import { runPipeline } from '../app/pipeline';
import { assess } from '../core/decide';
import { actionText, type Done } from '../core/messages';
import { invalidateAction, planAccept, planInvalidate } from '../core/plan';
import { escapeControl as esc } from '../core/text';
import { moduleCount, type LastAction } from '../core/types';
import { readCacheView } from '../host/cache-dir';
import { stateFiles } from '../host/paths';
import { writeFileAtomic } from '../os/atomic-file';
import { sha256Hex } from '../os/file-info';
import { log, logTarget } from '../os/log';
import { saveCacheMemo } from '../store/cache-memo';
import { MARK_MARGIN_MS } from '../store/fast-path';
import { withStateLock } from '../store/lock';
import { loadState, recordState } from '../store/state-store';
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
  const out: Output = {
    stdout: opts.textfile && !opts.formatGiven ? '' : render(report, opts.format, opts.verbose),
    exitCode: report.exitCode,
  };
  if (opts.textfile) {
    const problem = writeTextfile(opts.textfile, formatPrometheus(report));
    // The metrics carry the findings; a timer writing them has succeeded.
    if (problem) Object.assign(out, { stderr: `qemu-modwatch: ${problem}\n`, exitCode: 3 });
    else out.exitCode = 0;
  }
  return out;
}

export function currentReport(ctx: Context): Report {
  const looked = look(ctx, [], { guests: true });
  return buildReport(looked, assess(looked));
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
    const looked = look(ctx);
    recordState(ctx.paths.hostNoFollow(files.state), planAccept(lookFacts(looked)));
    saveCacheMemo(ctx.paths.hostNoFollow(files.cacheMemo), looked.cacheMemo);
    const modules = moduleCount(looked.fingerprint);
    const dirs = looked.fingerprint.dirs.length;
    const summary = { accepted: true, modules, moduleDirs: dirs, emulators: looked.fingerprint.emulators.length };
    return {
      stdout: json
        ? JSON.stringify(summary) + '\n'
        : `baseline recorded: ${modules} modules in ${dirs} module directories\n`,
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
  const problems: string[] = result.done.errors.map((e) => `qemu-modwatch: refresh: ${e}\n`);
  if (opts.textfile) {
    const problem = writeTextfile(opts.textfile, formatPrometheus(report));
    if (problem) problems.push(`qemu-modwatch: ${problem}\n`);
  }
  const summary = {
    refreshed: true,
    deleted: result.done.deleted,
    nudged: result.done.nudged,
    errors: result.done.errors,
    recorded: result.recorded,
    pending: result.pending,
    report,
  };
  if (opts.json) return { stdout: JSON.stringify(summary, null, 2) + '\n', stderr: problems.join(''), exitCode: 0 };
  const did: string[] = [];
  if (result.done.deleted.length)
    did.push(`deleted ${plural(result.done.deleted.length, 'capabilities cache entry', 'capabilities cache entries')}`);
  if (result.done.nudged.length) did.push(`nudged ${result.done.nudged.map(esc).join(', ')}`);
  if (result.recorded) did.push('recorded the baseline');
  const lines = [`qemu-modwatch refresh: ${did.length ? did.join('; ') : 'nothing to do'}`];
  if (result.pending)
    lines.push('  not everything could be done; the hooks try again at the next daemon or guest start');
  const left = report.findings.filter((f) => f.level !== 'OK');
  if (left.length) lines.push('', 'Still needs attention', ...table(left.map((f) => [f.level, esc(f.message)])));
  const advice = report.advice.filter(
    (a) => !a.includes("'qemu-modwatch refresh'") && !a.includes("'qemu-modwatch accept'"),
  );
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
    const looked = look(ctx);
    // libvirt names the file after the path as spelled; the header says the same unless damaged.
    const fileOfEmulator = opts.emulator ? sha256Hex(opts.emulator) + '.xml' : null;
    const plan = planInvalidate(
      { ...lookFacts(looked), cache },
      { emulator: opts.emulator, fileOfEmulator, nudge: mode },
    );
    const done = emptyDone();
    if (opts.dryRun) {
      done.deleted = plan.delete;
      const n = plan.nudge;
      if (n)
        done.nudged =
          n.mode === 'emulator-ctime' ? n.targets.filter((t) => fs.existsSync(ctx.paths.host(t))) : n.targets;
    } else {
      deleteEntries(ctx.paths, plan.delete, done);
      if (plan.nudge) nudge(ctx.paths, plan.nudge, done);
      recordInvalidate(ctx, done);
    }
    const emulatorOf = new Map(cache.entries.map((e) => [e.file, e.emulator]));
    return { done, skipped: plan.skipped, emulatorOf };
  };
  const { done, skipped, emulatorOf } = opts.dryRun
    ? work()
    : await withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), work);
  // For the journal's record of who touched the cache; on a terminal stdout already says it.
  if (!opts.dryRun && (done.deleted.length || done.nudged.length) && logTarget(ctx.paths) !== 'stderr') {
    const fields = { TRIGGER: 'invalidate', DELETED: done.deleted.join(' '), NUDGED: done.nudged.join(' ') };
    log(ctx.paths, { priority: 'notice', message: `invalidate: ${actionText(done)}`, fields });
  }
  const exitCode = done.errors.length ? 1 : 0;
  if (opts.json) {
    const out = {
      dryRun: opts.dryRun,
      emulator: opts.emulator ?? null,
      nudge: mode,
      deleted: done.deleted.map((file) => ({ file, emulator: emulatorOf.get(file) ?? null })),
      nudged: done.nudged,
      skipped,
      errors: done.errors,
    };
    return { stdout: JSON.stringify(out, null, 2) + '\n', exitCode };
  }
  const would = opts.dryRun ? 'would delete' : 'deleted';
  const lines: string[] = [];
  if (opts.dryRun) lines.push('dry run: nothing is changed');
  lines.push(
    `${would} ${plural(done.deleted.length, 'capabilities cache entry', 'capabilities cache entries')}${done.deleted.length ? ':' : ''}`,
  );
  lines.push(...table(done.deleted.map((f) => [f, esc(emulatorOf.get(f) ?? '?')])));
  if (mode === 'none') lines.push('no nudge (--nudge none)');
  else
    lines.push(
      `${opts.dryRun ? 'would nudge' : 'nudged'} (${mode}): ${done.nudged.length ? done.nudged.map(esc).join(', ') : 'nothing'}`,
    );
  for (const s of skipped) lines.push(`left alone: ${s.file} (${esc(s.reason)})`);
  return {
    stdout: lines.join('\n') + '\n',
    stderr: done.errors.map((e) => `qemu-modwatch: ${e}\n`).join(''),
    exitCode,
  };
}

/** An invalidate is recorded as the last action; the baseline (and who wrote it) stays as it was. */
function recordInvalidate(ctx: Context, done: Done): void {
  if (!done.deleted.length && !done.nudged.length) return;
  const file = ctx.paths.host(stateFiles(ctx.paths).state);
  const loaded = loadState(file);
  if (loaded.kind !== 'ok') return;
  const { baseline, writtenBy } = loaded.state;
  recordState(file, { baseline, lastAction: invalidateAction(done, new Date()), writtenBy });
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
    lastFullCheck:
      mark !== null
        ? {
            at: new Date(mark + MARK_MARGIN_MS).toISOString(),
            ageSeconds: age(new Date(mark + MARK_MARGIN_MS).toISOString()),
          }
        : null,
  };
  if (loaded.kind === 'ok') {
    const b = loaded.state.baseline;
    const takenAt = nsToIso(b.takenAtNs);
    s.baseline = {
      takenAt,
      ageSeconds: age(takenAt),
      modules: moduleCount(b),
      moduleDirs: b.dirs.length,
      emulators: b.emulators.length,
    };
    const a = loaded.state.lastAction;
    if (a && typeof a.at === 'string') s.lastAction = { ...a, ageSeconds: age(a.at) };
  }
  const exitCode = loaded.kind === 'corrupt' ? 1 : 0;
  if (json) return { stdout: JSON.stringify(s, null, 2) + '\n', exitCode };
  const rows: string[][] = [
    ['State', `${esc(s.stateFile)}${s.writtenBy ? ` (written by qemu-modwatch ${esc(s.writtenBy)})` : ''}`],
  ];
  if (loaded.kind === 'none')
    rows.push(['Baseline', "none recorded yet (the hooks record one on their first run; or 'qemu-modwatch accept')"]);
  if (loaded.kind === 'corrupt') rows.push(['Baseline', `unusable: ${esc(loaded.reason)}`]);
  if (s.baseline) {
    rows.push([
      'Baseline',
      `${s.baseline.takenAt} (${ago(s.baseline.ageSeconds)}): ${s.baseline.modules} modules in ${plural(s.baseline.moduleDirs, 'module directory', 'module directories')}`,
    ]);
  }
  if (s.lastAction) {
    const a = s.lastAction;
    rows.push(['Last action', `${a.at} (${ago(a.ageSeconds)}) by ${esc(a.trigger)}: ${esc(a.summary)}`]);
  } else if (loaded.kind === 'ok') {
    rows.push(['Last action', 'none yet']);
  }
  rows.push([
    'Last full check',
    s.lastFullCheck
      ? `${s.lastFullCheck.at} (${ago(s.lastFullCheck.ageSeconds)}), by a hook or refresh`
      : 'none recorded; the next hook runs one',
  ]);
  return {
    stdout:
      table(rows)
        .map((l) => l.slice(2))
        .join('\n') + '\n',
    exitCode,
  };
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
