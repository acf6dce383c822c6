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
   * An upgrade copy (/var/run/qemu/<version>) with the guest's stamp that a
   * file earlier in the search order hides: QEMU 7.2 and later stop at the
   * first file that exists, older ones go on to the copy.
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
  /** False when its binary named no scanned module directory and every one was assumed. */
  dirsSure: boolean;
  /** null: cannot tell (its binary or stamp could not be read). */
  atRisk: boolean | null;
  modules: ModuleAtRisk[];
  /** Later loads that an upgrade copy of its build serves. */
  servedByUpgradeCopy: { name: string; file: string }[];
  loaded: string[];
  error: string | null;
}

export function assessGuests(guests: GuestRecord[], fp: Fingerprint): GuestRisk[] {
  return guests.map((g) => assessGuest(g, fp));
}

export function assessGuest(g: GuestRecord, fp: Fingerprint): GuestRisk {
  const stamp = g.running?.stamp ?? null;
  const { dirs, sure } = searchOrder(g, fp);
  const out: GuestRisk = {
    pid: g.pid,
    domain: g.domain,
    sources: g.sources,
    emulator: g.exe,
    emulatorState: emulatorState(g),
    stamp,
    stampOnDisk: g.onDisk?.stamp ?? null,
    searchDirs: dirs.map((d) => d.path),
    dirsSure: sure,
    atRisk: null,
    modules: [],
    servedByUpgradeCopy: [],
    loaded: [...g.loaded].sort(),
    error: g.error,
  };
  if (!g.running || g.running.kind !== 'elf' || !stamp) return out;
  const loaded = new Set(g.loaded);
  const names = [...new Set(dirs.flatMap((d) => d.modules.map((m) => m.name)))].sort();
  for (const name of names) {
    if (loaded.has(name)) continue;
    const found = firstFound(dirs, name);
    if (!found || found.module.error) continue; // unreadable modules are a finding of their own
    const file = `${found.dir.path}/${name}`;
    if (found.module.stamp === stamp) {
      if (found.dir.source === 'upgrade') out.servedByUpgradeCopy.push({ name, file });
      continue;
    }
    const later = dirs.slice(dirs.indexOf(found.dir) + 1);
    const copy = later.find((d) => d.source === 'upgrade' && d.modules.some((m) => m.name === name && m.stamp === stamp));
    out.modules.push({ name, file, stamp: found.module.stamp, shadowedCopy: copy ? `${copy.path}/${name}` : null });
  }
  out.atRisk = out.modules.length > 0;
  return out;
}

/**
 * The guest's search order, as QEMU builds it: QEMU_MODULE_DIR from its
 * environment, its compiled-in directory, then the upgrade copy of its own
 * build. A binary that names none of the scanned directories gets all the
 * non-upgrade ones: flagging too much is safer than missing a guest.
 */
function searchOrder(g: GuestRecord, fp: Fingerprint): { dirs: DirRecord[]; sure: boolean } {
  const byPath = new Map(fp.dirs.map((d) => [d.path, d]));
  const out: DirRecord[] = [];
  const add = (d: DirRecord | undefined) => {
    if (d && !out.includes(d)) out.push(d);
  };
  if (g.moduleDirEnv) add(byPath.get(g.moduleDirEnv));
  const compiled = (g.running?.dirsInBinary ?? []).map((p) => byPath.get(p)).filter((d): d is DirRecord => !!d && d.source !== 'upgrade');
  const sure = compiled.length > 0 || out.length > 0;
  if (sure) compiled.forEach(add);
  else fp.dirs.filter((d) => d.source !== 'upgrade').forEach(add);
  const stamp = g.running?.stamp;
  if (stamp && g.running?.usesUpgradeDirs) {
    fp.dirs.filter((d) => d.source === 'upgrade' && d.modules.some((m) => m.stamp === stamp)).forEach(add);
  }
  return { dirs: out, sure };
}

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
  return text.endsWith(suffix) ? { path: text.slice(0, -suffix.length), deleted: true } : { path: text, deleted: false };
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
