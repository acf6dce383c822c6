import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DaemonHookRun } from '../core/hooks-loaded';
import { QEMU_DAEMONS } from '../core/daemons';
import { stateFiles, type Paths } from '../host/paths';
import { writeFileAtomic } from '../os/atomic-file';
import { readHead } from '../os/file-info';

// The last run of our daemon hook in each QEMU daemon: which daemon, its PID,
// when. It is what tells `check` that a daemon which started before the
// hooks were installed has run them since (core/hooks-loaded.ts). One file
// per daemon, so that two daemons' hooks never overwrite each other's.

const SCHEMA = 1;
const MAX_BYTES = 4096;

/** Records a run; the caller decides what a failure means (the hook goes on). */
export function recordDaemonHook(paths: Paths, run: DaemonHookRun): void {
  const file = paths.hostNoFollow(stateFiles(paths).daemonHook(run.daemon));
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const data = { schema: SCHEMA, daemon: run.daemon, pid: run.pid, at: new Date(run.atMs).toISOString() };
  // A lost record after a power cut costs one warning until the next reload: not worth two fsyncs.
  writeFileAtomic(file, JSON.stringify(data) + '\n', { durable: false });
}

export interface LoadedRuns {
  runs: DaemonHookRun[];
  /** One line per record that could not be used. */
  problems: string[];
}

/** The records of the QEMU daemons; a missing one is no record, a corrupt one is a problem and no record. */
export function loadDaemonHooks(paths: Paths): LoadedRuns {
  const out: LoadedRuns = { runs: [], problems: [] };
  for (const daemon of QEMU_DAEMONS) {
    const shown = stateFiles(paths).daemonHook(daemon);
    let text: string;
    try {
      text = readHead(paths.host(shown), MAX_BYTES + 1);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') out.problems.push(`cannot read ${shown}: ${code ?? String(e)}; treated as no record`);
      continue;
    }
    const run = parse(text, daemon);
    if (run) out.runs.push(run);
    else out.problems.push(`${shown} is not a record of qemu-modwatch's daemon hook; treated as no record`);
  }
  return out;
}

function parse(text: string, daemon: string): DaemonHookRun | null {
  if (text.length > MAX_BYTES) return null;
  let d: unknown;
  try {
    d = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof d !== 'object' || d === null) return null;
  const r = d as Record<string, unknown>;
  const atMs = typeof r.at === 'string' ? Date.parse(r.at) : NaN;
  if (r.schema !== SCHEMA || r.daemon !== daemon || !Number.isSafeInteger(r.pid) || (r.pid as number) <= 0) return null;
  if (!Number.isFinite(atMs)) return null;
  return { daemon, pid: r.pid as number, atMs };
}
