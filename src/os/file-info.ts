import * as fs from 'node:fs';
import type { StatTuple } from '../core/types';

/**
 * What a path lookup past its limit of symlinks resolves to (host/paths.ts): a path with a NUL byte, which
 * Node refuses before any system call, so a link loop in an image can
 * neither hang the tool nor, handed to the kernel as it is, lead out of it.
 */
export const UNRESOLVABLE = '\0symlink-loop';

export function statTuple(st: fs.BigIntStats): StatTuple {
  return {
    size: Number(st.size),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
    dev: st.dev.toString(),
  };
}

// "Not there" is the common answer for many paths a run looks at (module
// and emulator directories of other distros): throwIfNoEntry spares making
// an Error and its stack trace for each, a good part of a cold start's cost.

/** stat(2) that answers null for "not there" (or not looked at) instead of throwing. */
export function statOrNull(p: string): fs.BigIntStats | null {
  try {
    return fs.statSync(p, { bigint: true, throwIfNoEntry: false }) ?? null;
  } catch {
    return null;
  }
}

/** lstat(2), answering null for "not there". */
export function lstatOrNull(p: string): fs.BigIntStats | null {
  try {
    return fs.lstatSync(p, { bigint: true, throwIfNoEntry: false }) ?? null;
  } catch {
    return null;
  }
}

export function readlinkOrNull(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
}

/** A directory's names, sorted (a stable order for baselines and the watch list); none when it cannot be read. */
export function listDir(dir: string): string[] {
  if (!statOrNull(dir)) return [];
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** The errno code of a failed call (ENOENT, EACCES), else the error's message: short enough for a log line. */
export function errCode(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  // The path --root resolution gives a symlink loop fails as the kernel's own lookup would.
  if (err.code === 'ERR_INVALID_ARG_VALUE' && String(err.message).includes(UNRESOLVABLE.slice(1))) return 'ELOOP';
  return err.code ?? err.message ?? String(e);
}

/**
 * The first max bytes of a small file (a record of ours, a /proc entry) as
 * UTF-8, in one read; throws what open or read throws. O_NONBLOCK: a FIFO
 * put in its place must not hang the caller.
 */
export function readHead(file: string, max: number): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    const buf = Buffer.alloc(max);
    return buf.subarray(0, fs.readSync(fd, buf, 0, max, null)).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Opens a regular file for reading, and never anything else: opening a
 * device node can act (a tape rewinds, a watchdog arms, and some reboot
 * the host when closed), a FIFO can block. Paths come from others (a
 * domain's <emulator>, a cache entry, a module directory), so checking
 * with stat and then opening would leave a window to swap in a symlink to
 * a device. With O_PATH nothing is opened yet; the descriptor pins the
 * inode, fstat checks it, and /proc/self/fd reopens exactly that inode.
 */
export function openRegular(
  p: string,
  opts: { noFollow?: boolean; executable?: boolean } = {},
): { fd: number; st: fs.BigIntStats } {
  const readFlags = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY;
  const noFollow = opts.noFollow ? fs.constants.O_NOFOLLOW : 0;
  if (O_PATH !== 0 && haveProcFd()) {
    // With O_PATH, O_NOFOLLOW yields the symlink itself, which fstat then refuses.
    const pathFd = fs.openSync(p, O_PATH | noFollow);
    try {
      const pinned = fs.fstatSync(pathFd, { bigint: true });
      if (!pinned.isFile()) throw new NotRegularError(pinned.isSymbolicLink());
      if (opts.executable) mustBeExecutable(pinned);
      const fd = fs.openSync(`/proc/self/fd/${pathFd}`, readFlags);
      return { fd, st: fstatRegular(fd) };
    } finally {
      fs.closeSync(pathFd);
    }
  }
  const before = noFollow ? fs.lstatSync(p, { bigint: true }) : fs.statSync(p, { bigint: true });
  if (!before.isFile()) throw new NotRegularError(before.isSymbolicLink());
  if (opts.executable) mustBeExecutable(before);
  const fd = fs.openSync(p, readFlags | noFollow);
  const st = fstatRegular(fd);
  if (st.ino !== before.ino || st.dev !== before.dev) {
    fs.closeSync(fd);
    throw new Error('replaced while being opened');
  }
  return { fd, st };
}

/**
 * An emulator is something libvirt can exec. Anything else a domain names
 * is not read: some files are consumed by reading (/proc/kmsg).
 */
function mustBeExecutable(st: fs.BigIntStats): void {
  if ((st.mode & 0o111n) === 0n) throw new Error('not executable');
}

export class NotRegularError extends Error {
  constructor(readonly symlink: boolean) {
    super(symlink ? 'a symlink' : 'not a regular file');
  }
}

function fstatRegular(fd: number): fs.BigIntStats {
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile()) throw new NotRegularError(false);
    return st;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** O_PATH has the generic value on every architecture Node builds for but a few old ones. */
const O_PATH =
  process.platform === 'linux' &&
  ['x64', 'ia32', 'arm', 'arm64', 'ppc64', 's390x', 'riscv64', 'loong64'].includes(process.arch)
    ? 0o10000000
    : 0;

let procFd: boolean | undefined;
/** Tried once: no /proc, or a security policy that forbids reopening through it, means the fallback. */
function haveProcFd(): boolean {
  if (procFd === undefined) {
    procFd = false;
    try {
      const pathFd = fs.openSync(process.execPath, O_PATH);
      try {
        fs.closeSync(fs.openSync(`/proc/self/fd/${pathFd}`, fs.constants.O_RDONLY));
        procFd = true;
      } finally {
        fs.closeSync(pathFd);
      }
    } catch {
      // The fallback it is.
    }
  }
  return procFd;
}

const HASH_LIMIT = 1024 * 1024 * 1024;
const CHUNK = 1024 * 1024;

/** node:crypto, loaded on first use: it costs every start milliseconds, and most runs hash nothing. */
function createSha256() {
  return (require('node:crypto') as typeof import('node:crypto')).createHash('sha256');
}

export function sha256Hex(data: string | Buffer): string {
  return createSha256().update(data).digest('hex');
}

export function sha256OfFd(fd: number, size: number): string {
  if (size > HASH_LIMIT) throw new Error('larger than 1 GiB, not hashed');
  const hash = createSha256();
  const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(size, 1)));
  let pos = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    hash.update(buf.subarray(0, n));
    pos += n;
    if (pos > HASH_LIMIT) throw new Error('grew past 1 GiB while hashing');
  }
  return hash.digest('hex');
}
