import { isInvalidating, type ModuleChange } from './compare';
import { daemonKind } from './daemons';
import { hasInvalidatingChanges, type Assessment, type Observation } from './decide';
import { actionText, byKind, changeText, listed, problemText, problems, type Done, type LogLine } from './messages';
import { emulatorsAffected } from './stale';
import { moduleCount, type Fingerprint, type LastAction, type StatTuple } from './types';

// plan: from what was assessed, what started the run and the config, one
// value that says everything the run will do: which cache entries to
// delete, what to nudge, what to record, what to say. Pure, so that every
// policy, trigger and nudge rule is tested on the plan alone; app/ carries
// a plan out and records it. What is said depends also on what could be
// done (a full disk fails the write after the cache was refreshed), so the
// lines are pure functions of the plan and of what was done.

/** on_change: what a hook does about a change (hooks/qemu-modwatch.conf). */
export type OnChange = 'invalidate' | 'warn' | 'refuse';
/** nudge: how a running daemon is made to re-validate its capabilities. */
export type NudgeMode = 'emulator-ctime' | 'moddir-mtime' | 'none';

export type Trigger =
  /** daemon: the libvirt daemon starting, as its process names it; null when it could not be told. */
  | { kind: 'daemon-start'; daemon: string | null }
  | { kind: 'daemon-reload'; daemon: string | null }
  | { kind: 'qemu'; op: 'prepare' | 'migrate' | 'restore'; domain: string | null; emulator: string | null }
  | { kind: 'refresh' };

export function describeTrigger(t: Trigger): string {
  if (t.kind === 'qemu') return `hook qemu ${t.op}`;
  if (t.kind === 'refresh') return 'refresh';
  return `hook daemon ${t.kind === 'daemon-start' ? 'start' : 'reload'}`;
}

/** The emulators a run looks at besides the usual ones: a guest's, from its domain XML. */
export function triggerEmulators(t: Trigger): { path: string; source: 'domain' }[] {
  return t.kind === 'qemu' && t.emulator ? [{ path: t.emulator, source: 'domain' }] : [];
}

/** A nudge: chmod each emulator to its own mode (its ctime moves), or touch libvirt's module directory. */
export interface Nudge {
  mode: Exclude<NudgeMode, 'none'>;
  targets: string[];
}

/** What a run looked at, as far as the plan cares. */
export interface Look extends Pick<
  Observation,
  'fingerprint' | 'baseline' | 'state' | 'comparison' | 'cache' | 'libvirtModdir'
> {
  /** The last action the state file holds, kept when the run records none of its own. */
  lastAction: LastAction | null;
}

export interface Plan {
  trigger: Trigger;
  /** Anything to do at all: else the run takes no lock, records nothing and at most says what it could not see. */
  acts: boolean;
  /** on_change as it applies to this trigger (effectivePolicy). */
  policy: OnChange;
  /** A damaged state file is moved aside first, as evidence for a bug report. */
  keepCorrupt: boolean;
  /** The cache entry files that are stale, or belong to an emulator using a changed directory. */
  invalidated: string[];
  /** Those of them to delete now (none under on_change = warn). */
  delete: string[];
  nudge: Nudge | null;
  /**
   * baseline: the fingerprint, with the last action kept; action: the
   * fingerprint and this run's action, once everything was done; none.
   */
  record: 'baseline' | 'action' | 'none';
  /** on_change = warn: the changes stay standing, and the next run sees them again. */
  leaveStanding: boolean;
  /** on_change = refuse, for a guest start: once the cache is refreshed, the start is refused with refusalLine. */
  refuse: boolean;
  /** The changes that invalidate, for the lines. */
  changes: ModuleChange[];
  /** What kept the run from seeing everything. */
  notes: string[];
  look: Look;
}

/** refuse makes sense for a start; a daemon or an incoming migration just gets fixed. */
export function effectivePolicy(onChange: OnChange, trigger: Trigger): OnChange {
  if (trigger.kind === 'refresh') return 'invalidate';
  if (onChange === 'refuse' && !(trigger.kind === 'qemu' && trigger.op === 'prepare')) return 'invalidate';
  return onChange;
}

/**
 * A QEMU daemon that is starting loads capabilities after this hook: it
 * needs no nudge. Any other run (a reload, a guest start, refresh, or a
 * start by a daemon we cannot name) may leave a running daemon that has
 * them in memory already.
 */
export function needsNudge(trigger: Trigger): boolean {
  return !(trigger.kind === 'daemon-start' && daemonKind(trigger.daemon) === 'qemu');
}

/** The paths a nudge of this mode touches; null when the mode is none or has nothing to touch. */
export function nudgeOf(mode: NudgeMode, emulators: string[], moddir: string | null): Nudge | null {
  if (mode === 'emulator-ctime') return { mode, targets: emulators };
  if (mode === 'moddir-mtime' && moddir) return { mode, targets: [moddir] };
  return null;
}

