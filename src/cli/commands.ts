import * as use from '../app/commands';
import type { Context } from '../app/look';
import { escapeControl as esc } from '../core/text';
import { moduleCount, type LastAction } from '../core/types';
import { formatNagios } from './format-nagios';
import { formatPrometheus } from './format-prometheus';
import { formatText, table } from './format-text';
import type { Format, NudgeOption } from './options';
import { buildReport, nsToIso, type Report } from './report';

// Presentation of the commands: each calls its use case (app/commands.ts)
// and turns the result into stdout, stderr and an exit code.

export interface Output {
  stdout: string;
  stderr?: string;
  exitCode: number;
}

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
  const { shown: report, textfileProblem } = use.check(ctx, opts.textfile, REPORT);
  const out: Output = {
    stdout: opts.textfile && !opts.formatGiven ? '' : render(report, opts.format, opts.verbose),
    exitCode: report.exitCode,
  };
  if (opts.textfile) {
    // The metrics carry the findings; a timer writing them has succeeded.
    if (textfileProblem) Object.assign(out, { stderr: `qemu-modwatch: ${textfileProblem}\n`, exitCode: 3 });
    else out.exitCode = 0;
  }
  return out;
}

/** What a check shows: the report, and as metrics, its Prometheus form. */
const REPORT: use.Presenter<Report> = {
  present: (c) => buildReport(c.looked, c.assessment),
  metrics: formatPrometheus,
};

export function render(report: Report, format: Format, verbose = false): string {
  if (format === 'json') return JSON.stringify(report, null, 2) + '\n';
  if (format === 'nagios') return formatNagios(report);
  if (format === 'prometheus') return formatPrometheus(report);
  return formatText(report, { verbose });
}

export async function runAccept(ctx: Context, json: boolean): Promise<Output> {
  const fp = await use.accept(ctx);
  const modules = moduleCount(fp);
  const dirs = fp.dirs.length;
  const summary = { accepted: true, modules, moduleDirs: dirs, emulators: fp.emulators.length };
  return {
    stdout: json
      ? JSON.stringify(summary) + '\n'
      : `baseline recorded: ${modules} modules in ${dirs} module directories\n`,
    exitCode: 0,
  };
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
  // What is left after acting: guests at risk and refused modules are not
  // for refresh to fix, but whoever ran it should hear of them.
  const { result, shown: report, textfileProblem } = await use.refresh(ctx, opts, REPORT);
  const problems: string[] = result.done.errors.map((e) => `qemu-modwatch: refresh: ${e}\n`);
  if (textfileProblem) problems.push(`qemu-modwatch: ${textfileProblem}\n`);
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

/** Deletes cache entries (all, or one emulator's) and nudges, whether or not anything changed (app/commands.ts). */
export async function runInvalidate(ctx: Context, opts: InvalidateOptions): Promise<Output> {
  const mode = opts.nudge ?? ctx.config.nudge;
  const { done, skipped, emulatorOf } = await use.invalidate(ctx, {
    emulator: opts.emulator,
    nudge: mode,
    dryRun: opts.dryRun,
  });
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
    `${would} ${plural(done.deleted.length, 'capabilities cache entry', 'capabilities cache entries')}` +
      (done.deleted.length ? ':' : ''),
  );
  lines.push(...table(done.deleted.map((f) => [f, esc(emulatorOf.get(f) ?? '?')])));
  if (mode === 'none') lines.push('no nudge (--nudge none)');
  else
    lines.push(
      `${opts.dryRun ? 'would nudge' : 'nudged'} (${mode}): ` +
        (done.nudged.length ? done.nudged.map(esc).join(', ') : 'nothing'),
    );
  for (const s of skipped) lines.push(`left alone: ${s.file} (${esc(s.reason)})`);
  return {
    stdout: lines.join('\n') + '\n',
    stderr: done.errors.map((e) => `qemu-modwatch: ${e}\n`).join(''),
    exitCode,
  };
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
  /** Each running libvirtd or virtqemud: whether it can be running qemu-modwatch's hooks. */
  daemons: {
    name: string;
    pid: number;
    hooks: 'loaded' | 'not-loaded' | 'cannot-tell';
    why: string;
    /** The command that makes it load them; null unless not loaded. */
    command: string | null;
  }[];
  /**
   * Records the daemons' verdicts are read from that could not be used (treated as none): the daemon hook's runs
   * and when the hooks were installed.
   */
  problems: string[];
}

export function runStatus(ctx: Context, json: boolean, now = new Date()): Output {
  const { stateFile, loaded, lastFullCheckMs, daemons, recordProblems } = use.status(ctx);
  const age = (iso: string) => Math.max(0, Math.round((now.getTime() - Date.parse(iso)) / 1000));
  const s: StatusReport = {
    stateFile,
    state: loaded.kind,
    problem: loaded.kind === 'corrupt' ? loaded.reason : null,
    writtenBy: loaded.kind === 'ok' ? loaded.state.writtenBy : null,
    baseline: null,
    lastAction: null,
    lastFullCheck:
      lastFullCheckMs !== null
        ? {
            at: new Date(lastFullCheckMs).toISOString(),
            ageSeconds: age(new Date(lastFullCheckMs).toISOString()),
          }
        : null,
    daemons: daemons.map(({ daemon, verdict }) => ({
      name: daemon.name,
      pid: daemon.pid,
      hooks: verdict.kind,
      why: verdict.why,
      command: verdict.kind === 'not-loaded' ? verdict.command : null,
    })),
    problems: recordProblems,
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
      `${s.baseline.takenAt} (${ago(s.baseline.ageSeconds)}): ${s.baseline.modules} modules in ` +
        plural(s.baseline.moduleDirs, 'module directory', 'module directories'),
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
  for (const d of s.daemons) {
    const what = { loaded: 'runs the hooks', 'not-loaded': 'does NOT run the hooks', 'cannot-tell': 'cannot tell' };
    const run = d.command ? `; run \`${d.command}\`` : '';
    rows.push([`${d.name} ${d.pid}`, `${what[d.hooks]}: ${esc(d.why)}${run}`]);
  }
  for (const p of s.problems) rows.push(['Problem', esc(p)]);
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
