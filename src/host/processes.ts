import * as fs from 'node:fs';
import * as path from 'node:path';
import { domainFromArgs, looksLikeEmulator, parseExeLink } from '../core/guests';
import { noFacts, type BinaryFacts, type Fingerprint, type GuestRecord, type RunningBinary } from '../core/types';
import { readEmulator } from '../formats/emulator-reader';
import { errCode, openRegular, statOrNull } from '../os/file-info';
import { PROC_DIR, UPGRADE_PARENT, type Paths } from './paths';

// observe: the QEMU processes running now. libvirt's pid files name its
// guests; a scan of /proc finds the rest (a QEMU started by hand, another
// libvirt). Under --root both are read from the sysroot, so a test can fake
// them, or link <root>/proc to the real /proc.

export interface GuestScan {
  /** False when there is no /proc to read (a mounted image, a bare sysroot). */
  checked: boolean;
  guests: GuestRecord[];
}

const MAX_CMDLINE = 128 * 1024;
const MAX_ENVIRON = 1024 * 1024;
const MAX_MAPS = 16 * 1024 * 1024;

export function scanGuests(paths: Paths, fp: Fingerprint): GuestScan {
  const procNames = readdirOrNull(paths.host(PROC_DIR));
  if (procNames === null) return { checked: false, guests: [] };
  const found = new Map<number, { domain: string | null; sources: Set<'libvirt' | 'proc'> }>();
  for (const [pid, domain] of pidFiles(paths)) {
    if (statOrNull(paths.host(`${PROC_DIR}/${pid}`))) found.set(pid, { domain, sources: new Set(['libvirt']) });
  }
  const args = new Map<number, string[]>();
  for (const name of procNames) {
    if (!/^[1-9][0-9]*$/.test(name)) continue;
    const pid = Number(name);
    const argv = readArgs(paths, pid);
    if (argv) args.set(pid, argv);
    const link = readExeLink(paths, pid);
    const isQemu =
      (argv?.[0] !== undefined && looksLikeEmulator(argv[0])) ||
      (link !== null && looksLikeEmulator(parseExeLink(link).path));
    if (!isQemu) continue;
    const known = found.get(pid);
    if (known) known.sources.add('proc');
    else found.set(pid, { domain: null, sources: new Set(['proc']) });
  }
  const binaries = new BinaryCache(paths, fp);
  const guests: GuestRecord[] = [];
  for (const [pid, f] of [...found].sort((a, b) => a[0] - b[0])) {
    const argv = args.get(pid) ?? readArgs(paths, pid) ?? [];
    guests.push(readGuest(paths, pid, f.domain ?? domainFromArgs(argv), [...f.sources].sort(), argv, binaries));
  }
  return { checked: true, guests };
}

