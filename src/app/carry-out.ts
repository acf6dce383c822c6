import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Done } from '../core/messages';
import type { Nudge } from '../core/plan';
import type { StatTuple } from '../core/types';
import { CACHE_NAME_RE } from '../host/cache-dir';
import type { Paths } from '../host/paths';
import { errCode, statOrNull, statTuple } from '../os/file-info';

// carry out: the only changes the program makes to the system besides its
// own files: removing cache entries, and the nudge (an emulator's ctime or
// libvirt's module directory's mtime) that makes the running daemon look
// again; and moving a damaged state file aside.

export function emptyDone(): Done {
  return { deleted: [], nudged: [], errors: [] };
}

export function deleteEntries(paths: Paths, files: string[], done: Done): void {
  for (const file of files) {
    try {
      deleteCacheEntry(paths, file);
      done.deleted.push(file);
    } catch (e) {
      // Already gone is what we wanted (another hook got there first).
      if (errCode(e) !== 'ENOENT')
        done.errors.push(`cannot delete cache entry ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

/**
 * Makes a running daemon re-validate its in-memory capabilities on the next
 * lookup. emulator-ctime: chmod to the mode it already has changes only the
 * ctime, which every libvirt compares with <qemuctime>. moddir-mtime: the
 * mtime of the one module directory libvirt (with that check) watches.
 */
export function nudge(paths: Paths, n: Nudge, done: Done): void {
  for (const p of n.targets) {
    try {
      const st = fs.statSync(paths.host(p));
      if (n.mode === 'emulator-ctime') fs.chmodSync(paths.host(p), st.mode & 0o7777);
      else fs.utimesSync(paths.host(p), st.atime, new Date());
      done.nudged.push(p);
    } catch (err) {
      // A removed emulator needs no nudge; libvirt's module directory does.
      if (n.mode === 'moddir-mtime' || errCode(err) !== 'ENOENT')
        done.errors.push(`cannot nudge ${p}: ${errCode(err)}`);
    }
  }
}

/** The stat data of what was nudged, after the nudge (core/plan.ts restamp). */
export function statNudged(paths: Paths, done: Done): Map<string, StatTuple> {
  const moved = new Map<string, StatTuple>();
  for (const p of done.nudged) {
    const st = statOrNull(paths.host(p));
    if (st) moved.set(p, statTuple(st));
  }
  return moved;
}

/** A damaged state is evidence for a bug report: moved aside, not overwritten. Returns where, or null. */
export function keepCorrupt(paths: Paths, file: string): string | null {
  try {
    fs.renameSync(paths.hostNoFollow(file), paths.hostNoFollow(`${file}.corrupt`));
    return `${file}.corrupt`;
  } catch {
    return null;
  }
}

/**
 * Removes one cache entry, and only a regular file with a cache entry's name
 * directly inside the cache directory. unlink(2) never follows a symlink;
 * the lstat check makes sure one is not removed either.
 */
function deleteCacheEntry(paths: Paths, name: string): void {
  if (!CACHE_NAME_RE.test(name)) throw new Error(`refusing to delete '${name}': not a cache entry name`);
  const dir = paths.hostNoFollow(paths.cacheDir);
  if (!fs.lstatSync(dir).isDirectory()) throw new Error(`refusing to delete in ${paths.cacheDir}: not a directory`);
  const file = path.join(dir, name);
  const st = fs.lstatSync(file);
  if (!st.isFile()) throw new Error(`refusing to delete ${name}: not a regular file`);
  fs.unlinkSync(file);
}
