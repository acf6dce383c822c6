import * as fs from 'node:fs';
import { isInvalidating, type ModuleChange } from '../core/compare';
import { assess, hasInvalidatingChanges, type Assessment } from '../core/decide';
import { emulatorsAffected } from '../core/stale';
import type { Fingerprint } from '../core/types';
import { deleteEntries, nudge, type ActResult } from './carry-out';
import type { OnChange } from '../host/config';
import { saveCacheMemo } from '../store/cache-memo';
import { clearMark, writeWatchAndMark } from '../store/fast-path';
import { removeOrphanedTemps } from '../os/atomic-file';
import { errText, statOrNull, statTuple } from '../os/file-info';
import { withStateLock } from '../store/lock';
import { log } from '../os/log';
import { observe, type Context, type Observed } from './look';
import { stateFiles } from '../host/paths';
import { writeState } from '../store/state-store';
import { daemonKind } from '../core/daemons';
import { VERSION } from '../version';

// observe -> compare -> decide -> act, for the hooks and `refresh`. One
// run at a time (state lock), so fifty hooks at once act on a change once.

export type Trigger =
  /** daemon: the libvirt daemon starting, as its process names it; null when it could not be told. */
  | { kind: 'daemon-start'; daemon: string | null }
  | { kind: 'daemon-reload'; daemon: string | null }
  | { kind: 'qemu'; op: 'prepare' | 'migrate' | 'restore'; domain: string | null; emulator: string | null }
  | { kind: 'refresh' };

export interface PipelineResult {
  observed: Observed;
  assessment: Assessment;
  act: ActResult;
  /** The baseline was (re)written. */
  recorded: boolean;
  /** Changes left standing on purpose (on_change = warn). */
  pending: boolean;
  /** For on_change = refuse: the one line libvirt shows the user. */
  refusal: string | null;
}

export function describeTrigger(t: Trigger): string {
  return t.kind === 'qemu' ? `hook qemu ${t.op}` : t.kind === 'refresh' ? 'refresh' : `hook daemon ${t.kind === 'daemon-start' ? 'start' : 'reload'}`;
}

export async function runPipeline(ctx: Context, trigger: Trigger): Promise<PipelineResult> {
  // The common case, nothing to do, needs no lock: reading is safe against a
  // concurrent writer (state is replaced by rename), and the mark each run
  // writes only vouches for what that run saw since its own scan began.
  const first = decideOnce(ctx, trigger);
  if (!first.needsAction) {
    // After finish: should writing the mark fail, its error is the one line.
    const done = finish(ctx, first);
    logProblems(ctx, first);
    return done;
  }
  const files = stateFiles(ctx.paths);
  return withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.hostNoFollow(files.lock), () => {
    // Writers killed mid-write (SIGKILL, OOM) leave their temp files; only a lock holder may judge them.
    removeOrphanedTemps(ctx.paths.host(ctx.paths.stateDir));
    // Another hook may have acted while we waited: look again.
    const second = decideOnce(ctx, trigger);
    if (second.needsAction) act(ctx, trigger, second);
    const done = finish(ctx, second);
    if (!second.needsAction) logProblems(ctx, second);
    return done;
  });
}

interface Run {
  scanStartMs: number;
  trigger: Trigger;
  result: PipelineResult;
  needsAction: boolean;
}

function decideOnce(ctx: Context, trigger: Trigger): Run {
  const scanStartMs = Date.now();
  const extra = trigger.kind === 'qemu' && trigger.emulator ? [{ path: trigger.emulator, source: 'domain' as const }] : [];
  const observed = observe(ctx, extra);
  const assessment = assess(observed);
  const result: PipelineResult = { observed, assessment, act: { deleted: [], nudged: [], errors: [] }, recorded: false, pending: false, refusal: null };
  const changed = assessment.invalidate.length > 0 || hasInvalidatingChanges(observed.comparison);
  return { scanStartMs, trigger, result, needsAction: changed || assessment.differs || observed.state.kind !== 'ok' };
}