/** `<domain>.pid` files: libvirt writes the QEMU pid of each running guest. */
function pidFiles(paths: Paths): [number, string][] {
  const dir = paths.host(paths.pidDir);
  const out: [number, string][] = [];
  for (const name of readdirOrNull(dir) ?? []) {
    if (!name.endsWith('.pid') || name.length <= 4) continue;
    try {
      const { fd, st } = openRegular(path.join(dir, name));
      try {
        const buf = Buffer.alloc(Math.min(Number(st.size), 64));
        const text = buf
          .subarray(0, fs.readSync(fd, buf, 0, buf.length, 0))
          .toString('latin1')
          .trim();
        if (/^[1-9][0-9]{0,9}$/.test(text)) out.push([Number(text), name.slice(0, -4)]);
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      // A pid file that vanished or is not a file names no running guest.
    }
  }
  return out;
}

function readGuest(
  paths: Paths,
  pid: number,
  domain: string | null,
  sources: ('libvirt' | 'proc')[],
  argv: string[],
  binaries: BinaryCache,
): GuestRecord {
  const proc = procFile(paths, pid);
  const g: GuestRecord = {
    pid,
    domain,
    sources,
    exe: null,
    exeDeleted: false,
    running: null,
    onDisk: null,
    moduleDirEnv: null,
    loaded: [],
    error: null,
  };
  const link = readExeLink(paths, pid);
  if (link !== null) {
    const { path: p, deleted } = parseExeLink(link);
    // A relative link only exists in a faked /proc: resolve it as the
    // kernel would inside the sysroot.
    g.exe = p.startsWith('/') ? paths.system(p) : path.posix.resolve(`${PROC_DIR}/${pid}`, p);
    g.exeDeleted = deleted;
  } else if (argv[0]?.startsWith('/')) {
    g.exe = argv[0];
  }
  const onDiskStat = g.exe ? statOrNull(paths.host(g.exe)) : null;
  try {
    // Opening /proc/PID/exe reads the binary the process runs, even after
    // the file at its path was replaced or deleted.
    g.running = binaries.read(proc('exe'));
  } catch (e) {
    g.error = `cannot read its binary: ${errCode(e)}`;
  }
  if (g.exe && onDiskStat?.isFile()) {
    try {
      g.onDisk = binaries.read(paths.host(g.exe));
    } catch (e) {
      g.error ??= `cannot read ${g.exe}: ${errCode(e)}`;
      g.onDisk = noFacts('other');
    }
  }
  const env = readProcFile(proc('environ'), MAX_ENVIRON);
  const dir = env
    ?.split('\0')
    .find((v) => v.startsWith('QEMU_MODULE_DIR='))
    ?.slice('QEMU_MODULE_DIR='.length);
  if (dir?.startsWith('/')) g.moduleDirEnv = dir.length > 1 ? dir.replace(/\/+$/, '') : dir;
  g.loaded = loadedModules(paths, readProcFile(proc('maps'), MAX_MAPS) ?? '');
  return g;
}

/** Names of the module files a process has mapped: those it loaded already. */
function loadedModules(paths: Paths, maps: string): string[] {
  const out = new Set<string>();
  for (const line of maps.split('\n')) {
    const at = line.indexOf(' /');
    if (at < 0) continue;
    const file = paths.system(parseExeLink(line.slice(at + 1)).path);
    const dir = path.posix.dirname(file);
    if (
      file.endsWith('.so') &&
      (dir.endsWith('/qemu') || dir.startsWith(`${UPGRADE_PARENT}/`) || dir.startsWith('/run/qemu/'))
    ) {
      out.add(path.posix.basename(file));
    }
  }
  return [...out].sort();
}

/**
 * The files of /proc/PID. A real procfs (a live system, or one mounted
 * into the root) is read as the kernel offers it: its exe link opens the
 * binary the process runs, wherever that is. Any other /proc under --root
 * is part of the image, and its links resolve inside the image.
 */
function procFile(paths: Paths, pid: number): (f: string) => string {
  const real = paths.root === '/' || isProcfs(paths.hostNoFollow(PROC_DIR));
  return (f) => (real ? paths.hostNoFollow(`${PROC_DIR}/${pid}/${f}`) : paths.host(`${PROC_DIR}/${pid}/${f}`));
}

const PROC_SUPER_MAGIC = 0x9fa0;

/** Whether dir is a real procfs (the kernel's), not an image's or a test's files. */
export function isProcfs(dir: string): boolean {
  try {
    return fs.statfsSync(dir).type === PROC_SUPER_MAGIC;
  } catch {
    return false;
  }
}

function readExeLink(paths: Paths, pid: number): string | null {
  try {
    return fs.readlinkSync(paths.hostNoFollow(`${PROC_DIR}/${pid}/exe`));
  } catch {
    // EINVAL: a regular file in a faked /proc; EACCES: another user's process.
    return null;
  }
}

function readArgs(paths: Paths, pid: number): string[] | null {
  const text = readProcFile(paths.host(`${PROC_DIR}/${pid}/cmdline`), MAX_CMDLINE);
  if (!text) return null;
  return text.replace(/\0$/, '').split('\0');
}

/**
 * Reads a /proc file whole. procfs reports size 0, so this reads to EOF.
 * Such a read can block (a process stuck in D state holds the lock that
 * cmdline, environ and maps need); O_NONBLOCK changes nothing on procfs,
 * which is why `--timeout` exists.
 */
function readProcFile(file: string, max: number): string | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY);
  } catch {
    return null;
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(Buffer.from(buf.subarray(0, n)));
      total += n;
      if (total >= max) break;
    }
    return Buffer.concat(chunks).toString('utf8');
  } catch {
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

/** A directory's names, unsorted; null when it cannot be read (unlike os/file-info's listDir: sorted, else none). */
function readdirOrNull(dir: string): string[] | null {
  try {
    return fs.readdirSync(dir);
  } catch {
    return null;
  }
}

/**
 * Reads each binary once: a hundred guests usually run one emulator. The
 * file an emulator scan already read (same inode, same ctime) is not read
 * again.
 */
class BinaryCache {
  private readonly byFile = new Map<string, RunningBinary>();

  constructor(paths: Paths, fp: Fingerprint) {
    for (const e of fp.emulators) {
      if (e.kind === 'missing' || e.error) continue;
      const st = statOrNull(paths.host(e.path));
      if (st && st.ino.toString() === e.ino && st.dev.toString() === e.dev && st.ctimeNs.toString() === e.ctimeNs) {
        this.byFile.set(key(st), facts(e));
      }
    }
  }

  read(file: string): RunningBinary {
    const { fd, st } = openRegular(file);
    try {
      const k = key(st);
      const known = this.byFile.get(k);
      if (known) return known;
      const rec = facts(readEmulator(fd, Number(st.size)));
      this.byFile.set(k, rec);
      return rec;
    } finally {
      fs.closeSync(fd);
    }
  }
}

function key(st: fs.BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.ctimeNs}`;
}

/** The facts of a binary, without what else a record holds. */
function facts(e: BinaryFacts): RunningBinary {
  return {
    kind: e.kind,
    stamp: e.stamp,
    dirsInBinary: e.dirsInBinary,
    usesUpgradeDirs: e.usesUpgradeDirs,
    version: e.version,
    pkgVersion: e.pkgVersion,
    modinfo: e.modinfo,
  };
}
