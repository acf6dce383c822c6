import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import type { StatTuple } from '../core/types';

export function statTuple(st: fs.BigIntStats): StatTuple {
  return {
    size: Number(st.size),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    ino: st.ino.toString(),
    dev: st.dev.toString(),
  };
}

export function sameStat(a: StatTuple, b: StatTuple): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino && a.dev === b.dev;
}

/** stat(2) that answers null for "not there" instead of throwing. */
export function statOrNull(p: string): fs.BigIntStats | null {
  try {
    return fs.statSync(p, { bigint: true });
  } catch {
    return null;
  }
}

export function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err.code ?? err.message ?? String(e);
}

/**
 * Opens a file for reading without ever blocking on it: a FIFO or device
 * node that someone named `*.so` is refused after fstat instead of hanging
 * the hook.
 */
export function openRegular(p: string): { fd: number; st: fs.BigIntStats } {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile()) throw new Error('not a regular file');
    return { fd, st };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

const HASH_LIMIT = 1024 * 1024 * 1024;
const CHUNK = 1024 * 1024;

export function sha256OfFd(fd: number, size: number): string {
  if (size > HASH_LIMIT) throw new Error('larger than 1 GiB, not hashed');
  const hash = crypto.createHash('sha256');
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
