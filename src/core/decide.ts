import { compareFingerprints, groupByDirAndKind, isInvalidating, isRacy, type Comparison } from './compare';
import { assessGuests, guestLabel, type GuestRisk } from './guests';
import { targetOf, wouldLoad } from './qemu-rules';
import { assessEntry, dirsUsedBy, emulatorsAffected, type Staleness } from './stale';
import type { CacheView, DirRecord, Fingerprint, GuestRecord } from './types';
import { judgeHooksLoaded, notLoadedMessage, type HooksLoadedFacts } from './hooks-loaded';

// assess: what a look saw, compared with the baseline, judged: findings
// (what to say) and the stale cache entries (what a plan acts on, plan.ts).
// Pure; every way in (check, hooks, refresh) goes through here so a
// finding means the same thing everywhere.

export type Level = 'OK' | 'WARNING' | 'CRITICAL' | 'UNKNOWN';
export const EXIT_CODE: Record<Level, number> = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 };
const RANK: Record<Level, number> = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 };

/** Stable codes: monitoring and scripts match on these (README lists them). */
export type FindingCode =
  | 'no-qemu'
  | 'no-baseline'
  | 'corrupt-state'
  | 'module-changed'
  | 'module-metadata'
  | 'emulator-changed'
  | 'stale-cache-entry'
  | 'stamp-mismatch'
  | 'no-stamp-check'
  | 'unreadable-module'
  | 'unreadable-dir'
  | 'missing-dir'
  | 'unreadable-cache-entry'
  | 'cache-dir-problem'
  | 'wrapper-unresolved'
  | 'guest-at-risk'
  | 'guest-emulator-replaced'
  | 'guest-unchecked'
  | 'upgrade-copy-changed'
  | 'leftover-module'
  | 'hooks-not-loaded';

/** Every code, for outputs that list all of them (metrics keep a series per code). */
export const FINDING_CODES: FindingCode[] = [
  'no-qemu',
  'no-baseline',
  'corrupt-state',
  'module-changed',
  'module-metadata',
  'emulator-changed',
  'stale-cache-entry',
  'stamp-mismatch',
  'no-stamp-check',
  'unreadable-module',
  'unreadable-dir',
  'missing-dir',
  'unreadable-cache-entry',
  'cache-dir-problem',
  'wrapper-unresolved',
  'guest-at-risk',
  'guest-emulator-replaced',
  'guest-unchecked',
  'upgrade-copy-changed',
  'leftover-module',
  'hooks-not-loaded',
];

export interface Finding {
  level: Level;
  code: FindingCode;
  message: string;
}

export type StateStatus = { kind: 'none' } | { kind: 'ok' } | { kind: 'corrupt'; reason: string };

export interface Observation {
  fingerprint: Fingerprint;
  baseline: Fingerprint | null;
  state: StateStatus;
  comparison: Comparison;
  cache: CacheView;
  libvirtModdir: string | null;
  /** Running QEMU processes; null when not looked for (the hooks do not). */
  guests: GuestRecord[] | null;
  /** Module directories only running guests use (beside a binary from another prefix): not part of the fingerprint. */
  guestDirs: DirRecord[];
  /** The running libvirt daemons and our hooks (check looks, the hooks do not); absent or null: not looked at. */
  hooksLoaded?: (HooksLoadedFacts & { problems: string[] }) | null;
}

export interface Assessment {
  status: Level;
  findings: Finding[];
  staleness: Staleness[];
  /** Cache entry files to delete: stale ones and those of emulators using a changed directory. */
  invalidate: { file: string; emulator: string | null; reasons: string[] }[];
  /** Whether the fingerprint differs from the baseline in anything worth recording. */
  differs: boolean;
  guests: GuestRisk[];
}

/** What a look reads of the system and of the state file, before anything is compared. */
export type Seen = Omit<Observation, 'comparison'>;

/**
 * The assess step: what was seen, compared with its baseline, and judged.
 * Returns what was seen with the comparison added (the plan and the report
 * read it), and the assessment.
 */
