import * as fs from 'node:fs';
import * as path from 'node:path';
import { stateFiles, type Paths } from '../host/paths';
import { writeFileAtomic } from '../os/atomic-file';
import { readHead } from '../os/file-info';

// A time before our hooks first arrived: the lower bound of their arrival
// that core/hooks-loaded.ts needs (a file's ctime is only an upper one: an
// edit or chmod makes it later). Whatever places our hooks where none of
// ours is there (the packages' preinst and %pre, `install`) writes "now"
// first; while ours stay, upgrades keep it; whatever removes the last of
// them removes it, and a purge or erase the whole state directory.
//
// The packages' scriptlets write it too (build/deb/hooks-present.sh), so
// the format is one a shell writes: one line, epoch seconds, as `date +%s`
// or `date +%s.%N` prints them.

const MAX_BYTES = 64;
const FORMAT = /^(\d{1,12})(?:\.(\d{1,9}))?\n?$/;

export interface LoadedInstalledAfter {
  /** Epoch ms, rounded down (a lower bound stays one); null for no record (a damaged one too). */
  afterMs: number | null;
  /** One line when the record could not be used. */
  problem: string | null;
}

export function loadHooksInstalledAfter(paths: Paths): LoadedInstalledAfter {
  const shown = stateFiles(paths).hooksInstalledAfter;
  let text: string;
  try {
    text = readHead(paths.host(shown), MAX_BYTES + 1);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { afterMs: null, problem: null };
    return { afterMs: null, problem: `cannot read ${shown}: ${code ?? String(e)}; ${WHAT_TO_DO}` };
  }
  const m = text.length <= MAX_BYTES ? FORMAT.exec(text) : null;
  if (m) return { afterMs: Number(m[1]) * 1000 + Math.floor(Number(`0.${m[2] ?? '0'}`) * 1000), problem: null };
  return {
    afterMs: null,
    problem: `${shown} is not a record of when qemu-modwatch's hooks were installed; ${WHAT_TO_DO}`,
  };
}

const WHAT_TO_DO =
  'treated as no record: a daemon that started before the hooks last changed is cannot-tell until it reloads ' +
  '(remove the file and reload libvirt)';

/** Records `ms` as a time before our hooks arrive: called only when none of ours is there. */
export function recordHooksInstalledAfter(paths: Paths, ms: number): void {
  const file = paths.hostNoFollow(stateFiles(paths).hooksInstalledAfter);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const whole = Math.floor(ms);
  writeFileAtomic(file, `${Math.floor(whole / 1000)}.${String(whole % 1000).padStart(3, '0')}\n`);
}

/** The hooks are gone: a later install starts a new time. */
export function forgetHooksInstalledAfter(paths: Paths): void {
  fs.rmSync(paths.hostNoFollow(stateFiles(paths).hooksInstalledAfter), { force: true });
}
