import { isInvalidating, type Comparison } from './compare';
import { upgradeDirOf } from './qemu-rules';
import type { CacheEntry, DirRecord, Fingerprint } from './types';

// Which module directories each emulator loads from, and which libvirt
// capabilities cache entries no longer describe what QEMU would load. Pure.

export interface DirUsage {
  dirs: Set<string>;
  /** False when we could not tell, and so assume every directory. */
  sure: boolean;
}

/**
 * An emulator loads from the module directories compiled into it, from the
 * QEMU_MODULE_DIR its wrapper sets, and from the one upgrade-copy
 * directory named by its own package version. Directories the admin listed (or QEMU_MODULE_DIR of whoever runs
 * us) may be used by any emulator. When the binary says nothing we know
 * of, assume all directories: invalidating too much costs a re-probe,
 * too little costs a broken guest.
 */
export function dirsUsedBy(emulatorPath: string, fp: Fingerprint, depth = 0): DirUsage {
  const all: DirUsage = { dirs: new Set(fp.dirs.map((d) => d.path)), sure: false };
  const e = fp.emulators.find((x) => x.path === emulatorPath);
  if (!e || depth > 4) return all;
  if (e.kind === 'wrapper') {
    if (!e.target) return all;
    const inner = dirsUsedBy(e.target, fp, depth + 1);
    if (e.moduleDir) inner.dirs.add(e.moduleDir);
    return inner;
  }
  if (e.kind !== 'elf') return all;
  // Every QEMU built with module support carries its build stamp (its
  // module loader checks it); one without (Debian's
  // qemu-system-x86_64-microvm) loads no modules, so no module change
  // concerns it.
  if (!e.stamp && !e.usesUpgradeDirs) return { dirs: new Set(), sure: true };
  const dirs = new Set<string>();
  const ownCopies = upgradeDirOf(e);
  for (const d of fp.dirs) {
    if (e.dirsInBinary.includes(d.path) || (d.source === 'upgrade' && d.path === ownCopies)) dirs.add(d.path);
  }
  if (dirs.size === 0) return all;
  // A compiled-in directory that has since vanished still counts as used.
  for (const p of e.dirsInBinary) dirs.add(p);
  const wrapperDirs = new Set(fp.emulators.map((x) => x.moduleDir).filter((x): x is string => !!x));
  for (const d of fp.dirs) {
    if ((d.source === 'config' && !wrapperDirs.has(d.path)) || d.source === 'env') dirs.add(d.path);
  }
  return { dirs, sure: true };
}

export interface Staleness {
  file: string;
  emulator: string | null;
  stale: boolean;
  reasons: string[];
  /**
   * Whether libvirt's own checks (emulator ctime, its one module directory's
   * mtime) will make it re-probe on the next lookup without our help.
   */
  libvirtNotices: boolean;
  /** Which of libvirt's checks fires, when one does. */
  libvirtReason: string | null;
}

export interface StaleInput {
  fingerprint: Fingerprint;
  comparison: Comparison;
  baseline: Fingerprint | null;
  /** The module directory libvirt itself watches, if known. */
  libvirtModdir: string | null;
}

export function assessEntry(entry: CacheEntry, input: StaleInput): Staleness {
  const out: Staleness = {
    file: entry.file,
    emulator: entry.emulator,
    stale: false,
    reasons: [],
    libvirtNotices: false,
    libvirtReason: null,
  };
  if (entry.error || !entry.emulator) return out;
  const { fingerprint: fp } = input;
  const e = fp.emulators.find((x) => x.path === entry.emulator);
  const mtime = BigInt(entry.mtimeNs);
  if (!e || e.kind === 'missing') {
    out.reasons.push('its emulator no longer exists');
  } else if (entry.qemuctime !== null && entry.qemuctime !== seconds(e.ctimeNs)) {
    out.reasons.push(`its emulator changed (qemuctime ${entry.qemuctime}, emulator ctime now ${seconds(e.ctimeNs)})`);
  }
  out.libvirtReason = libvirtRecheck(entry, fp, input.libvirtModdir);
  out.libvirtNotices = out.libvirtReason !== null;
  const usage = dirsUsedBy(entry.emulator, fp);
  for (const d of fp.dirs) {
    if (!usage.dirs.has(d.path)) continue;
    const why = changedAfter(d, mtime);
    if (why) out.reasons.push(why);
  }
  const baselineAt = input.baseline ? BigInt(input.baseline.takenAtNs) : null;
  if (baselineAt !== null && mtime < baselineAt) {
    const changed = input.comparison.changes.filter((c) => isInvalidating(c) && usage.dirs.has(c.dir));
    if (changed.length > 0 && out.reasons.length === 0) {
      out.reasons.push(`modules changed since the baseline: ${changed.map((c) => c.name).join(', ')}`);
    }
  }
  out.stale = out.reasons.length > 0;
  return out;
}

