import { isInvalidating, isRacy, type Comparison } from './compare';
import { assessGuests, guestLabel, type GuestRisk } from './guests';
import { assessEntry, emulatorsAffected, type Staleness } from './stale';
import type { CacheView, Fingerprint, GuestRecord } from './types';

// decide: from what was observed and compared to findings (what to say)
// and a plan (what to do). Pure; every way in (check, hooks, refresh)
// goes through here so a finding means the same thing everywhere.

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
  | 'guest-unchecked';

/** Every code, for outputs that list all of them (metrics keep a series per code). */
export const FINDING_CODES: FindingCode[] = [
  'no-qemu', 'no-baseline', 'corrupt-state', 'module-changed', 'module-metadata', 'emulator-changed', 'stale-cache-entry',
  'stamp-mismatch', 'no-stamp-check', 'unreadable-module', 'unreadable-dir', 'missing-dir', 'unreadable-cache-entry',
  'cache-dir-problem', 'wrapper-unresolved', 'guest-at-risk', 'guest-emulator-replaced', 'guest-unchecked',
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

export function assess(o: Observation): Assessment {
  const findings: Finding[] = [];
  const fp = o.fingerprint;
  const add = (level: Level, code: FindingCode, message: string) => findings.push({ level, code, message });

  if (fp.dirs.length === 0 && fp.emulators.every((e) => e.kind === 'missing')) {
    add('OK', 'no-qemu', 'QEMU is not installed here: no module directory and no emulator found');
  }
  if (o.state.kind === 'none') add('OK', 'no-baseline', 'no baseline recorded yet; the hooks record one on their first run');
  if (o.state.kind === 'corrupt') add('WARNING', 'corrupt-state', `state ignored: ${o.state.reason}`);

  for (const c of o.comparison.changes) {
    if (c.kind === 'metadata') {
      add('OK', 'module-metadata', `${c.dir}/${c.name}: metadata changed, same content`);
    } else if (c.kind === 'replaced') {
      add('WARNING', 'module-changed', `${c.dir}/${c.name} replaced (build-id ${short(c.before?.buildId)} -> ${short(c.after?.buildId)})`);
    } else {
      add('WARNING', 'module-changed', `${c.dir}/${c.name} ${c.kind}`);
    }
  }
  for (const e of o.comparison.emulatorChanges) {
    add('OK', 'emulator-changed', `emulator ${e.path} ${e.kind}${e.kind === 'rebuilt' ? ` (stamp ${short(e.stampBefore)} -> ${short(e.stampAfter)})` : ''}`);
  }
  for (const d of fp.missingDirs) add('WARNING', 'missing-dir', `configured module directory ${d} does not exist`);
  for (const d of fp.dirs) {
    if (d.error) add('WARNING', 'unreadable-dir', d.error);
    for (const m of d.modules) if (m.error) add('WARNING', 'unreadable-module', `unreadable module ${d.path}/${m.name}: ${m.error}`);
  }
  for (const e of fp.emulators) {
    if (e.kind === 'wrapper' && !e.target) add('OK', 'wrapper-unresolved', `emulator ${e.path} is a wrapper script whose target is not literal`);
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
  const guests = o.guests ? assessGuests(o.guests, fp) : [];
  findings.push(...guestFindings(guests));

  const affected = emulatorsAffected(o.comparison, fp, o.cache.entries.flatMap((e) => (e.emulator ? [e.emulator] : [])));
  const invalidate = staleness
    .filter((s) => s.stale || (s.emulator !== null && affected.has(s.emulator)))
    .map((s) => ({ file: s.file, emulator: s.emulator, reasons: s.reasons.length ? s.reasons : ['modules it uses changed'] }));

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
      const stamps = g.stamp && g.stampOnDisk && g.stamp !== g.stampOnDisk ? ` (stamp ${short(g.stamp)} -> ${short(g.stampOnDisk)})` : '';
      const what = g.emulatorState === 'deleted' ? 'was removed' : 'was replaced';
      out.push({ level: 'WARNING', code: 'guest-emulator-replaced', message: `${who} runs ${g.emulator}, which ${what} since it started${stamps}` });
    }
    if (g.atRisk) {
      const names = g.modules.map((m) => m.name).join(', ');
      out.push({
        level: 'WARNING',
        code: 'guest-at-risk',
        message: `${who} will fail to load ${names}: not from its build ${short(g.stamp)}; restart or migrate it`,
      });
    } else if (g.atRisk === null) {
      out.push({ level: 'OK', code: 'guest-unchecked', message: `${who}: ${g.error ?? 'its build stamp is unknown'}; its modules were not checked` });
    }
  }
  return out;
}

