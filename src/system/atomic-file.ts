import * as fs from 'node:fs';
import * as path from 'node:path';
import * as crypto from 'node:crypto';

/**
 * Writes a file so that a reader (or a crash at any point) sees either the
 * old contents or the new ones, never a mix: temp file in the same
 * directory, fsync, rename over, fsync the directory so the rename itself
 * survives a power cut.
 */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644, mtime?: Date): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
  try {
    try {
      fs.writeFileSync(fd, data);
      // Set before the rename, so no reader ever sees the file with another time.
      if (mtime) fs.futimesSync(fd, mtime, mtime);
      fs.fsyncSync(fd);
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
  syncDir(dir);
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
