import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TimeBounds } from '../core/hooks-loaded';
import { stateFiles, type Paths } from '../host/paths';
import { writeFileAtomic } from '../os/atomic-file';
import { readHead } from '../os/file-info';

// Since when our hooks have been there without a break. An upgrade (a
// package's, or `install` over an older install) replaces the dispatchers:
// new files, new ctime, although libvirt has had hooks of ours all along.
// Before it replaces them, whatever upgrades writes here the time of the
// files there then, unless a record is there already; whatever removes the
// hooks removes it (core/hooks-loaded.ts takes the earlier of the two).
//
// The packages' scriptlets write it too (build/deb/hooks-present.sh), so
// the format is one a shell writes: one line, epoch seconds as `stat -c %Z`
// or `%.9Z` prints them, the digits after the point telling the precision.

const MAX_BYTES = 64;
const FORMAT = /^(\d{1,12})(?:\.(\d{1,9}))?\n?$/;

export interface LoadedPresence {
  /** The time, to the precision written; null for no record (a damaged one too). */
  since: TimeBounds | null;
  /** One line when the record could not be used. */
  problem: string | null;
}

export function loadHooksPresent(paths: Paths): LoadedPresence {
  const shown = stateFiles(paths).hooksPresentSince;
  let text: string;
  try {
    text = readHead(paths.host(shown), MAX_BYTES + 1);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { since: null, problem: null };
    return { since: null, problem: `cannot read ${shown}: ${code ?? String(e)}; treated as no record` };
  }
  const since = text.length <= MAX_BYTES ? parse(text) : null;
  if (since) return { since, problem: null };
  return {
    since: null,
    problem: `${shown} is not a record of since when qemu-modwatch's hooks are there; treated as no record`,
  };
}

function parse(text: string): TimeBounds | null {
  const m = FORMAT.exec(text);
  if (!m) return null;
  const digits = m[2] ?? '';
  const earliestMs = Number(m[1]) * 1000 + (digits ? Number(digits) / 10 ** (digits.length - 3) : 0);
  return { earliestMs, latestMs: earliestMs + 1000 / 10 ** digits.length };
}

/** Records `ms` (to the ms, rounded down: the files were there then) unless a usable record is there. */
export function recordHooksPresent(paths: Paths, ms: number): void {
  if (loadHooksPresent(paths).since) return;
  const file = paths.hostNoFollow(stateFiles(paths).hooksPresentSince);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const whole = Math.floor(ms);
  const text = `${Math.floor(whole / 1000)}.${String(whole % 1000).padStart(3, '0')}\n`;
  writeFileAtomic(file, text);
}

/** The hooks are gone: a later install starts a new time. */
export function forgetHooksPresent(paths: Paths): void {
  fs.rmSync(paths.hostNoFollow(stateFiles(paths).hooksPresentSince), { force: true });
}
