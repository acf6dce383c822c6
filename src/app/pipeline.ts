import { assessSeen, type Assessment } from '../core/decide';
import type { Done } from '../core/messages';
import type { Fingerprint } from '../core/types';
import { logLine, planRun, refusalLine, restamp, stateToRecord, triggerEmulators } from '../core/plan';
import type { Plan, Trigger } from '../core/plan';
import { stateFiles } from '../host/paths';
import { removeOrphanedTemps } from '../os/atomic-file';
import { log } from '../os/log';
import { saveCacheMemo } from '../store/cache-memo';
import { clearMark, writeWatchAndMark } from '../store/fast-path';
import { withStateLock } from '../store/lock';
import { deleteEntries, emptyDone, keepCorrupt, nudge, statNudged } from './carry-out';
import { look, lookFacts, type Assessed, type Context } from './look';
import { recordRun } from './record';

// look -> assess -> plan -> carry out -> record, for the hooks and
// `refresh`. One run at a time (state lock), so fifty hooks at once act
// on a change once.

export interface PipelineResult {
  looked: Assessed;
  assessment: Assessment;
  done: Done;
  /** The baseline was (re)written. */
  recorded: boolean;
  /** Something is left for the next run: changes left standing (on_change = warn), or a failed action. */
  pending: boolean;
  /** For on_change = refuse: the one line libvirt shows the user. */
  refusal: string | null;
}

export async function runPipeline(ctx: Context, trigger: Trigger): Promise<PipelineResult> {
  // The common case, nothing to do, needs no lock: reading is safe against a
  // concurrent writer (state is replaced by rename), and the mark each run
  // writes only vouches for what that run saw since its own scan began.
  const first = lookAndPlan(ctx, trigger);
  if (!first.plan.acts) return quiet(ctx, first);
  const files = stateFiles(ctx.paths);
  return withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), () => {
    // Writers killed mid-write (SIGKILL, OOM) leave their temp files; only a lock holder may judge them.
    removeOrphanedTemps(ctx.paths.host(ctx.paths.stateDir));
    // Another hook may have acted while we waited: look again.
    const second = lookAndPlan(ctx, trigger);
    return second.plan.acts ? carryOut(ctx, second) : quiet(ctx, second);
  });
}

interface Run {
  scanStartMs: number;
  looked: Assessed;
  assessment: Assessment;
  plan: Plan;
}

function lookAndPlan(ctx: Context, trigger: Trigger): Run {
  const scanStartMs = Date.now();
  const { observed: looked, assessment } = assessSeen(look(ctx, triggerEmulators(trigger)));
  return { scanStartMs, looked, assessment, plan: planRun(lookFacts(looked), assessment, trigger, ctx.config) };
}

/**
 * Nothing to act on: the mark first (should writing it fail, its error is the one line), then what
 * could not be seen.
 */
function quiet(ctx: Context, run: Run): PipelineResult {
  const { looked, assessment } = run;
  const result = { looked, assessment, done: emptyDone(), recorded: false, pending: false, refusal: null };
  finish(ctx, run, false, looked.fingerprint);
  const line = logLine(run.plan, { done: result.done, keptAs: null, recorded: false });
  if (line) log(ctx.paths, line);
  return result;
}

/** Under the state lock. Logs one line, after acting and recording, so that it says what happened. */
function carryOut(ctx: Context, run: Run): PipelineResult {
  const { plan, looked, assessment } = run;
  const file = stateFiles(ctx.paths).state;
  const done = emptyDone();
  const keptAs = plan.keepCorrupt ? keepCorrupt(ctx.paths, file) : null;
  deleteEntries(ctx.paths, plan.delete, done);
  if (plan.nudge) nudge(ctx.paths, plan.nudge, done);
  const moved = statNudged(ctx.paths, done);
  const state = stateToRecord(plan, done, moved, new Date());
  const recorded = state !== null && recordRun(ctx.paths, state, done);
  const outcome = { done, keptAs, recorded };
  const line = logLine(plan, outcome);
  if (line) log(ctx.paths, line);
  const pending = plan.leaveStanding || done.errors.length > 0;
  const result = { looked, assessment, done, recorded, pending, refusal: refusalLine(plan, outcome) };
  finish(ctx, run, pending, recorded ? restamp(looked.fingerprint, moved) : looked.fingerprint);
  return result;
}

/** The cache memo, and the fast path's mark for fp: cleared while something is pending, so the next run is in full. */
function finish(ctx: Context, run: Run, pending: boolean, fp: Fingerprint): void {
  saveCacheMemo(ctx.paths.hostNoFollow(stateFiles(ctx.paths).cacheMemo), run.looked.cacheMemo);
  if (pending) clearMark(ctx.paths);
  else writeWatchAndMark(ctx.paths, ctx.config, fp, run.scanStartMs);
}
