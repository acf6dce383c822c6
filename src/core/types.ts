// Plain data shared by every stage of the pipeline (observe -> compare ->
// decide -> act). Everything here is JSON-serialisable because the baseline
// is stored as JSON; nanosecond times and inode numbers are decimal strings
// since they do not fit in a double.

/** stat data that tells whether a file may have changed since it was last read. */
export interface StatTuple {
  size: number;
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
  dev: string;
}

export interface ModuleRecord extends StatTuple {
  name: string;
  /** NT_GNU_BUILD_ID, lowercase hex. */
  buildId: string | null;
  /** Suffix of the exported `qemu_stamp_<hex>` symbol: QEMU's build stamp. */
  stamp: string | null;
  /** SHA-256 of the contents; only computed when asked for or when needed. */
  sha256: string | null;
  /** Why the file could not be read as a module; null when it could. */
  error: string | null;
}

/** Where a module directory came from, in the order QEMU would consult them; guest: only a running guest uses it. */
export type DirSource = 'env' | 'default' | 'upgrade' | 'config' | 'wrapper' | 'guest';

export interface DirRecord {
  /** Path as the system sees it (never prefixed with --root). */
  path: string;
  source: DirSource;
  mtimeNs: string;
  ctimeNs: string;
  modules: ModuleRecord[];
  /** Set when the directory exists but could not be listed. */
  error: string | null;
}

export type EmulatorKind = 'elf' | 'wrapper' | 'other' | 'missing';

/** One entry of the module table an emulator binary carries (QEMU's modinfo). */
export interface ModuleInfo {
  /** The module's name without `.so`: hw-display-qxl. */
  name: string;
  /** The one target that may load it (accel-tcg-i386: i386); null for any. */
  arch: string | null;
}

/** A binary of which nothing could be read. */
export function noFacts(kind: EmulatorKind): BinaryFacts {
  return {
    kind,
    stamp: null,
    dirsInBinary: [],
    usesUpgradeDirs: false,
    version: null,
    pkgVersion: null,
    modinfo: null,
  };
}

/** What an emulator binary says about itself, read without running it. */
export interface BinaryFacts {
  kind: EmulatorKind;
  /** QEMU build stamp found inside the binary. */
  stamp: string | null;
  /**
   * Module directory paths that appear inside the binary (QEMU's compiled-in
   * CONFIG_QEMU_MODDIR), plus the upgrade-copy template when present.
   */
  dirsInBinary: string[];
  /** True when the binary knows the /var/run/qemu/<version> upgrade copies. */
  usesUpgradeDirs: boolean;
  /** QEMU's version, 7.2.22; null when the binary does not say. */
  version: string | null;
  /**
   * The distro's package version QEMU was built as (QEMU_PKGVERSION), "Debian 1:7.2+dfsg-7+deb12u18+b3"; ''
   * when built without one.
   */
  pkgVersion: string | null;
  /** The modules this build knows, with their target; null when the binary has no table we can read. */
  modinfo: ModuleInfo[] | null;
}
export type EmulatorSource = 'path' | 'cache' | 'config' | 'domain' | 'wrapper';

export interface EmulatorRecord extends StatTuple, BinaryFacts {
  path: string;
  /**
   * The name of the file the path leads to, links followed
   * (qemu-system-amd64 -> qemu-system-x86_64): it names the target QEMU
   * was built for.
   */
  fileName: string;
  source: EmulatorSource;
  mode: number;
  /** For a shell wrapper: the binary it execs, when that path is literal. */
  target: string | null;
  /** For a shell wrapper: a QEMU_MODULE_DIR it sets, when literal. */
  moduleDir: string | null;
  error: string | null;
}

export interface Fingerprint {
  /** When the scan started, ns since the epoch. */
  takenAtNs: string;
  dirs: DirRecord[];
  emulators: EmulatorRecord[];
  /** Configured module directories that do not exist. */
  missingDirs: string[];
}

/** Modules in a fingerprint's directories, upgrade copies included. */
export function moduleCount(fp: Pick<Fingerprint, 'dirs'>): number {
  return fp.dirs.reduce((n, d) => n + d.modules.length, 0);
}

/** What the last run that acted did, as the state file keeps it (status shows it). */
export interface LastAction {
  /** ISO 8601 time. */
  at: string;
  /** What ran: a trigger as describeTrigger (core/plan.ts) says it, or 'invalidate'; accept records none. */
  trigger: string;
  summary: string;
  deleted: string[];
  nudged: string[];
}

export interface CacheEntry {
  /** File name, `<64 hex>.xml`. */
  file: string;
  mtimeNs: string;
  size: number;
  emulator: string | null;
  qemuctime: number | null;
  qemumoddirmtime: number | null;
  selfvers: number | null;
  error: string | null;
}

export interface CacheView {
  dir: string;
  exists: boolean;
  entries: CacheEntry[];
  error: string | null;
}

/** What the running binary of a guest says about itself (read through /proc/PID/exe). */
export type RunningBinary = BinaryFacts;

/**
 * A running QEMU process, as observed. Paths are system paths (as seen
 * under --root). Plain data, so the risk decision is a pure function.
 */
export interface GuestRecord {
  pid: number;
  /** libvirt's domain name: the pid file's name, else `-name guest=...`. */
  domain: string | null;
  /** Where it was found: libvirt's pid files, a scan of /proc, or both. */
  sources: ('libvirt' | 'proc')[];
  /** The path it was started from (/proc/PID/exe, else argv[0]); null when unknown. */
  exe: string | null;
  /** The kernel says the file it runs is no longer at `exe` (" (deleted)"). */
  exeDeleted: boolean;
  /** The binary it runs; null when it could not be read. */
  running: RunningBinary | null;
  /** The file at `exe` now; null when nothing is there (or exe is unknown). */
  onDisk: RunningBinary | null;
  /** QEMU_MODULE_DIR in its environment, when readable and absolute. */
  moduleDirEnv: string | null;
  /** Module file names it has mapped already: QEMU never loads those again. */
  loaded: string[];
  /** Why the guest could not be (fully) read. */
  error: string | null;
}
