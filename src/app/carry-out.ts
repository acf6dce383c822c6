import * as fs from 'node:fs';
import type { NudgeMode } from '../host/config';
import * as path from 'node:path';
import { CACHE_NAME_RE } from '../host/cache-dir';
import { errText } from '../os/file-info';
import type { Paths } from '../host/paths';

// act: the only changes the program makes to the system besides its own
// state: removing cache entries and nudging the running daemon.

export interface ActResult {
  deleted: string[];
  nudged: string[];
  errors: string[];
}

export function deleteEntries(paths: Paths, files: string[], result: ActResult): void {
  for (const file of files) {
    try {
      deleteCacheEntry(paths, file);
      result.deleted.push(file);
    } catch (e) {
      // Already gone is what we wanted (another hook got there first).
      if (errText(e) !== 'ENOENT') result.errors.push(`cannot delete cache entry ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

/**
 * Makes a running daemon re-validate its in-memory capabilities on the next
 * lookup. emulator-ctime: chmod to the mode it already has changes only the
 * ctime, which every libvirt compares with <qemuctime>. moddir-mtime: the
 * mtime of the one module directory libvirt (with that check) watches.
 */
export function nudge(paths: Paths, mode: NudgeMode, emulators: string[], moddir: string | null, result: ActResult): void {
  if (mode === 'emulator-ctime') {
    for (const e of emulators) {
      try {
        const st = fs.statSync(paths.host(e));
        fs.chmodSync(paths.host(e), st.mode & 0o7777);
        result.nudged.push(e);
      } catch (err) {
        if (errText(err) !== 'ENOENT') result.errors.push(`cannot nudge ${e}: ${errText(err)}`);
      }
    }
  } else if (mode === 'moddir-mtime' && moddir) {
    try {
      const st = fs.statSync(paths.host(moddir));
      fs.utimesSync(paths.host(moddir), st.atime, new Date());
      result.nudged.push(moddir);
    } catch (err) {
      result.errors.push(`cannot nudge ${moddir}: ${errText(err)}`);
    }
  }
}

/**
 * Removes one cache entry, and only a regular file with a cache entry's name
 * directly inside the cache directory. unlink(2) never follows a symlink;
 * the lstat check makes sure one is not removed either.
 */
export function deleteCacheEntry(paths: Paths, name: string): void {
  if (!CACHE_NAME_RE.test(name)) throw new Error(`refusing to delete '${name}': not a cache entry name`);
  const dir = paths.hostNoFollow(paths.cacheDir);
  if (!fs.lstatSync(dir).isDirectory()) throw new Error(`refusing to delete in ${paths.cacheDir}: not a directory`);
  const file = path.join(dir, name);
  const st = fs.lstatSync(file);
  if (!st.isFile()) throw new Error(`refusing to delete ${name}: not a regular file`);
  fs.unlinkSync(file);
}