export function assessSeen<S extends Seen>(
  seen: S,
): { observed: S & Pick<Observation, 'comparison'>; assessment: Assessment } {
  const observed = { ...seen, comparison: compareFingerprints(seen.baseline, seen.fingerprint) };
  return { observed, assessment: assess(observed) };
}

export function assess(o: Observation): Assessment {
  const findings: Finding[] = [];
  const fp = o.fingerprint;
  const add = (level: Level, code: FindingCode, message: string) => findings.push({ level, code, message });

  if (fp.dirs.length === 0 && fp.emulators.every((e) => e.kind === 'missing')) {
    add('OK', 'no-qemu', 'QEMU is not installed here: no module directory and no emulator found');
  }
  if (o.state.kind === 'none')
    add('OK', 'no-baseline', 'no baseline recorded yet; the hooks record one on their first run');
  if (o.state.kind === 'corrupt') add('WARNING', 'corrupt-state', `state ignored: ${o.state.reason}`);

  for (const c of o.comparison.changes) {
    if (c.kind === 'metadata') {
      add('OK', 'module-metadata', `${c.dir}/${c.name}: metadata changed, same content`);
    } else if (c.kind === 'replaced') {
      add(
        'WARNING',
        'module-changed',
        `${c.dir}/${c.name} replaced (build-id ${short(c.before?.buildId)} -> ${short(c.after?.buildId)})`,
      );
    } else {
      add('WARNING', 'module-changed', `${c.dir}/${c.name} ${c.kind}`);
    }
  }
  for (const [dir, kinds] of groupByDirAndKind(o.comparison.copyChanges)) {
    const what = [...kinds].map(([kind, names]) => `${names.length} ${kind}`).join(', ');
    add(
      'OK',
      'upgrade-copy-changed',
      `upgrade copies in ${dir}: ${what} (kept for running guests of an older build; no installed emulator loads them)`,
    );
  }
  for (const e of o.comparison.emulatorChanges) {
    add(
      'OK',
      'emulator-changed',
      `emulator ${e.path} ` +
        `${e.kind}${e.kind === 'rebuilt' ? ` (stamp ${short(e.stampBefore)} -> ${short(e.stampAfter)})` : ''}`,
    );
  }
  for (const d of fp.missingDirs) add('WARNING', 'missing-dir', `configured module directory ${d} does not exist`);
  for (const d of fp.dirs) {
    if (d.error) add('WARNING', 'unreadable-dir', d.error);
    for (const m of d.modules)
      if (m.error) add('WARNING', 'unreadable-module', `unreadable module ${d.path}/${m.name}: ${m.error}`);
  }
  for (const e of fp.emulators) {
    if (e.kind === 'wrapper' && !e.target)
      add('OK', 'wrapper-unresolved', `emulator ${e.path} is a wrapper script whose target is not literal`);
  }
  findings.push(...stampFindings(fp));

  if (o.cache.error) add('WARNING', 'cache-dir-problem', o.cache.error);
  const staleness = o.cache.entries.map((entry) => assessEntry(entry, o));
  for (const entry of o.cache.entries) {
    if (entry.error) add('WARNING', 'unreadable-cache-entry', `cache entry ${entry.file}: ${entry.error}`);
  }
  for (const s of staleness) {
    if (!s.stale) continue;
    const libvirt = s.libvirtNotices
      ? 'libvirt re-probes it by itself on its next lookup'
      : "libvirt keeps serving it until it is invalidated ('qemu-modwatch refresh')";
    add('WARNING', 'stale-cache-entry', `cache entry for ${s.emulator} is stale: ${s.reasons[0]}; ${libvirt}`);
  }
  if (o.hooksLoaded) {
    for (const p of o.hooksLoaded.problems) add('WARNING', 'corrupt-state', p);
    for (const { daemon, verdict } of judgeHooksLoaded(o.hooksLoaded)) {
      if (verdict.kind === 'not-loaded') add('WARNING', 'hooks-not-loaded', notLoadedMessage(daemon, verdict));
    }
  }
  const guests = o.guests ? assessGuests(o.guests, fp, o.guestDirs) : [];
  findings.push(...guestFindings(guests));

  const affected = emulatorsAffected(
    o.comparison,
    fp,
    o.cache.entries.flatMap((e) => (e.emulator ? [e.emulator] : [])),
  );
  const invalidate = staleness
    .filter((s) => s.stale || (s.emulator !== null && affected.has(s.emulator)))
    .map((s) => ({
      file: s.file,
      emulator: s.emulator,
      reasons: s.reasons.length ? s.reasons : ['modules it uses changed'],
    }));

  const status = findings.reduce<Level>((acc, f) => (RANK[f.level] > RANK[acc] ? f.level : acc), 'OK');
  return { status, findings, staleness, invalidate, differs: differs(o), guests };
}

