import { abortsAfterRefusal, relocatedModuleDir, targetOf, upgradeDirOf, wouldLoad } from './qemu-rules';
import type { DirRecord, Fingerprint, GuestRecord, ModuleRecord } from './types';

// Running guests whose later module loads will fail. A running QEMU keeps
// what it loaded; a module it loads later (hot-plug of qxl, usb-redir, a
// smartcard, an rbd disk) must carry its own build stamp. Pure.

export type EmulatorState = 'current' | 'replaced' | 'deleted' | 'unknown';

export interface ModuleAtRisk {
  name: string;
  /** The file QEMU would find first, and its stamp. */
  file: string;
  stamp: string | null;
  /**
   * The guest's own upgrade copy (/var/run/qemu/<its version>) of the
   * module, with its stamp, that the file earlier in the search order
   * hides: QEMU stops at the first file that exists.
   */
  shadowedCopy: string | null;
}

export interface GuestRisk {
  pid: number;
  domain: string | null;
  sources: ('libvirt' | 'proc')[];
  emulator: string | null;
  emulatorState: EmulatorState;
  stamp: string | null;
  stampOnDisk: string | null;
  /** Module directories in the order this QEMU searches them (only the ones we scanned). */
  searchDirs: string[];
  /** null: cannot tell (its binary or stamp could not be read). */
  atRisk: boolean | null;
  modules: ModuleAtRisk[];
  /** Later loads that an upgrade copy of its build serves. */
  servedByUpgradeCopy: { name: string; file: string }[];
  /** The one upgrade-copy directory its QEMU looks in; null when it has none or its version is unknown. */
  upgradeCopyDir: string | null;
  /**
   * Whether its QEMU aborts on the module load after a refused one (so a failing hot-plug can kill the
   * guest); null: not known for its version.
   */
  refusalAborts: boolean | null;
  loaded: string[];
  error: string | null;
}

/** extraDirs: module directories only guests use (beside a binary from another prefix), scanned for them. */
export function assessGuests(guests: GuestRecord[], fp: Fingerprint, extraDirs: DirRecord[] = []): GuestRisk[] {
  return guests.map((g) => assessGuest(g, fp, extraDirs));
}

export function assessGuest(g: GuestRecord, fp: Fingerprint, extraDirs: DirRecord[] = []): GuestRisk {
  const stamp = g.running?.stamp ?? null;
  const dirs = searchOrder(g, [...fp.dirs, ...extraDirs]);
  const upgradeCopyDir = g.running ? upgradeDirOf(g.running) : null;
  const out: GuestRisk = {
    pid: g.pid,
    domain: g.domain,
    sources: g.sources,
    emulator: g.exe,
    emulatorState: emulatorState(g),
    stamp,
    stampOnDisk: g.onDisk?.stamp ?? null,
    searchDirs: dirs.map((d) => d.path),
    atRisk: null,
    modules: [],
    servedByUpgradeCopy: [],
    upgradeCopyDir,
    refusalAborts: abortsAfterRefusal(g.running?.version ?? null),
    loaded: [...g.loaded].sort(),
    error: g.error,
  };
  const running = g.running;
  if (!running || running.kind !== 'elf' || !stamp) return out;
  const loaded = new Set(g.loaded);
  const target = targetOf(g.exe);
  const names = [...new Set(dirs.flatMap((d) => d.modules.map((m) => m.name)))].sort();
  for (const name of names) {
    if (loaded.has(name) || wouldLoad(running, target, name) === false) continue;
    const found = firstFound(dirs, name);
    if (!found || found.module.error) continue; // unreadable modules are a finding of their own
    const file = `${found.dir.path}/${name}`;
    if (found.module.stamp === stamp) {
      if (found.dir.source === 'upgrade') out.servedByUpgradeCopy.push({ name, file });
      continue;
    }
    const later = dirs.slice(dirs.indexOf(found.dir) + 1);
    const copy = later.find(
      (d) => d.path === upgradeCopyDir && d.modules.some((m) => m.name === name && m.stamp === stamp),
    );
    out.modules.push({ name, file, stamp: found.module.stamp, shadowedCopy: copy ? `${copy.path}/${name}` : null });
  }
  out.atRisk = out.modules.length > 0;
  return out;
}

