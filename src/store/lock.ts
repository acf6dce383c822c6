import * as fs from 'node:fs';
import * as path from 'node:path';
import { readlinkOrNull } from '../os/file-info';

// One writer at a time for the baseline: fifty guests autostarting at once
// run fifty hooks, and only the first should act on a change.
//
// Why not a lock library: the ones that bundle (proper-lockfile) break a
// lock by its age, so a SIGKILLed hook made the next guest start wait 10 s,
// and a live holder busy longer than that lost its lock (measured in
// test/reliability). Node has no flock(2).
//
// The lock is a directory (mkdir is atomic everywhere). Its `owner` file
// names the holder: pid, the process's start time and the boot. A holder
// killed mid-run (SIGKILL, the OOM killer, a power cut) would otherwise
// make the next guest start wait until the lock aged out; with the owner
// known dead the lock is taken over at once. A lock is made complete under
// a private name and renamed into place, and renamed away before it is
// removed, so it never exists without its owner. Age is only the fallback,
// for a lock without a readable owner (a full disk, or an older version).
//
// A live holder is never broken, however long it runs: the pipeline is
// synchronous, so a holder could never refresh an age-based lock anyway.

/** A lock without a known owner this old is abandoned. */
export const OWNERLESS_STALE_MS = 10_000;
/** How long a hook waits for a live holder before giving up (and failing open). */
const WAIT_MS = 60_000;
const MIN_DELAY_MS = 5;
const MAX_DELAY_MS = 100;

export class LockTimeoutError extends Error {}

interface Owner {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: tells a reused pid from the holder. */
  start: string | null;
  boot: string | null;
  pidns: string | null;
}

interface Held {
  lockPath: string;
  /** The owner file could not be written (a full disk): held by age only. */
  ownerless: boolean;
}

export async function withStateLock<T>(stateDir: string, lockPath: string, fn: () => Promise<T> | T): Promise<T> {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  const held = await acquire(lockPath);
  try {
    return await fn();
  } finally {
    release(held);
  }
}

