import * as fs from 'node:fs';
import * as path from 'node:path';
import { RACY_MARGIN_NS, sameStat } from '../core/compare';
import {
  noFacts,
  type DirRecord,
  type DirSource,
  type EmulatorRecord,
  type EmulatorSource,
  type Fingerprint,
  type ModuleRecord,
} from '../core/types';
import type { Config } from './config';
import { readElfInfo } from '../formats/elf';
import { readEmulator } from '../formats/emulator-reader';
import { errCode, listDir, openRegular, sha256OfFd, statOrNull, statTuple } from '../os/file-info';
import {
  DEFAULT_MODULE_DIRS,
  EMULATOR_DIRS,
  EXTRA_EMULATORS,
  MULTIARCH_PARENTS,
  MULTIARCH_RE,
  UPGRADE_PARENT,
  type Paths,
} from './paths';

// observe: turns the system into a Fingerprint. Files whose stat data equal
// the baseline's are not opened again, so the common path is stat calls only.

/** A directory the scan lists: each entry whose name matches leads to a place to look at. */
export interface ListedDir {
  dir: string;
  match: (name: string) => boolean;
  /** What is under a matching entry: `<dir>/<name>/<under>`; null for the entry itself. */
  under: string | null;
}

/**
 * Every fixed place the scan looks at, besides those the config, the
 * environment, the baseline and libvirt name. The fast path's watch list
 * (store/fast-path.ts) is derived from this same table, so a place added
 * here is watched too (test/unit/fast-path.test.ts).
 */
export const SCAN_PLACES: {
  /** Module directories looked in when they exist, in the order QEMU consults them. */
  moduleDirs: readonly string[];
  /** Directories listed for module directories (multiarch, then Debian's upgrade copies). */
  moduleDirParents: readonly (ListedDir & { source: DirSource })[];
  /** Directories listed for emulators. */
  emulatorDirs: readonly ListedDir[];
  /** Emulators at fixed paths, looked at when they exist. */
  emulators: readonly string[];
} = {
  moduleDirs: DEFAULT_MODULE_DIRS,
  moduleDirParents: [
    ...MULTIARCH_PARENTS.map((dir) => ({
      dir,
      match: (name: string) => MULTIARCH_RE.test(name),
      under: 'qemu',
      source: 'default' as const,
    })),
    { dir: UPGRADE_PARENT, match: (name: string) => !name.startsWith('.'), under: null, source: 'upgrade' },
  ],
  emulatorDirs: EMULATOR_DIRS.map((dir) => ({ dir, match: (name) => name.startsWith('qemu-system-'), under: null })),
  emulators: EXTRA_EMULATORS,
};

/** The places a listed directory's matching entries lead to, in name order. */
export function listedPlaces(paths: Paths, l: ListedDir): string[] {
  const out: string[] = [];
  for (const name of listDir(paths.host(l.dir))) {
    if (l.match(name)) out.push(l.under === null ? `${l.dir}/${name}` : `${l.dir}/${name}/${l.under}`);
  }
  return out;
}

export interface ScanInput {
  paths: Paths;
  config: Config;
  /** The caller's environment, for QEMU_MODULE_DIR. */
  env: NodeJS.ProcessEnv;
  /** Emulators named elsewhere: libvirt's cache entries, the domain being started. */
  extraEmulators: { path: string; source: EmulatorSource }[];
  baseline: Fingerprint | null;
}

interface Candidate {
  path: string;
  source: DirSource;
}

export function takeFingerprint(input: ScanInput): Fingerprint {
  const takenAtNs = (BigInt(Date.now()) * 1_000_000n).toString();
  const { paths, config } = input;
  const missingDirs: string[] = [];
  const candidates = moduleDirCandidates(input);
  const emulators = scanEmulators(input);
  for (const e of emulators) {
    if (e.moduleDir) candidates.push({ path: e.moduleDir, source: 'wrapper' });
  }
  const baselineDirs = new Map(input.baseline?.dirs.map((d) => [d.path, d]) ?? []);
  const racyAfterNs = input.baseline ? BigInt(input.baseline.takenAtNs) - RACY_MARGIN_NS : null;
  const seen = new Set<string>();
  const dirs: DirRecord[] = [];
  for (const c of candidates) {
    const st = statOrNull(paths.host(c.path));
    if (!st?.isDirectory()) {
      if (c.source === 'config' || c.source === 'wrapper') missingDirs.push(c.path);
      continue;
    }
    // /usr/lib64 -> /usr/lib and /var/run -> /run make one directory show up twice.
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) continue;
    seen.add(key);
    dirs.push(scanDir(paths, c, st, baselineDirs.get(c.path), config.contentHash, racyAfterNs));
  }
  return { takenAtNs, dirs, emulators, missingDirs: [...new Set(missingDirs)] };
}

