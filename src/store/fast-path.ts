import * as fs from 'node:fs';
import { RACY_MARGIN_NS } from '../core/compare';
import type { Fingerprint } from '../core/types';
import { writeFileAtomic } from '../os/atomic-file';
import type { Config } from '../host/config';
import { statOrNull } from '../os/file-info';
import { stateFiles, type Paths } from '../host/paths';
import { listedPlaces, SCAN_PLACES } from '../host/scan';

// What the qemu hook dispatcher (a shell script) needs to skip starting
// Node when nothing changed: the *mark*, a file whose mtime is when the
// last full check began (less a safety margin), and the *watch* list.
//
// Watch list format, one path per line, as seen from this machine:
//   D <dir>   a module directory: it or any entry with a ctime newer than the mark means run
//   F <path>  a file or directory: its own ctime newer than the mark means run
//   A <path>  absent: if it appears, run
//   E         end of list: a list cut short (a crash while writing) is not trusted
// Paths with a newline cannot be listed; then no watch list is written and
// the dispatcher always runs the full check.

/**
 * Timestamps may be coarser than the clock we read (kernel ticks, 1 s or
 * 2 s file systems): a change made just after the scan began can carry a
 * time just before it. Back-dating the mark by the margin the scan trusts
 * (core/compare.ts) means such a change still counts as newer.
 */
export const MARK_MARGIN_MS = Number(RACY_MARGIN_NS / 1_000_000n);

export function writeWatchAndMark(paths: Paths, config: Config, fp: Fingerprint, scanStartMs: number): void {
  const files = stateFiles(paths);
  const lines = watchList(paths, config, fp);
  if (lines.some((l) => l.includes('\n'))) {
    clearMark(paths);
    return;
  }
  // Neither file is worth an fsync: losing one means one extra full check.
  const text = [...lines, 'E'].join('\n') + '\n';
  const watchFile = paths.hostNoFollow(files.watch);
  if (readOrNull(watchFile) !== text) writeFileAtomic(watchFile, text, { durable: false });
  const markFile = paths.hostNoFollow(files.mark);
  const when = new Date(scanStartMs - MARK_MARGIN_MS);
  try {
    // Moving the time of the mark in place is one atomic syscall.
    if (fs.lstatSync(markFile).isFile()) {
      fs.utimesSync(markFile, when, when);
      return;
    }
  } catch {
    // No mark yet: create it below.
  }
  fs.rmSync(markFile, { recursive: true, force: true });
  writeFileAtomic(markFile, '', { mtime: when, durable: false });
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** The next dispatch runs the full check (pending changes, a failed action). */
export function clearMark(paths: Paths): void {
  try {
    fs.unlinkSync(paths.hostNoFollow(stateFiles(paths).mark));
  } catch {
    // Not there is fine.
  }
}

/**
 * Derived from the scan's own table (host/scan.ts SCAN_PLACES): every place
 * the scan looks at, by the path the scan would stat or list.
 */
export function watchList(paths: Paths, config: Config, fp: Fingerprint): string[] {
  const out = new Set<string>();
  const watchHost = (h: string) => out.add(statOrNull(h) ? `F ${h}` : `A ${h}`);
  const self = (p: string) => watchHost(paths.host(p));

  for (const d of fp.dirs) out.add(`D ${paths.host(d.path)}`);
  // Where a module directory could appear. A listed directory's own ctime
  // tells an entry that came or went; a place under an entry
  // (`<multiarch>/qemu`) is watched itself.
  const candidates = [...SCAN_PLACES.moduleDirs, ...config.dirs, ...fp.missingDirs];
  for (const l of SCAN_PLACES.moduleDirParents) {
    if (l.under === null) continue;
    self(l.dir);
    candidates.push(...listedPlaces(paths, l));
  }
  for (const c of candidates) if (!fp.dirs.some((d) => d.path === c)) self(c);
  for (const l of SCAN_PLACES.moduleDirParents) if (l.under === null) self(l.dir);
  // Emulators, and where new ones would appear.
  for (const e of fp.emulators) self(e.path);
  for (const l of SCAN_PLACES.emulatorDirs) {
    self(l.dir);
    if (l.under !== null) for (const p of listedPlaces(paths, l)) self(p);
  }
  for (const e of SCAN_PLACES.emulators) self(e);
  watchHost(paths.configFile);
  // libvirt writes a cache entry when it probes an emulator we have not seen.
  self(paths.cacheDir);
  return [...out];
}