async function acquire(lockPath: string): Promise<Held> {
  const deadline = Date.now() + WAIT_MS;
  let delay = MIN_DELAY_MS;
  for (;;) {
    const got = tryAcquire(lockPath);
    if (got) return got;
    if (breakIfAbandoned(lockPath)) continue;
    if (Date.now() >= deadline) {
      throw new LockTimeoutError(
        `state lock ${lockPath} is still held by ${describeHolder(lockPath)} after ${WAIT_MS / 1000} s`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(MAX_DELAY_MS, Math.ceil(delay * 1.5));
  }
}

let prepared = 0;

/**
 * The lock directory is made complete with its owner file under a private
 * name, then renamed into place: rename(2) of a directory is atomic and
 * fails when the lock exists, so a lock never exists without its owner (a
 * holder killed at any point is taken over at once). Only when the owner
 * file cannot be written (a full disk) is the lock taken bare, held by age.
 */
function tryAcquire(lockPath: string): Held | null {
  const dir = path.dirname(lockPath);
  const tmp = path.join(dir, `.${path.basename(lockPath)}.${process.pid}.${++prepared}.tmp`);
  try {
    fs.mkdirSync(tmp, { mode: 0o700 });
    fs.writeFileSync(path.join(tmp, 'owner'), JSON.stringify(selfOwner()) + '\n', { mode: 0o644, flag: 'wx' });
  } catch {
    fs.rmSync(tmp, { recursive: true, force: true });
    return tryAcquireBare(lockPath);
  }
  try {
    // rename(2) would replace an empty directory: a bare lock held by age.
    if (fs.existsSync(lockPath)) throw Object.assign(new Error('held'), { code: 'EEXIST' });
    fs.renameSync(tmp, lockPath);
    return { lockPath, ownerless: false };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') return null;
    throw e;
  }
}

function tryAcquireBare(lockPath: string): Held | null {
  try {
    fs.mkdirSync(lockPath, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw e;
  }
  return { lockPath, ownerless: true };
}

function release(held: Held): void {
  if (held.ownerless) {
    // Empty, or another process's lock with its owner inside: then not ours to remove.
    tryRmdir(held.lockPath);
    return;
  }
  // Never remove a lock that is no longer ours.
  const owner = readOwner(held.lockPath);
  if (owner === 'gone' || owner === null || owner.pid !== process.pid) return;
  removeAside(held.lockPath);
}

/** A private name next to p, of the form removeOrphanedTemps sweeps once this process is gone. */
function privateName(p: string): string {
  return path.join(path.dirname(p), `.${path.basename(p)}.${process.pid}.${++prepared}.tmp`);
}

/**
 * Removes a lock directory (and its owner file) by renaming it away first:
 * the lock vanishes in one step, so a process killed while removing it
 * leaves a temp directory for the next holder to sweep, never a lock
 * without its owner that others would wait for to age out.
 */
function removeAside(dir: string): void {
  const aside = privateName(dir);
  try {
    fs.renameSync(dir, aside);
  } catch {
    return; // Gone already.
  }
  fs.rmSync(aside, { recursive: true, force: true });
}

/**
 * Removes the lock when its holder is gone. Breakers queue on a second
 * directory, so two of them cannot both decide on the same dead holder
 * and the later one remove the lock a third hook has just taken.
 * True when the lock was removed or vanished (try again at once).
 */
function breakIfAbandoned(lockPath: string): boolean {
  const seen = readOwner(lockPath);
  if (seen === 'gone') return true;
  if (!abandoned(lockPath, seen)) return false;
  // The breaker is a lock of its own, with an owner, so that a breaker
  // killed while it held it is cleared at once too.
  const breakerPath = `${lockPath}.break`;
  const breaker = tryAcquire(breakerPath);
  if (!breaker) {
    clearDeadBreaker(breakerPath);
    return false;
  }
  try {
    const again = readOwner(lockPath);
    if (again === 'gone') return true;
    if (!sameOwner(seen, again) || !abandoned(lockPath, again)) return false;
    removeAside(lockPath);
    return true;
  } finally {
    release(breaker);
  }
}

function clearDeadBreaker(breakerPath: string): void {
  const owner = readOwner(breakerPath);
  if (owner === 'gone' || !abandoned(breakerPath, owner)) return;
  const aside = privateName(breakerPath);
  try {
    fs.renameSync(breakerPath, aside);
  } catch {
    return;
  }
  // Another hook may have cleared the same dead breaker and taken its own
  // between our look and the rename: that one is put back.
  if (!sameOwner(readOwner(aside), owner)) {
    try {
      fs.renameSync(aside, breakerPath);
    } catch {
      // A third took the breaker meanwhile; the moved one is swept once we are gone.
    }
    return;
  }
  fs.rmSync(aside, { recursive: true, force: true });
}

function abandoned(lockPath: string, owner: Owner | null): boolean {
  if (owner !== null) {
    const alive = isAlive(owner);
    if (alive !== null) return !alive;
  }
  return ageMs(lockPath) > OWNERLESS_STALE_MS;
}

function sameOwner(a: Owner | null | 'gone', b: Owner | null | 'gone'): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The lock's owner; null when it has none we can read; 'gone' when there is no lock. */
function readOwner(lockPath: string): Owner | null | 'gone' {
  let text: string;
  try {
    text = fs.readFileSync(path.join(lockPath, 'owner'), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(lockPath)) return 'gone';
    return null;
  }
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    if (typeof o.pid !== 'number' || !Number.isSafeInteger(o.pid) || o.pid <= 0) return null;
    return { pid: o.pid, start: str(o.start), boot: str(o.boot), pidns: str(o.pidns) };
  } catch {
    return null;
  }
}

/** true/false when we can tell; null when the holder is in another pid namespace. */
export function isAlive(owner: Owner): boolean | null {
  const self = selfOwner();
  if (owner.boot && self.boot && owner.boot !== self.boot) return false;
  if (owner.pidns && self.pidns && owner.pidns !== self.pidns) return null;
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const stat = procStat(owner.pid);
  // No /proc at all: kill(0) is all we know. /proc but no entry: it just exited.
  if (stat === null) return !fs.existsSync('/proc/self/stat');
  // A killed holder its parent has not reaped yet still answers kill(0).
  if (stat.state === 'Z' || stat.state === 'X') return false;
  return owner.start === null || owner.start === stat.start;
}

let selfCache: Owner | null = null;

function selfOwner(): Owner {
  if (selfCache?.pid === process.pid) return selfCache;
  selfCache = {
    pid: process.pid,
    start: procStat(process.pid)?.start ?? null,
    boot: readTrimmed('/proc/sys/kernel/random/boot_id'),
    pidns: readlinkOrNull('/proc/self/ns/pid'),
  };
  return selfCache;
}

function procStat(pid: number): { state: string; start: string } | null {
  const text = readTrimmed(`/proc/${pid}/stat`);
  if (text === null) return null;
  // comm, in parentheses, may itself contain spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const start = fields[19];
  return state && start ? { state, start } : null;
}

function describeHolder(lockPath: string): string {
  const owner = readOwner(lockPath);
  if (owner === 'gone') return 'nobody (released just now)';
  return owner ? `pid ${owner.pid}` : 'an unknown process';
}

function ageMs(p: string): number {
  try {
    return Date.now() - fs.statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

function readTrimmed(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return null;
  }
}

function tryRmdir(p: string): void {
  try {
    fs.rmdirSync(p);
  } catch {
    // Already gone.
  }
}