/**
 * Modules QEMU will refuse ("Only modules from the same build can be
 * loaded"): a stamp none of the host's emulators has. Upgrade copies are
 * left out, they are kept for older running guests on purpose. null when
 * no emulator's stamp is known, so nothing can be said.
 */
export function refusedModules(fp: Fingerprint): { dir: string; name: string; stamp: string | null }[] | null {
  const stamps = emulatorStamps(fp);
  if (stamps.size === 0) return null;
  return fp.dirs
    .filter((d) => d.source !== 'upgrade')
    .flatMap((d) => d.modules.filter((m) => !m.error && (!m.stamp || !stamps.has(m.stamp))).map((m) => ({ dir: d.path, name: m.name, stamp: m.stamp })));
}

function emulatorStamps(fp: Fingerprint): Set<string> {
  return new Set(fp.emulators.flatMap((e) => (e.kind === 'elf' && e.stamp ? [e.stamp] : [])));
}

function stampFindings(fp: Fingerprint): Finding[] {
  const refused = refusedModules(fp);
  if (refused === null) {
    const any = fp.dirs.some((d) => d.source !== 'upgrade' && d.modules.length > 0);
    return any ? [{ level: 'OK', code: 'no-stamp-check', message: 'no emulator with a build stamp found; module stamps not checked' }] : [];
  }
  const have = [...emulatorStamps(fp)].map(short).join(', ');
  return refused.map((m) => ({
    level: 'CRITICAL' as const,
    code: 'stamp-mismatch' as const,
    message: `QEMU will refuse to load ${m.name} in ${m.dir} (${m.stamp ? `stamp ${short(m.stamp)}` : 'no build stamp'}, emulator has ${have})`,
  }));
}

function differs(o: Observation): boolean {
  if (!o.baseline) return true;
  if (o.comparison.changes.length > 0 || o.comparison.emulatorChanges.length > 0) return true;
  const dirs = (fp: Fingerprint) => fp.dirs.map((d) => d.path).join('\n') + '\0' + fp.missingDirs.join('\n');
  if (dirs(o.baseline) !== dirs(o.fingerprint)) return true;
  // Records too close to their scan to trust are read again by every run
  // until a baseline taken well after them is recorded.
  const settled = o.baseline.dirs.some((d) => d.modules.some((m) => isRacy(m, o.baseline!.takenAtNs) && !isRacy(m, o.fingerprint.takenAtNs)));
  if (settled) return true;
  // Stat data that moved without a content change (a nudge, a chmod) is
  // worth recording too, or every run re-reads those files.
  const before = new Map(o.baseline.emulators.map((e) => [e.path, e]));
  return o.fingerprint.emulators.some((e) => {
    const b = before.get(e.path);
    return b !== undefined && (b.ctimeNs !== e.ctimeNs || b.mtimeNs !== e.mtimeNs || b.ino !== e.ino || b.size !== e.size);
  });
}

export function hasInvalidatingChanges(c: Comparison): boolean {
  return c.changes.some(isInvalidating);
}

export function short(hex: string | null | undefined): string {
  return hex ? hex.slice(0, 12) : 'none';
}
