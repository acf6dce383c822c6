import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Writes a file so that a reader (or a crash at any point) sees either the
 * old contents or the new ones, never a mix: temp file in the same
 * directory, fsync, rename over, fsync the directory so the rename itself
 * survives a power cut.
 */
let tmpCounter = 0;

export interface AtomicOptions {
  mode?: number;
  /** Set before the rename, so no reader ever sees the file with another time. */
  mtime?: Date;
  /**
   * false for files that are only a hint (their loss after a power cut
   * costs one extra full check): skips the fsyncs, which cost milliseconds.
   */
  durable?: boolean;
}

export function writeFileAtomic(file: string, data: string | Buffer, opts: AtomicOptions = {}): void {
  const { mode = 0o644, mtime, durable = true } = opts;
  const dir = path.dirname(file);
  const { tmp, fd } = createTemp(dir, path.basename(file), mode);
  try {
    try {
      fs.writeFileSync(fd, data);
      if (mtime) fs.futimesSync(fd, mtime, mtime);
      if (durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // The temp file may already be gone; the original error is what matters.
    }
    throw e;
  }
  if (durable) syncDir(dir);
}

/**
 * O_EXCL makes the temp file ours: never an existing file or a planted
 * symlink. A name left behind by a crashed run with the same pid is skipped.
 */
function createTemp(dir: string, base: string, mode: number): { tmp: string; fd: number } {
  for (let attempt = 0; ; attempt++) {
    const tmp = path.join(dir, `.${base}.${process.pid}.${++tmpCounter}.tmp`);
    try {
      return {
        tmp,
        fd: fs.openSync(
          tmp,
          fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
          mode,
        ),
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 100) throw e;
    }
  }
}

function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fs.fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on a directory; the rename is done anyway.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** `.<name>.<pid>.<counter or random hex>.tmp`, as writeFileAtomic (and the state lock) name them. */
const TEMP_NAME = /^\..+\.([1-9][0-9]*)\.[0-9a-f]+\.tmp$/;

/**
 * Removes the temp files of writers that died before their rename (the
 * target itself is intact: that is the point of the rename). A temp file
 * whose pid is alive is left alone, even if the pid was reused.
 */
export function removeOrphanedTemps(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    if (!m || isRunning(Number(m[1]))) continue;
    try {
      // A prepared lock directory (src/store/lock.ts) is named the same way.
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    } catch {
      // Not ours to remove: nothing is lost either way.
    }
  }
}

function isRunning(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
