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

/** Where a module directory came from, in the order QEMU would consult them. */
export type DirSource = 'env' | 'default' | 'upgrade' | 'config' | 'wrapper';

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
export type EmulatorSource = 'path' | 'cache' | 'config' | 'domain' | 'wrapper';

export interface EmulatorRecord extends StatTuple {
  path: string;
  source: EmulatorSource;
  kind: EmulatorKind;
  mode: number;
  /** QEMU build stamp found inside the binary. */
  stamp: string | null;
  /** For a shell wrapper: the binary it execs, when that path is literal. */
  target: string | null;
  /** For a shell wrapper: a QEMU_MODULE_DIR it sets, when literal. */
  moduleDir: string | null;
  /**
   * Module directory paths that appear inside the binary (QEMU's compiled-in
   * CONFIG_QEMU_MODDIR), plus the upgrade-copy template when present.
   */
  dirsInBinary: string[];
  /** True when the binary knows the /var/run/qemu/<version> upgrade copies. */
  usesUpgradeDirs: boolean;
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
