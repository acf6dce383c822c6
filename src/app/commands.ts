import * as fs from 'node:fs';
import * as path from 'node:path';
import { assessSeen, type Assessment } from '../core/decide';
import { actionText, type Done } from '../core/messages';
import { planAccept, planInvalidate, type NudgeMode } from '../core/plan';
import type { Fingerprint } from '../core/types';
import { readCacheView } from '../host/cache-dir';
import { stateFiles } from '../host/paths';
import { writeFileAtomic } from '../os/atomic-file';
import { sha256Hex } from '../os/file-info';
import { log, logTarget } from '../os/log';
import { saveCacheMemo } from '../store/cache-memo';
import { MARK_MARGIN_MS } from '../store/fast-path';
import { withStateLock } from '../store/lock';
import { loadState, type LoadedState } from '../store/state-store';
import { deleteEntries, emptyDone, nudge } from './carry-out';
import { lastActionOf, look, lookHooksLoaded, type Assessed, type Context } from './look';
import { judgeHooksLoaded, type DaemonVerdict } from '../core/hooks-loaded';
import { runPipeline, type PipelineResult } from './pipeline';
import { recordAccepted, recordInvalidate } from './record';

// The commands' use cases: each sequences its I/O and returns plain data,
// which cli/ turns into text, JSON or metrics and an exit code.

/** The file node_exporter's textfile collector reads; it ignores names not ending in .prom. */
export const TEXTFILE_NAME = 'qemu_modwatch.prom';

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

export interface Checked {
  looked: Assessed;
  assessment: Assessment;
}

/** How a command shows what it found (cli/report.ts), and the metrics of that for a textfile. */
export interface Presenter<R> {
  present: (c: Checked) => R;
  metrics: (shown: R) => string;
}

export interface CheckResult<R> {
  shown: R;
  /** Why the textfile could not be written; null when it was, or none was asked for. */
  textfileProblem: string | null;
}

/** check: look (running guests too) and assess. Writes no state and deletes nothing (the textfile aside). */
export function check<R>(ctx: Context, textfile: string | undefined, p: Presenter<R>): CheckResult<R> {
  const { observed, assessment } = assessSeen(look(ctx, [], { guests: true }));
  const shown = p.present({ looked: observed, assessment });
  return { shown, textfileProblem: textfile ? writeTextfile(textfile, p.metrics(shown)) : null };
}

/** accept: the system as it is now becomes the baseline. Returns what was recorded. */
export async function accept(ctx: Context): Promise<Fingerprint> {
  const files = stateFiles(ctx.paths);
  return withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), () => {
    const looked = look(ctx);
    recordAccepted(ctx.paths, planAccept({ fingerprint: looked.fingerprint, lastAction: lastActionOf(looked) }));
    saveCacheMemo(ctx.paths.hostNoFollow(files.cacheMemo), looked.cacheMemo);
    return looked.fingerprint;
  });
}

export interface RefreshResult<R> extends CheckResult<R> {
  result: PipelineResult;
}

/** refresh: the hooks' work on demand, then a check of what is left (guests at risk, refused modules). */
export async function refresh<R>(
  ctx: Context,
  opts: { nudge?: NudgeMode | undefined; textfile?: string | undefined },
  p: Presenter<R>,
): Promise<RefreshResult<R>> {
  const run = opts.nudge ? { ...ctx, config: { ...ctx.config, nudge: opts.nudge } } : ctx;
  const result = await runPipeline(run, { kind: 'refresh' });
  return { result, ...check(ctx, opts.textfile, p) };
}

export interface InvalidateResult {
  /** What was (or, in a dry run, would be) deleted and nudged, and what failed. */
  done: Done;
  skipped: { file: string; reason: string }[];
  /** The emulator each cache entry file belongs to, as its header says. */
  emulatorOf: Map<string, string | null>;
}

/**
 * Deletes cache entries (all, or one emulator's) and nudges, whether or not
 * anything changed. Only deleteEntries removes files, and it removes only
 * regular files named like a cache entry.
 */
export async function invalidate(
  ctx: Context,
  opts: { emulator?: string | undefined; nudge: NudgeMode; dryRun: boolean },
): Promise<InvalidateResult> {
  const files = stateFiles(ctx.paths);
  const work = (): InvalidateResult => {
    const cache = readCacheView(ctx.paths);
    const looked = look(ctx);
    // libvirt names the file after the path as spelled; the header says the same unless damaged.
    const fileOfEmulator = opts.emulator ? sha256Hex(opts.emulator) + '.xml' : null;
    const plan = planInvalidate(
      { fingerprint: looked.fingerprint, libvirtModdir: looked.libvirtModdir, cache },
      { emulator: opts.emulator, fileOfEmulator, nudge: opts.nudge },
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
      recordInvalidate(ctx.paths, done);
    }
    const emulatorOf = new Map(cache.entries.map((e) => [e.file, e.emulator]));
    return { done, skipped: plan.skipped, emulatorOf };
  };
  const out = opts.dryRun
    ? work()
    : await withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), work);
  const { done } = out;
  // For the journal's record of who touched the cache; on a terminal stdout already says it.
  if (!opts.dryRun && (done.deleted.length || done.nudged.length) && logTarget(ctx.paths) !== 'stderr') {
    const fields = { TRIGGER: 'invalidate', DELETED: done.deleted.join(' '), NUDGED: done.nudged.join(' ') };
    log(ctx.paths, { priority: 'notice', message: `invalidate: ${actionText(done)}`, fields });
  }
  return out;
}

export interface Status {
  stateFile: string;
  loaded: LoadedState;
  /** When the hooks last began a full check (their fast path's mark, its margin undone), in ms; null for none. */
  lastFullCheckMs: number | null;
  /** Whether each running QEMU daemon can be running our hooks; empty when none runs or the hooks are not installed. */
  daemons: DaemonVerdict[];
  /** Records hooks-not-loaded reads (the daemon hook's runs, when the hooks were installed) that could not be used. */
  recordProblems: string[];
}

/** status: what the state file and the fast path's mark say. Read-only. */
export function status(ctx: Context): Status {
  const files = stateFiles(ctx.paths);
  const loaded = loadState(ctx.paths.host(files.state));
  const mark = (() => {
    try {
      return fs.statSync(ctx.paths.host(files.mark)).mtimeMs;
    } catch {
      return null;
    }
  })();
  // The mark is back-dated by a margin; undo it to tell when the check began.
  const facts = lookHooksLoaded(ctx);
  return {
    stateFile: files.state,
    loaded,
    lastFullCheckMs: mark !== null ? mark + MARK_MARGIN_MS : null,
    daemons: judgeHooksLoaded(facts),
    recordProblems: facts.problems,
  };
}