/**
 * decide + act, under the state lock. Logs exactly one line, after acting
 * and recording, so the line says what happened rather than what was meant
 * to (a full disk fails the write after the cache was already refreshed).
 */
function act(ctx: Context, trigger: Trigger, run: Run): void {
  const { result } = run;
  const { observed, assessment } = result;
  const files = stateFiles(ctx.paths);
  const fp = observed.fingerprint;
  const changes = observed.comparison.changes.filter(isInvalidating);
  const toDelete = assessment.invalidate.map((e) => e.file);
  const policy = effectivePolicy(ctx.config.onChange, trigger);
  const notes = problems(observed, changes);
  const kept = observed.state.kind === 'corrupt' ? keepCorrupt(ctx) : null;
  const corruptText = observed.state.kind === 'corrupt' ? `${observed.state.reason}${kept ? `, kept as ${kept}` : ''}` : '';

  /** A failed write is an action error: not recorded, so the next run tries again. */
  const record = (actResult?: ActResult): boolean => {
    const baseline = keepUnlisted(actResult ? restat(ctx, fp, actResult.nudged) : fp, observed.baseline);
    try {
      writeState(ctx.paths.hostNoFollow(files.state), {
        schema: 1,
        writtenBy: VERSION,
        baseline,
        lastAction: actResult
          ? { at: new Date().toISOString(), trigger: describeTrigger(trigger), summary: summarize(changes, actResult), deleted: actResult.deleted, nudged: actResult.nudged }
          : observed.loaded.kind === 'ok' ? observed.loaded.state.lastAction : null,
      });
    } catch (e) {
      result.act.errors.push(`cannot record the baseline in ${files.state}: ${errText(e)}`);
      result.pending = true;
      return false;
    }
    result.recorded = true;
    return true;
  };

  if (toDelete.length > 0 || hasInvalidatingChanges(observed.comparison)) {
    if (corruptText) notes.unshift(`state ignored: ${corruptText}`);
    if (policy === 'warn') {
      if (observed.state.kind !== 'ok') record();
      log(ctx.paths, warning(trigger, changes, result.act, toDelete, true, notes));
      result.pending = true;
      return;
    }
    deleteEntries(ctx.paths, toDelete, result.act);
    // A QEMU daemon that is starting loads capabilities after this hook: it
    // needs no nudge. Any other run (a reload, a guest start, refresh, or a
    // start by a daemon we cannot name) may leave a running daemon that has
    // them in memory already.
    const startingLoadsNext = trigger.kind === 'daemon-start' && daemonKind(trigger.daemon) === 'qemu';
    if (!startingLoadsNext && ctx.config.nudge !== 'none') {
      const cached = assessment.invalidate.flatMap((e) => (e.emulator ? [e.emulator] : []));
      const known = fp.emulators.filter((e) => e.kind !== 'missing').map((e) => e.path);
      const targets = new Set([...cached, ...emulatorsAffected(observed.comparison, fp, known)]);
      nudge(ctx.paths, ctx.config.nudge, [...targets].sort(), observed.libvirtModdir, result.act);
    }
    if (result.act.errors.length > 0) {
      // Not recorded: the next run tries again.
      result.pending = true;
    } else if (record(result.act) && policy === 'refuse') {
      result.refusal = refusal(changes, result.act);
    }
    log(ctx.paths, warning(trigger, changes, result.act, toDelete, false, notes));
    return;
  }
  const recorded = record();
  const corrupt = corruptText ? `${corruptText}; ` : '';
  let message: string;
  if (!recorded) {
    message = `${corrupt}${listed(result.act.errors)}`;
  } else if (corrupt) {
    message = `${corrupt}recording a new baseline`;
  } else if (observed.state.kind === 'none') {
    const modules = fp.dirs.reduce((n, d) => n + d.modules.length, 0);
    message = `recorded a first baseline: ${modules} modules in ${fp.dirs.length} module directories`;
  } else if (notes.length === 0) {
    return;
  } else {
    message = 'recorded the baseline';
  }
  const priority = !recorded ? 'err' : observed.state.kind === 'none' && notes.length === 0 ? 'notice' : 'warning';
  log(ctx.paths, { priority, message: `${message}${problemText(notes)}` });
}