/** A run's emulators to nudge: those with an invalidated cache entry, and those that load a changed module. */
export function changedEmulators(look: Look, assessment: Assessment): string[] {
  const cached = assessment.invalidate.flatMap((e) => (e.emulator ? [e.emulator] : []));
  const known = look.fingerprint.emulators.filter((e) => e.kind !== 'missing').map((e) => e.path);
  return [...new Set([...cached, ...emulatorsAffected(look.comparison, look.fingerprint, known)])].sort();
}

export function planRun(
  look: Look,
  assessment: Assessment,
  trigger: Trigger,
  config: { onChange: OnChange; nudge: NudgeMode },
): Plan {
  const changes = look.comparison.changes.filter(isInvalidating);
  const toDelete = assessment.invalidate.map((e) => e.file);
  const changed = toDelete.length > 0 || hasInvalidatingChanges(look.comparison);
  const policy = effectivePolicy(config.onChange, trigger);
  const base: Plan = {
    trigger,
    acts: changed || assessment.differs || look.state.kind !== 'ok',
    policy,
    keepCorrupt: look.state.kind === 'corrupt',
    invalidated: toDelete,
    delete: [],
    nudge: null,
    record: 'none',
    leaveStanding: false,
    refuse: false,
    changes,
    notes: problems(look, changes),
    look,
  };
  if (!base.acts) return { ...base, keepCorrupt: false, notes: problems(look, []) };
  if (!changed) return { ...base, record: 'baseline' };
  if (policy === 'warn')
    return { ...base, record: look.state.kind !== 'ok' ? 'baseline' : 'none', leaveStanding: true };
  const nudge = needsNudge(trigger)
    ? nudgeOf(config.nudge, changedEmulators(look, assessment), look.libvirtModdir)
    : null;
  return { ...base, delete: toDelete, nudge, record: 'action', refuse: policy === 'refuse' };
}

/** What the state file gets: null when nothing (the action failed in part: the next run tries again). */
export function stateToRecord(
  plan: Plan,
  done: Done,
  moved: Map<string, StatTuple>,
  now: Date,
): { baseline: Fingerprint; lastAction: LastAction | null } | null {
  if (plan.record === 'none' || (plan.record === 'action' && done.errors.length > 0)) return null;
  const baseline = keepUnlisted(restamp(plan.look.fingerprint, moved), plan.look.baseline);
  if (plan.record === 'baseline') return { baseline, lastAction: plan.look.lastAction };
  const lastAction = {
    at: now.toISOString(),
    trigger: describeTrigger(plan.trigger),
    summary: `${changeText(plan.changes)}; ${actionText(done)}`,
    deleted: done.deleted,
    nudged: done.nudged,
  };
  return { baseline, lastAction };
}

/**
 * A directory that cannot be listed now tells nothing about its modules;
 * recording it empty would hide whatever changed in it by the time it can
 * be listed again, so what was known of it is kept.
 */