/**
 * Module directories outside the fingerprint (those only a running guest
 * uses): scanned the same way, without a baseline, left out of what is
 * compared and recorded.
 */
export function scanModuleDirs(paths: Paths, config: Config, dirPaths: string[]): DirRecord[] {
  const out: DirRecord[] = [];
  for (const p of [...new Set(dirPaths)]) {
    const st = statOrNull(paths.host(p));
    if (st?.isDirectory())
      out.push(scanDir(paths, { path: p, source: 'guest' }, st, undefined, config.contentHash, null));
  }
  return out;
}

/** Module directories in the order QEMU consults them, then the ones only the admin knows. */
export function moduleDirCandidates(input: Pick<ScanInput, 'paths' | 'config' | 'env'>): Candidate[] {
  const { paths, config, env } = input;
  const out: Candidate[] = [];
  const envDir = env.QEMU_MODULE_DIR;
  if (envDir && envDir.startsWith('/')) out.push({ path: envDir.replace(/\/+$/, ''), source: 'env' });
  for (const d of SCAN_PLACES.moduleDirs) out.push({ path: d, source: 'default' });
  for (const l of SCAN_PLACES.moduleDirParents) {
    for (const p of listedPlaces(paths, l)) out.push({ path: p, source: l.source });
  }
  for (const d of config.dirs) out.push({ path: d, source: 'config' });
  return out;
}

function scanDir(
  paths: Paths,
  c: Candidate,
  st: fs.BigIntStats,
  before: DirRecord | undefined,
  contentHash: boolean,
  racyAfterNs: bigint | null,
): DirRecord {
  const record: DirRecord = {
    path: c.path,
    source: c.source,
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    modules: [],
    error: null,
  };
  let names: string[];
  try {
    names = fs
      .readdirSync(paths.host(c.path))
      .filter((n) => n.endsWith('.so'))
      .sort();
  } catch (e) {
    record.error = `cannot list ${c.path}: ${errCode(e)}`;
    return record;
  }
  const previous = new Map(before?.modules.map((m) => [m.name, m]) ?? []);
  const dirOnHost = paths.host(c.path).replace(/\/+$/, '');
  // Under --root a module may be a symlink out of the image: each is resolved inside it.
  const fileOnHost =
    paths.root === '/' ? (name: string) => `${dirOnHost}/${name}` : (name: string) => paths.host(`${c.path}/${name}`);
  for (const name of names) {
    // A plain concatenation: path.join costs more than the stat itself over 10,000 modules.
    const m = scanModule(fileOnHost(name), name, previous.get(name), contentHash, racyAfterNs);
    if (m) record.modules.push(m);
  }
  return record;
}

/** null when the file vanished between readdir and stat: it is simply not there. */
function scanModule(
  file: string,
  name: string,
  before: ModuleRecord | undefined,
  contentHash: boolean,
  racyAfterNs: bigint | null,
): ModuleRecord | null {
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(file, { bigint: true });
  } catch (e) {
    const code = errCode(e);
    if (code === 'ENOENT') return null;
    // A symlink loop, or a file we may not look at: named like a module, so reported rather than skipped.
    const unseen = { size: 0, mtimeNs: '0', ctimeNs: '0', ino: '0', dev: '0' };
    return before && before.error === code && sameStat(before, unseen)
      ? { ...before, name }
      : { name, ...unseen, buildId: null, stamp: null, sha256: null, error: code };
  }
  const tuple = statTuple(st);
  const racy = racyAfterNs === null || st.ctimeNs >= racyAfterNs || st.mtimeNs >= racyAfterNs;
  if (before && !racy && sameStat(before, tuple) && (!contentHash || before.sha256 !== null || before.error !== null)) {
    return { ...before, name };
  }
  const record: ModuleRecord = { name, ...tuple, buildId: null, stamp: null, sha256: null, error: null };
  // Opening a device node can have effects (a tape rewinds, a watchdog arms); a FIFO or socket has no contents.
  if (!st.isFile()) {
    record.error = 'not a regular file';
    return record;
  }
  let fd: number;
  try {
    const opened = openRegular(file);
    fd = opened.fd;
    // Describe the file we actually read, even if it was replaced after stat.
    Object.assign(record, statTuple(opened.st));
  } catch (e) {
    const reason = errCode(e);
    if (reason === 'ENOENT') return null;
    record.error = reason;
    return record;
  }
  try {
    try {
      Object.assign(record, readElfInfo(fd, record.size));
    } catch (e) {
      record.error = errCode(e);
    }
    // Without a build-id nothing else tells a rebuilt module from a touched one.
    if (contentHash || record.buildId === null) record.sha256 = sha256OfFd(fd, record.size);
  } catch (e) {
    record.error ??= errCode(e);
  } finally {
    fs.closeSync(fd);
  }
  return record;
}

