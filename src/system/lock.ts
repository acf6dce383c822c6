import * as fs from 'node:fs';
import * as lockfile from 'proper-lockfile';

// One writer at a time for the baseline: fifty guests autostarting at once
// run fifty hooks, and only the first should act on a change. A holder
// killed mid-run leaves a stale lock that is taken over after STALE_MS.

const STALE_MS = 10_000;

export async function withStateLock<T>(stateDir: string, lockPath: string, fn: () => Promise<T> | T): Promise<T> {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  const release = await lockfile.lock(stateDir, {
    lockfilePath: lockPath,
    realpath: false,
    stale: STALE_MS,
    update: STALE_MS / 2,
    retries: { retries: 600, factor: 1.2, minTimeout: 10, maxTimeout: 100 },
  });
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}
