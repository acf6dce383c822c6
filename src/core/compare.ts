import type { DirRecord, EmulatorRecord, Fingerprint, ModuleRecord, StatTuple } from './types';

// compare: baseline vs now, pure.

/**
 * added / removed / replaced change what QEMU loads, so they invalidate
 * libvirt's capabilities; metadata (same content, new stat data, e.g. a
 * touch or a reinstall of the same build) is reported but does not.
 */
export type ChangeKind = 'added' | 'removed' | 'replaced' | 'metadata';

export interface ModuleChange {
  dir: string;
  name: string;
  kind: ChangeKind;
  before: ModuleRecord | null;
  after: ModuleRecord | null;
}

export interface EmulatorChange {
  path: string;
  kind: 'added' | 'removed' | 'rebuilt';
  stampBefore: string | null;
  stampAfter: string | null;
}

export interface Comparison {
  hasBaseline: boolean;
  /** Changes of modules: what emulators load from their module directories. */
  changes: ModuleChange[];
  /**
   * Changes among the upgrade copies under /var/run/qemu: old builds kept
   * for running guests (Debian's prerm makes them, a reboot empties /run).
   * They are no module of an installed emulator, so they invalidate and
   * warn about nothing by themselves.
   */
  copyChanges: ModuleChange[];
  emulatorChanges: EmulatorChange[];
}

/**
 * File times come from a clock that ticks every few milliseconds (whole
 * seconds on some file systems), so a module rewritten in place just after
 * a scan read it can keep the stat data the scan recorded. Records whose
 * ctime or mtime is this close to (or after) the start of the scan that
 * made them are read again next time instead of trusted, as git does with
 * racy index entries.
 */
export const RACY_MARGIN_NS = 2_000_000_000n;

/** Whether a baseline's record of a file may predate a change with the same stat data. */
export function isRacy(file: { ctimeNs: string; mtimeNs: string }, takenAtNs: string): boolean {
  const after = BigInt(takenAtNs) - RACY_MARGIN_NS;
  return BigInt(file.ctimeNs) >= after || BigInt(file.mtimeNs) >= after;
}

/**
 * Module names by directory, then by kind of change, in the order they came: a whole upgrade told in a line a
 * directory.
 */
export function groupByDirAndKind(
  changes: { dir: string; kind: string; name: string }[],
): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  for (const c of changes) {
    const kinds = out.get(c.dir) ?? new Map<string, string[]>();
    out.set(c.dir, kinds);
    kinds.set(c.kind, [...(kinds.get(c.kind) ?? []), c.name]);
  }
  return out;
}

export function isInvalidating(c: ModuleChange): boolean {
  return c.kind !== 'metadata';
}

export function compareFingerprints(baseline: Fingerprint | null, now: Fingerprint): Comparison {
  if (!baseline) return { hasBaseline: false, changes: [], copyChanges: [], emulatorChanges: [] };
  const changes: ModuleChange[] = [];
  const copyChanges: ModuleChange[] = [];
  const before = new Map(baseline.dirs.map((d) => [d.path, d]));
  const after = new Map(now.dirs.map((d) => [d.path, d]));
  for (const path of new Set([...before.keys(), ...after.keys()])) {
    const b = before.get(path);
    const a = after.get(path);
    const isCopy = (a ?? b)?.source === 'upgrade';
    (isCopy ? copyChanges : changes).push(...compareDir(path, b, a));
  }
  return {
    hasBaseline: true,
    changes,
    copyChanges,
    emulatorChanges: compareEmulators(baseline.emulators, now.emulators),
  };
}

function compareDir(dir: string, before: DirRecord | undefined, after: DirRecord | undefined): ModuleChange[] {
  // A directory we could not list tells nothing about its modules; saying
  // they were all removed would invalidate for nothing.
  if (before?.error || after?.error) return [];
  const b = new Map(before?.modules.map((m) => [m.name, m]) ?? []);
  const a = new Map(after?.modules.map((m) => [m.name, m]) ?? []);
  const out: ModuleChange[] = [];
  for (const name of [...new Set([...b.keys(), ...a.keys()])].sort()) {
    const mb = b.get(name) ?? null;
    const ma = a.get(name) ?? null;
    const kind = moduleChangeKind(mb, ma);
    if (kind) out.push({ dir, name, kind, before: mb, after: ma });
  }
  return out;
}

export function moduleChangeKind(before: ModuleRecord | null, after: ModuleRecord | null): ChangeKind | null {
  if (!before && !after) return null;
  if (!before) return 'added';
  if (!after) return 'removed';
  if (sameStat(before, after)) return null;
  return sameContent(before, after) ? 'metadata' : 'replaced';
}

/** The same stat data: the file was not touched since it was read. */
export function sameStat(a: StatTuple, b: StatTuple): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino && a.dev === b.dev;
}

/** Content is the same only when something proves it; when unsure, it was replaced. */
function sameContent(a: ModuleRecord, b: ModuleRecord): boolean {
  if (a.error || b.error) return false;
  if (a.size !== b.size || a.stamp !== b.stamp) return false;
  if (a.sha256 && b.sha256) return a.sha256 === b.sha256;
  return a.buildId !== null && a.buildId === b.buildId;
}

function compareEmulators(before: EmulatorRecord[], after: EmulatorRecord[]): EmulatorChange[] {
  const b = new Map(before.filter((e) => e.kind !== 'missing').map((e) => [e.path, e]));
  const a = new Map(after.filter((e) => e.kind !== 'missing').map((e) => [e.path, e]));
  const out: EmulatorChange[] = [];
  for (const [path, e] of a) {
    const old = b.get(path);
    if (!old) {
      // Emulators named only by a cache entry or a domain come and go with
      // the caller; only the ones found on the system count as added.
      if (e.source === 'path') out.push({ path, kind: 'added', stampBefore: null, stampAfter: e.stamp });
    } else if (old.stamp !== e.stamp) {
      out.push({ path, kind: 'rebuilt', stampBefore: old.stamp, stampAfter: e.stamp });
    }
  }
  for (const [path, e] of b) {
    if (!a.has(path) && e.source === 'path')
      out.push({ path, kind: 'removed', stampBefore: e.stamp, stampAfter: null });
  }
  return out;
}