/**
 * A guest at risk or running a replaced binary is a WARNING: it runs, and
 * after every QEMU upgrade each running guest is in this state until it is
 * restarted or migrated; monitoring should show it, not page for it.
 */
function guestFindings(guests: GuestRisk[]): Finding[] {
  const out: Finding[] = [];
  for (const g of guests) {
    const who = guestLabel(g);
    if (g.emulatorState === 'replaced' || g.emulatorState === 'deleted') {
      const stamps =
        g.stamp && g.stampOnDisk && g.stamp !== g.stampOnDisk
          ? ` (stamp ${short(g.stamp)} -> ${short(g.stampOnDisk)})`
          : '';
      const what = g.emulatorState === 'deleted' ? 'was removed' : 'was replaced';
      out.push({
        level: 'WARNING',
        code: 'guest-emulator-replaced',
        message: `${who} runs ${g.emulator}, which ${what} since it started${stamps}`,
      });
    }
    if (g.atRisk) {
      out.push({
        level: 'WARNING',
        code: 'guest-at-risk',
        message:
          `${who} will fail to load ${fewOf(g.modules.map((m) => m.name))}: not from its build ` +
          `${short(g.stamp)}; ${consequence(g)}; restart or migrate it`,
      });
    } else if (g.atRisk === null) {
      out.push({
        level: 'OK',
        code: 'guest-unchecked',
        message: `${who}: ${g.error ?? 'its build stamp is unknown'}; its modules were not checked`,
      });
    }
  }
  return out;
}

export interface ModuleVerdict {
  dir: string;
  name: string;
  stamp: string | null;
  /** The emulators that would load it and refuse it (another build); empty for a leftover. */
  refusedBy: { path: string; stamp: string }[];
}

/**
 * refused: modules QEMU will refuse ("Only modules from the same build can
 * be loaded"): one that an installed emulator loads (it is in that build's
 * module table, for its target, in a directory it searches) carrying
 * another stamp than that emulator's. leftover: modules of a build no
 * installed emulator has, that no installed emulator loads either (an
 * s390x module with no s390x emulator, one an upgrade left behind):
 * nothing refuses them, nothing needs them. Upgrade copies are left out,
 * they are kept for older running guests on purpose. null when no
 * emulator's stamp is known, so nothing can be said.
 */
export function moduleVerdicts(fp: Fingerprint): { refused: ModuleVerdict[]; leftover: ModuleVerdict[] } | null {
  const loaders = fp.emulators.filter((e): e is typeof e & { stamp: string } => e.kind === 'elf' && e.stamp !== null);
  if (loaders.length === 0) return null;
  const stamps = new Set(loaders.map((e) => e.stamp));
  const usage = new Map(loaders.map((e) => [e.path, dirsUsedBy(e.path, fp).dirs]));
  const out: ModuleVerdict[] = [];
  for (const d of fp.dirs) {
    if (d.source === 'upgrade') continue;
    for (const m of d.modules) {
      if (m.error) continue;
      const users = loaders.filter(
        (e) => usage.get(e.path)!.has(d.path) && wouldLoad(e, targetOf(e.fileName), m.name) !== false,
      );
      const refusedBy = users.filter((e) => e.stamp !== m.stamp).map((e) => ({ path: e.path, stamp: e.stamp }));
      if (refusedBy.length > 0 || (users.length === 0 && !(m.stamp && stamps.has(m.stamp)))) {
        out.push({ dir: d.path, name: m.name, stamp: m.stamp, refusedBy });
      }
    }
  }
  return { refused: out.filter((m) => m.refusedBy.length > 0), leftover: out.filter((m) => m.refusedBy.length === 0) };
}

