import type { Done } from '../core/messages';
import { invalidateAction } from '../core/plan';
import type { Fingerprint, LastAction } from '../core/types';
import { stateFiles, type Paths } from '../host/paths';
import { errCode } from '../os/file-info';
import { loadState, recordState } from '../store/state-store';
import { recordDaemonHook } from '../store/daemon-hooks';
import { log } from '../os/log';

// record: every write of the state file, each one through recordState
// (store/state-store.ts), the one writer of its schema.

/** A run's record (core/plan.ts stateToRecord); a failure is one of the run's errors, and the next run tries again. */
export function recordRun(paths: Paths, state: { baseline: Fingerprint; lastAction: LastAction | null }, done: Done) {
  const file = stateFiles(paths).state;
  try {
    recordState(paths.hostNoFollow(file), state);
    return true;
  } catch (e) {
    done.errors.push(`cannot record the baseline in ${file}: ${errCode(e)}`);
    return false;
  }
}

/** accept's record (core/plan.ts planAccept). */
export function recordAccepted(paths: Paths, state: { baseline: Fingerprint; lastAction: LastAction | null }): void {
  recordState(paths.hostNoFollow(stateFiles(paths).state), state);
}

/** An invalidate is recorded as the last action; the baseline (and who wrote it) stays as it was. */
export function recordInvalidate(paths: Paths, done: Done): void {
  if (!done.deleted.length && !done.nudged.length) return;
  const file = paths.host(stateFiles(paths).state);
  const loaded = loadState(file);
  if (loaded.kind !== 'ok') return;
  const { baseline, writtenBy } = loaded.state;
  recordState(file, { baseline, lastAction: invalidateAction(done, new Date()), writtenBy });
}

/**
 * That this daemon (its PID: the dispatcher's parent, hook/daemons.ts hookDaemonPid)
 * runs our hooks now: what tells `check` it has loaded them
 * (core/hooks-loaded.ts). A failure is logged; the hook goes on.
 */
export function recordDaemonRun(paths: Paths, daemon: string, pid: number): void {
  try {
    recordDaemonHook(paths, { daemon, pid, atMs: Date.now() });
  } catch (e) {
    log(paths, { priority: 'warning', message: `hook daemon: cannot record this run of ${daemon}: ${errCode(e)}` });
  }
}