export function keepUnlisted(fp: Fingerprint, before: Fingerprint | null): Fingerprint {
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

/**
 * Our own nudge moved stat data (stat after it: `moved`); recorded, so the next run does not re-read those
 * files for nothing.
 */
export function restamp(fp: Fingerprint, moved: Map<string, StatTuple>): Fingerprint {
  if (moved.size === 0) return fp;
  return {
    ...fp,
    emulators: fp.emulators.map((e) => {
      const st = moved.get(e.path);
      return st ? { ...e, ...st } : e;
    }),
    dirs: fp.dirs.map((d) => {
      const st = moved.get(d.path);
      return st ? { ...d, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs } : d;
    }),
  };
}

/** What a carried-out plan did, for its lines. */
export interface Outcome {
  done: Done;
  /** Where the damaged state file was moved; null when it was not (or could not be). */
  keptAs: string | null;
  /** The state file was written. */
  recorded: boolean;
}

/**
 * The run's one journal line, after acting and recording, so it says what happened rather than what was meant
 * to; null for none.
 */
export function logLine(plan: Plan, outcome: Outcome): LogLine | null {
  const { look, notes } = plan;
  if (!plan.acts)
    return notes.length > 0
      ? { priority: 'warning', message: `nothing changed that could be seen${problemText(notes)}` }
      : null;
  const corruptText =
    look.state.kind === 'corrupt' ? `${look.state.reason}${outcome.keptAs ? `, kept as ${outcome.keptAs}` : ''}` : '';
  if (plan.record === 'action' || plan.leaveStanding) {
    return changeLine(plan, outcome.done, corruptText ? [`state ignored: ${corruptText}`, ...notes] : notes);
  }
  const corrupt = corruptText ? `${corruptText}; ` : '';
  let message: string;
  if (!outcome.recorded) {
    message = `${corrupt}${listed(outcome.done.errors)}`;
  } else if (corrupt) {
    message = `${corrupt}recording a new baseline`;
  } else if (look.state.kind === 'none') {
    const fp = look.fingerprint;
    message = `recorded a first baseline: ${moduleCount(fp)} modules in ${fp.dirs.length} module directories`;
  } else if (notes.length === 0) {
    return null;
  } else {
    message = 'recorded the baseline';
  }
  const priority = !outcome.recorded ? 'err' : look.state.kind === 'none' && notes.length === 0 ? 'notice' : 'warning';
  return { priority, message: `${message}${problemText(notes)}` };
}

function changeLine(plan: Plan, done: Done, notes: string[]): LogLine {
  const { trigger, changes } = plan;
  const k = byKind(changes);
  const who =
    trigger.kind === 'qemu'
      ? ` before ${trigger.op} of domain '${trigger.domain ?? '?'}' (emulator ${trigger.emulator ?? 'unknown'})`
      : '';
  const action = plan.leaveStanding
    ? `${plan.invalidated.length} capabilities cache entries are stale; on_change = warn, so nothing was ` +
      `done ('qemu-modwatch accept' once handled)`
    : actionText(done);
  const errors = done.errors.length ? `; errors: ${listed(done.errors)}` : '';
  const fields: Record<string, string> = {
    TRIGGER: describeTrigger(trigger),
    ADDED: k.added.join(' '),
    REMOVED: k.removed.join(' '),
    REPLACED: k.replaced.join(' '),
    DELETED: done.deleted.join(' '),
    NUDGED: done.nudged.join(' '),
  };
  if (trigger.kind === 'qemu') {
    fields.DOMAIN = trigger.domain ?? '';
    fields.EMULATOR = trigger.emulator ?? '';
  }
  if (trigger.kind === 'daemon-start' || trigger.kind === 'daemon-reload') fields.DAEMON = trigger.daemon ?? '';
  if (notes.length) fields.PROBLEMS = notes.join('; ');
  return {
    priority: done.errors.length ? 'err' : 'warning',
    message: `${changeText(changes)}${who}: ${action}${errors}${problemText(notes)}`,
    fields,
  };
}

/** For on_change = refuse: the one line libvirt shows whoever started the guest; null when the start goes ahead. */
export function refusalLine(plan: Plan, outcome: Outcome): string | null {
  if (!plan.refuse || !outcome.recorded) return null;
  return (
    `qemu-modwatch: ${changeText(plan.changes)}; libvirt's capabilities were refreshed ` +
    `(${outcome.done.deleted.length} cache entries), start the domain again`
  );
}

/**
 * accept: the fingerprint as it is now, unlistable directories too (the admin says it is right); the
 * last action kept.
 */
export function planAccept(look: Pick<Look, 'fingerprint' | 'lastAction'>): {
  baseline: Fingerprint;
  lastAction: LastAction | null;
} {
  return { baseline: look.fingerprint, lastAction: look.lastAction };
}

export interface InvalidatePlan {
  delete: string[];
  /** Entries not to touch: a symlink or other non-file under a cache entry's name. */
  skipped: { file: string; reason: string }[];
  nudge: Nudge | null;
}

/**
 * invalidate: all cache entries, or one emulator's (by the header, or by
 * the name libvirt gives its file, `fileOfEmulator`). The daemon keeps
 * what it loaded in memory, so unlike a run's changedEmulators, every
 * emulator the scan knows is nudged, even when its entry is already gone.
 */
export function planInvalidate(
  look: Pick<Look, 'fingerprint' | 'cache' | 'libvirtModdir'>,
  opts: { emulator?: string | undefined; fileOfEmulator: string | null; nudge: NudgeMode },
): InvalidatePlan {
  const chosen = look.cache.entries.filter(
    (e) => !opts.emulator || e.emulator === opts.emulator || e.file === opts.fileOfEmulator,
  );
  const leftAlone = (e: (typeof chosen)[number]) => e.error !== null && /symlink|not a regular file/.test(e.error);
  const selected = chosen.filter((e) => !leftAlone(e));
  const skipped = chosen.filter(leftAlone).map((e) => ({ file: e.file, reason: e.error! }));
  const known = look.fingerprint.emulators
    .filter((e) => e.kind !== 'missing' && (e.source === 'path' || e.source === 'config'))
    .map((e) => e.path);
  const targets = opts.emulator
    ? [opts.emulator]
    : [...new Set([...selected.flatMap((e) => (e.emulator ? [e.emulator] : [])), ...known])].sort();
  return { delete: selected.map((e) => e.file), skipped, nudge: nudgeOf(opts.nudge, targets, look.libvirtModdir) };
}

/** The last action an invalidate records. */
export function invalidateAction(done: Done, now: Date): LastAction {
  return {
    at: now.toISOString(),
    trigger: 'invalidate',
    summary: actionText(done),
    deleted: done.deleted,
    nudged: done.nudged,
  };
}