/**
 * The guest's search order, as QEMU builds it: QEMU_MODULE_DIR from its
 * environment, its compiled-in directory as relocated by where its binary
 * runs from, then the one upgrade copy of its own build. A binary that
 * names none of the scanned directories gets all the non-upgrade ones:
 * flagging too much is safer than missing a guest.
 */
function searchOrder(g: GuestRecord, scanned: DirRecord[]): DirRecord[] {
  const byPath = new Map(scanned.map((d) => [d.path, d]));
  const out: DirRecord[] = [];
  const add = (d: DirRecord | undefined) => {
    if (d && !out.includes(d)) out.push(d);
  };
  if (g.moduleDirEnv) add(byPath.get(g.moduleDirEnv));
  const compiled = guestModuleDirs(g)
    .map((p) => byPath.get(p))
    .filter((d): d is DirRecord => !!d && d.source !== 'upgrade');
  if (compiled.length > 0 || out.length > 0) compiled.forEach(add);
  else scanned.filter((d) => d.source !== 'upgrade').forEach(add);
  const own = g.running ? upgradeDirOf(g.running) : null;
  if (own) add(byPath.get(own));
  return out;
}

/**
 * The module directories a guest's QEMU searches besides QEMU_MODULE_DIR:
 * its compiled-in one, relocated by where it runs from. Of the paths ending
 * in /qemu its binary names, that is the one in a lib directory
 * (/usr/share/qemu, /etc/qemu hold its data and config).
 */
export function guestModuleDirs(g: GuestRecord): string[] {
  const r = g.running;
  if (!r) return [];
  return r.dirsInBinary
    .filter((d) => MODULE_DIR_RE.test(d))
    .map((d) => (g.exe ? (relocatedModuleDir(g.exe, d, r.version) ?? d) : d));
}

const MODULE_DIR_RE = /\/lib(?:64|exec)?(?:\/[^/]+)?\/qemu$/;

function firstFound(dirs: DirRecord[], name: string): { dir: DirRecord; module: ModuleRecord } | null {
  for (const dir of dirs) {
    const module = dir.modules.find((m) => m.name === name);
    if (module) return { dir, module };
  }
  return null;
}

/**
 * Whether the file the guest runs is still the one at its path. The kernel
 * marks a replaced or removed binary " (deleted)"; a different stamp at
 * the path says the same where the kernel's word is not available.
 */
export function emulatorState(g: GuestRecord): EmulatorState {
  if (!g.exe) return 'unknown';
  if (!g.onDisk) return 'deleted';
  if (g.exeDeleted) return 'replaced';
  const a = g.running?.stamp;
  const b = g.onDisk.stamp;
  if (a && b && a !== b) return 'replaced';
  return g.running ? 'current' : 'unknown';
}

/** "web01 (pid 1234)", or "pid 1234" for a QEMU libvirt does not know. */
export function guestLabel(g: { domain: string | null; pid: number }): string {
  return g.domain !== null ? `guest '${g.domain}' (pid ${g.pid})` : `QEMU process ${g.pid}`;
}

/** Splits what /proc/PID/exe's link says into the path and the kernel's " (deleted)" mark. */
export function parseExeLink(text: string): { path: string; deleted: boolean } {
  const suffix = ' (deleted)';
  return text.endsWith(suffix)
    ? { path: text.slice(0, -suffix.length), deleted: true }
    : { path: text, deleted: false };
}

/**
 * The domain name in a QEMU command line: libvirt passes
 * `-name guest=NAME,debug-threads=on` with commas in NAME doubled; plain
 * `-name NAME` is older syntax.
 */
export function domainFromArgs(args: string[]): string | null {
  const i = args.findIndex((a) => a === '-name' || a === '--name');
  const value = i >= 0 ? args[i + 1] : undefined;
  if (value === undefined) return null;
  const body = value.startsWith('guest=') ? value.slice('guest='.length) : value.includes('=') ? null : value;
  if (body === null) return null;
  let name = '';
  for (let j = 0; j < body.length; j++) {
    if (body[j] === ',') {
      if (body[j + 1] !== ',') break;
      j++;
    }
    name += body[j];
  }
  return name || null;
}

/** True for what an emulator's file name looks like: qemu-system-<arch>, qemu-kvm. */
export function looksLikeEmulator(path: string): boolean {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.startsWith('qemu-system-') || base === 'qemu-kvm';
}