/**
 * libvirt with the module-directory check writes <qemumoddirmtime> whenever
 * its directory exists; entries without it come from a libvirt that lacks
 * the check, or had no directory then. The check came in the 6.x series
 * (present in 9.0.0), so a 7.0 or later <selfvers> has it.
 */
export const MODDIR_CHECK_SINCE = 7_000_000;

/**
 * What libvirt's own re-validation (virQEMUCapsIsValid, on every lookup
 * and when a daemon loads the file) says about an entry: the reason it
 * re-probes, or null when it keeps serving the entry as it is. Only the
 * checks that concern QEMU are modelled: the emulator must exist with the
 * ctime in <qemuctime>, and the one compiled-in module directory's mtime
 * (whole seconds) must equal <qemumoddirmtime> (0 when absent).
 */
export function libvirtRecheck(entry: CacheEntry, fp: Fingerprint, libvirtModdir: string | null): string | null {
  if (entry.error || !entry.emulator) return null;
  const e = fp.emulators.find((x) => x.path === entry.emulator);
  if (!e || e.kind === 'missing') return `the emulator ${entry.emulator} is gone`;
  if (entry.qemuctime !== null && entry.qemuctime !== seconds(e.ctimeNs)) {
    return `the emulator's ctime (${seconds(e.ctimeNs)}) differs from <qemuctime> (${entry.qemuctime})`;
  }
  const hasCheck = entry.qemumoddirmtime !== null || (entry.selfvers !== null && entry.selfvers >= MODDIR_CHECK_SINCE);
  const dir = libvirtModdir ? fp.dirs.find((d) => d.path === libvirtModdir) : undefined;
  if (hasCheck && dir) {
    const recorded = entry.qemumoddirmtime ?? 0;
    const now = seconds(dir.mtimeNs);
    if (recorded !== now) return `the mtime of ${dir.path} (${now}) differs from <qemumoddirmtime> (${recorded})`;
  }
  return null;
}

/** The newest change in a directory, if it is newer than the cache entry. */
function changedAfter(d: DirRecord, mtime: bigint): string | null {
  // A module newer than the entry is the better explanation; the directory's
  // own ctime also moves when its mtime is put back, so it only speaks when
  // no module does (a module was removed).
  let newest: { name: string; ctime: bigint } | null = null;
  for (const m of d.modules) {
    const c = BigInt(m.ctimeNs);
    if (c > mtime && (!newest || c > newest.ctime)) newest = { name: m.name, ctime: c };
  }
  if (newest) return `module ${d.path}/${newest.name} changed after it was written`;
  if (BigInt(d.ctimeNs) > mtime) return `modules were added to or removed from ${d.path} after it was written`;
  return null;
}

export function seconds(ns: string): number {
  return Number(BigInt(ns) / 1_000_000_000n);
}

/** Emulators whose cache entries a set of changes affects. */
export function emulatorsAffected(comparison: Comparison, fp: Fingerprint, emulators: string[]): Set<string> {
  const changedDirs = new Set(comparison.changes.filter(isInvalidating).map((c) => c.dir));
  const out = new Set<string>();
  if (changedDirs.size === 0) return out;
  for (const path of emulators) {
    const usage = dirsUsedBy(path, fp);
    if (!usage.sure || [...changedDirs].some((d) => usage.dirs.has(d))) out.add(path);
  }
  return out;
}