/** A damaged state is evidence for a bug report: moved aside, not overwritten. */
function keepCorrupt(ctx: Context): string | null {
  const file = stateFiles(ctx.paths).state;
  try {
    fs.renameSync(ctx.paths.hostNoFollow(file), ctx.paths.hostNoFollow(`${file}.corrupt`));
    return `${file}.corrupt`;
  } catch {
    return null;
  }
}

/** A run with nothing to act on still says once what it could not see. */
function logProblems(ctx: Context, run: Run): void {
  const notes = problems(run.result.observed, []);
  if (notes.length > 0) log(ctx.paths, { priority: 'warning', message: `nothing changed that could be seen${problemText(notes)}` });
}

/** What kept this run from seeing everything: worth a line, since it can hide a change. */
function problems(observed: Observed, changes: ModuleChange[]): string[] {
  const out: string[] = [];
  for (const d of observed.fingerprint.dirs) if (d.error) out.push(`${d.error}, its modules were not checked`);
  for (const c of changes) if (c.after?.error) out.push(`${c.dir}/${c.name}: ${c.after.error}`);
  if (observed.cache.error) out.push(observed.cache.error);
  for (const e of observed.cache.entries) if (e.error) out.push(`cache entry ${e.file}: ${e.error}`);
  return out;
}

const MAX_LISTED = 5;

/** A few items of a list that can be long (one per module or cache entry), and how many more. */
function listed(items: string[]): string {
  const more = items.length > MAX_LISTED ? `; and ${items.length - MAX_LISTED} more` : '';
  return `${items.slice(0, MAX_LISTED).join('; ')}${more}`;
}

function problemText(notes: string[]): string {
  return notes.length === 0 ? '' : `; problems: ${listed(notes)}`;
}

/**
 * A directory that cannot be listed now tells nothing about its modules;
 * recording it empty would hide whatever changed in it by the time it can
 * be listed again, so what was known of it is kept.
 */
function keepUnlisted(fp: Fingerprint, before: Fingerprint | null): Fingerprint {
  if (!before || !fp.dirs.some((d) => d.error)) return fp;
  const old = new Map(before.dirs.map((d) => [d.path, d]));
  return {
    ...fp,
    dirs: fp.dirs.map((d) => {
      const o = old.get(d.path);
      return d.error && o && !o.error ? { ...o, source: d.source } : d;
    }),
  };
}

function finish(ctx: Context, run: Run): PipelineResult {
  const { result } = run;
  saveCacheMemo(ctx.paths.hostNoFollow(stateFiles(ctx.paths).cacheMemo), result.observed.cacheMemo);
  if (result.pending) clearMark(ctx.paths);
  else writeWatchAndMark(ctx.paths, ctx.config, result.recorded ? restat(ctx, result.observed.fingerprint, result.act.nudged) : result.observed.fingerprint, run.scanStartMs);
  return result;
}

/** refuse makes sense for a start; a daemon or an incoming migration just gets fixed. */
function effectivePolicy(onChange: OnChange, trigger: Trigger): OnChange {
  if (trigger.kind === 'refresh') return 'invalidate';
  if (onChange === 'refuse' && !(trigger.kind === 'qemu' && trigger.op === 'prepare')) return 'invalidate';
  return onChange;
}

