import { isInvalidating, type ModuleChange } from './core/compare';
import { assess, hasInvalidatingChanges, type Assessment } from './core/decide';
import { emulatorsAffected } from './core/stale';
import type { Fingerprint } from './core/types';
import { deleteEntries, nudge, type ActResult } from './system/act';
import type { OnChange } from './system/config';
import { clearMark, writeWatchAndMark } from './system/fast-path';
import { statOrNull, statTuple } from './system/file-info';
import { withStateLock } from './system/lock';
import { log } from './system/log';
import { observe, type Context, type Observed } from './system/observe';
import { stateFiles } from './system/paths';
import { writeState } from './system/state-store';
import { VERSION } from './version';

// observe -> compare -> decide -> act, for the hooks and `refresh`. One
// run at a time (state lock), so fifty hooks at once act on a change once.

export type Trigger =
  | { kind: 'daemon-start' }
  | { kind: 'daemon-reload' }
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
  const files = stateFiles(ctx.paths);
  return withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.host(files.lock), () => {
    const scanStartMs = Date.now();
    const extra = trigger.kind === 'qemu' && trigger.emulator ? [{ path: trigger.emulator, source: 'domain' as const }] : [];
    const observed = observe(ctx, extra);
    const assessment = assess(observed);
    const result: PipelineResult = { observed, assessment, act: { deleted: [], nudged: [], errors: [] }, recorded: false, pending: false, refusal: null };
    const fp = observed.fingerprint;
    const changes = observed.comparison.changes.filter(isInvalidating);
    const toDelete = assessment.invalidate.map((e) => e.file);
    const policy = effectivePolicy(ctx.config.onChange, trigger);

    if (observed.state.kind === 'corrupt') {
      log(ctx.paths, { priority: 'warning', message: `${observed.state.reason}; recording a new baseline` });
    }
    const record = (actResult?: ActResult) => {
      const baseline = actResult ? restat(ctx, fp, actResult.nudged) : fp;
      writeState(ctx.paths.host(files.state), {
        schema: 1,
        writtenBy: VERSION,
        baseline,
        lastAction: actResult
          ? { at: new Date().toISOString(), trigger: describeTrigger(trigger), summary: summarize(changes, actResult), deleted: actResult.deleted, nudged: actResult.nudged }
          : observed.loaded.kind === 'ok' ? observed.loaded.state.lastAction : null,
      });
      result.recorded = true;
    };

    if (toDelete.length > 0 || hasInvalidatingChanges(observed.comparison)) {
      if (policy === 'warn') {
        log(ctx.paths, warning(trigger, changes, result.act, toDelete, true));
        if (observed.state.kind !== 'ok') record();
        result.pending = true;
      } else {
        deleteEntries(ctx.paths, toDelete, result.act);
        if (trigger.kind !== 'daemon-start' && ctx.config.nudge !== 'none') {
          const cached = assessment.invalidate.flatMap((e) => (e.emulator ? [e.emulator] : []));
          const known = fp.emulators.filter((e) => e.kind !== 'missing').map((e) => e.path);
          const targets = new Set([...cached, ...emulatorsAffected(observed.comparison, fp, known)]);
          nudge(ctx.paths, ctx.config.nudge, [...targets].sort(), observed.libvirtModdir, result.act);
        }
        log(ctx.paths, warning(trigger, changes, result.act, toDelete, false));
        if (result.act.errors.length > 0) {
          // Not recorded: the next run tries again.
          result.pending = true;
        } else {
          record(result.act);
          if (policy === 'refuse') result.refusal = refusal(changes, result.act);
        }
      }
    } else if (assessment.differs) {
      if (observed.state.kind === 'none') {
        const modules = fp.dirs.reduce((n, d) => n + d.modules.length, 0);
        log(ctx.paths, { priority: 'notice', message: `recorded a first baseline: ${modules} modules in ${fp.dirs.length} module directories` });
      }
      record();
    }

    if (result.pending) clearMark(ctx.paths);
    else writeWatchAndMark(ctx.paths, ctx.config, result.recorded ? restat(ctx, fp, result.act.nudged) : fp, scanStartMs);
    return result;
  });
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

/** "added hw-usb-smartcard.so; replaced hw-display-qxl.so", or what else made entries stale. */
function changeText(changes: ModuleChange[]): string {
  const k = byKind(changes);
  const base = (p: string) => p.slice(p.lastIndexOf('/') + 1);
  const parts = (['added', 'removed', 'replaced'] as const).filter((x) => k[x].length).map((x) => `${x} ${k[x].map(base).join(', ')}`);
  return parts.length ? `QEMU modules changed (${parts.join('; ')})` : 'stale capabilities cache entries';
}

function actionText(act: ActResult): string {
  return `deleted ${act.deleted.length} capabilities cache entries${act.nudged.length ? `, nudged ${act.nudged.join(', ')}` : ''}`;
}

function summarize(changes: ModuleChange[], act: ActResult): string {
  return `${changeText(changes)}; ${actionText(act)}`;
}

function warning(trigger: Trigger, changes: ModuleChange[], act: ActResult, toDelete: string[], warnOnly: boolean) {
  const k = byKind(changes);
  const who = trigger.kind === 'qemu' ? ` before ${trigger.op} of domain '${trigger.domain ?? '?'}' (emulator ${trigger.emulator ?? 'unknown'})` : '';
  const action = warnOnly
    ? `${toDelete.length} capabilities cache entries are stale; on_change = warn, so nothing was done ('qemu-modwatch accept' once handled)`
    : actionText(act);
  const errors = act.errors.length ? `; errors: ${act.errors.join('; ')}` : '';
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
  return { priority: act.errors.length ? ('err' as const) : ('warning' as const), message: `${changeText(changes)}${who}: ${action}${errors}`, fields };
}

function refusal(changes: ModuleChange[], act: ActResult): string {
  return `qemu-modwatch: ${changeText(changes)}; libvirt's capabilities were refreshed (${act.deleted.length} cache entries), start the domain again`;
}