function scanEmulators(input: ScanInput): EmulatorRecord[] {
  const { paths, config } = input;
  const wanted: { path: string; source: EmulatorSource }[] = [];
  for (const l of SCAN_PLACES.emulatorDirs) {
    for (const p of listedPlaces(paths, l)) wanted.push({ path: p, source: 'path' });
  }
  for (const p of SCAN_PLACES.emulators) if (statOrNull(paths.host(p))) wanted.push({ path: p, source: 'path' });
  for (const p of config.emulators) wanted.push({ path: p, source: 'config' });
  wanted.push(...input.extraEmulators);

  const before = new Map(input.baseline?.emulators.map((e) => [e.path, e]) ?? []);
  const out = new Map<string, EmulatorRecord>();
  for (let i = 0; i < wanted.length; i++) {
    const w = wanted[i]!;
    if (out.has(w.path)) continue;
    const rec = scanEmulator(paths.host(w.path), w.path, w.source, before.get(w.path));
    out.set(w.path, rec);
    if (rec.target && !out.has(rec.target)) wanted.push({ path: rec.target, source: 'wrapper' });
  }
  return [...out.values()];
}

function scanEmulator(
  file: string,
  p: string,
  source: EmulatorSource,
  before: EmulatorRecord | undefined,
): EmulatorRecord {
  const st = statOrNull(file);
  if (!st) {
    return {
      path: p,
      source,
      mode: 0,
      size: 0,
      mtimeNs: '0',
      ctimeNs: '0',
      ino: '0',
      dev: '0',
      ...noFacts('missing'),
      target: null,
      moduleDir: null,
      fileName: path.basename(p),
      error: null,
    };
  }
  const tuple = statTuple(st);
  const mode = Number(st.mode & 0o7777n);
  if (before && before.kind !== 'missing' && sameStat(before, tuple) && reusable(before))
    return { ...before, source, mode };
  // Read only with the binary: the common run reuses the baseline's record.
  const empty = { target: null, moduleDir: null, fileName: fileNameOf(file, p) };
  try {
    const { fd, st: opened } = openRegular(file, { executable: true });
    try {
      return {
        path: p,
        source,
        mode,
        fileName: empty.fileName,
        ...statTuple(opened),
        ...readEmulator(fd, Number(opened.size)),
        error: null,
      };
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    return { path: p, source, mode, ...tuple, ...noFacts('other'), ...empty, error: errCode(e) };
  }
}

/** The name of the file an emulator path leads to; its own name when that cannot be told. */
function fileNameOf(file: string, p: string): string {
  try {
    return path.basename(fs.realpathSync(file));
  } catch {
    return path.basename(p);
  }
}

/**
 * A baseline record is reused as it is, and its target and module
 * directory become paths to look at: a hand-edited state that the loader
 * let through must not make every later run throw. Anything odd is read
 * again instead.
 */
function reusable(e: EmulatorRecord): boolean {
  const str = (v: unknown) => v === null || typeof v === 'string';
  return (
    ['elf', 'wrapper', 'other'].includes(e.kind) &&
    str(e.stamp) &&
    str(e.target) &&
    str(e.moduleDir) &&
    str(e.error) &&
    typeof e.usesUpgradeDirs === 'boolean' &&
    Array.isArray(e.dirsInBinary) &&
    e.dirsInBinary.every((d) => typeof d === 'string') &&
    // Baselines from before these were read have none: read the binary again.
    str(e.version) &&
    str(e.pkgVersion) &&
    typeof e.fileName === 'string' &&
    (e.modinfo === null ||
      (Array.isArray(e.modinfo) &&
        e.modinfo.every((m) => m !== null && typeof m === 'object' && typeof m.name === 'string' && str(m.arch))))
  );
}