/** Our own nudge moved stat data; record it, or the next run re-reads those files for nothing. */
function restat(ctx: Context, fp: Fingerprint, nudged: string[]): Fingerprint {
  if (nudged.length === 0) return fp;
  const moved = new Set(nudged);
  return {
    ...fp,
    emulators: fp.emulators.map((e) => {
      const st = moved.has(e.path) ? statOrNull(ctx.paths.host(e.path)) : null;
      return st ? { ...e, ...statTuple(st) } : e;
    }),
    dirs: fp.dirs.map((d) => {
      const st = moved.has(d.path) ? statOrNull(ctx.paths.host(d.path)) : null;
      return st ? { ...d, mtimeNs: st.mtimeNs.toString(), ctimeNs: st.ctimeNs.toString() } : d;
    }),
  };
}

function byKind(changes: ModuleChange[]): Record<'added' | 'removed' | 'replaced', string[]> {
  const pick = (k: string) => changes.filter((c) => c.kind === k).map((c) => `${c.dir}/${c.name}`);
  return { added: pick('added'), removed: pick('removed'), replaced: pick('replaced') };
}

/** Names listed per kind of change: a line stays readable (and within syslog's size) after a big upgrade. */
const MAX_NAMES = 20;

/** "added hw-usb-smartcard.so; replaced hw-display-qxl.so", or what else made entries stale. */
function changeText(changes: ModuleChange[]): string {
  const k = byKind(changes);
  const base = (p: string) => p.slice(p.lastIndexOf('/') + 1);
  const names = (list: string[]) =>
    list.length > MAX_NAMES ? `${list.slice(0, MAX_NAMES).map(base).join(', ')} and ${list.length - MAX_NAMES} more` : list.map(base).join(', ');
  const parts = (['added', 'removed', 'replaced'] as const).filter((x) => k[x].length).map((x) => `${x} ${names(k[x])}`);
  return parts.length ? `QEMU modules changed (${parts.join('; ')})` : 'stale capabilities cache entries';
}

function actionText(act: ActResult): string {
  return `deleted ${act.deleted.length} capabilities cache entries${act.nudged.length ? `, nudged ${act.nudged.join(', ')}` : ''}`;
}

function summarize(changes: ModuleChange[], act: ActResult): string {
  return `${changeText(changes)}; ${actionText(act)}`;
}

function warning(trigger: Trigger, changes: ModuleChange[], act: ActResult, toDelete: string[], warnOnly: boolean, notes: string[]) {
  const k = byKind(changes);
  const who = trigger.kind === 'qemu' ? ` before ${trigger.op} of domain '${trigger.domain ?? '?'}' (emulator ${trigger.emulator ?? 'unknown'})` : '';
  const action = warnOnly
    ? `${toDelete.length} capabilities cache entries are stale; on_change = warn, so nothing was done ('qemu-modwatch accept' once handled)`
    : actionText(act);
  const errors = act.errors.length ? `; errors: ${listed(act.errors)}` : '';
  const fields: Record<string, string> = {
    TRIGGER: describeTrigger(trigger),
    ADDED: k.added.join(' '),
    REMOVED: k.removed.join(' '),
    REPLACED: k.replaced.join(' '),
    DELETED: act.deleted.join(' '),
    NUDGED: act.nudged.join(' '),
  };
  if (trigger.kind === 'qemu') {
    fields.DOMAIN = trigger.domain ?? '';
    fields.EMULATOR = trigger.emulator ?? '';
  }
  if (trigger.kind === 'daemon-start' || trigger.kind === 'daemon-reload') fields.DAEMON = trigger.daemon ?? '';
  if (notes.length) fields.PROBLEMS = notes.join('; ');
  return { priority: act.errors.length ? ('err' as const) : ('warning' as const), message: `${changeText(changes)}${who}: ${action}${errors}${problemText(notes)}`, fields };
}

function refusal(changes: ModuleChange[], act: ActResult): string {
  return `qemu-modwatch: ${changeText(changes)}; libvirt's capabilities were refreshed (${act.deleted.length} cache entries), start the domain again`;
}