/** moduleVerdicts' refused modules alone. */
export function refusedModules(fp: Fingerprint): ModuleVerdict[] | null {
  return moduleVerdicts(fp)?.refused ?? null;
}

function stampFindings(fp: Fingerprint): Finding[] {
  const verdicts = moduleVerdicts(fp);
  if (verdicts === null) {
    const any = fp.dirs.some((d) => d.source !== 'upgrade' && d.modules.length > 0);
    return any
      ? [
          {
            level: 'OK',
            code: 'no-stamp-check',
            message: 'no emulator with a build stamp found; module stamps not checked',
          },
        ]
      : [];
  }
  const stampText = (s: string | null) => (s ? `stamp ${short(s)}` : 'no build stamp');
  return [
    ...verdicts.refused.map((m) => ({
      level: 'CRITICAL' as const,
      code: 'stamp-mismatch' as const,
      message:
        `QEMU will refuse to load ${m.name} in ${m.dir} (${stampText(m.stamp)}, emulator has ` +
        `${[...new Set(m.refusedBy.map((e) => short(e.stamp)))].join(', ')})`,
    })),
    ...verdicts.leftover.map((m) => ({
      level: 'WARNING' as const,
      code: 'leftover-module' as const,
      message:
        `${m.dir}/${m.name} is not from an installed emulator's build (${stampText(m.stamp)}), and ` +
        `no installed emulator loads it: a leftover`,
    })),
  ];
}

function differs(o: Observation): boolean {
  if (!o.baseline) return true;
  const c = o.comparison;
  if (c.changes.length > 0 || c.copyChanges.length > 0 || c.emulatorChanges.length > 0) return true;
  const dirs = (fp: Fingerprint) => fp.dirs.map((d) => d.path).join('\n') + '\0' + fp.missingDirs.join('\n');
  if (dirs(o.baseline) !== dirs(o.fingerprint)) return true;
  // Records too close to their scan to trust are read again by every run
  // until a baseline taken well after them is recorded.
  const settled = o.baseline.dirs.some((d) =>
    d.modules.some((m) => isRacy(m, o.baseline!.takenAtNs) && !isRacy(m, o.fingerprint.takenAtNs)),
  );
  if (settled) return true;
  // Stat data that moved without a content change (a nudge, a chmod) is
  // worth recording too, or every run re-reads those files.
  const before = new Map(o.baseline.emulators.map((e) => [e.path, e]));
  return o.fingerprint.emulators.some((e) => {
    const b = before.get(e.path);
    return (
      b !== undefined && (b.ctimeNs !== e.ctimeNs || b.mtimeNs !== e.mtimeNs || b.ino !== e.ino || b.size !== e.size)
    );
  });
}

/**
 * What a refused module does to a guest: the hot-plug fails, and where QEMU aborts on the next load, the
 * guest may die.
 */
function consequence(g: GuestRisk): string {
  if (g.refusalAborts)
    return 'its QEMU aborts on the module load after a refused one, so a hot-plug can kill the guest';
  return 'a hot-plug that needs one fails, and whether its QEMU survives that is not known for its version';
}

const FEW = 3;

/** The first few names of a list that can be long (a whole upgrade), and how many more. */
export function fewOf(names: string[]): string {
  return names.length <= FEW + 1
    ? names.join(', ')
    : `${names.slice(0, FEW).join(', ')} and ${names.length - FEW} more`;
}

export function hasInvalidatingChanges(c: Comparison): boolean {
  return c.changes.some(isInvalidating);
}

export function short(hex: string | null | undefined): string {
  return hex ? hex.slice(0, 12) : 'none';
}
