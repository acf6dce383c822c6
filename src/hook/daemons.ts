import * as fs from 'node:fs';
import { PROC_DIR, type Paths } from '../host/paths';

// Which libvirt daemon runs the daemon hook. libvirtd and every modular
// daemon share one main and run hooks/daemon with the same argv; only the
// parent process tells them apart (what each one is: core/daemons.ts).
// The dispatcher passes what it found: run by libvirt itself, its parent is
// the daemon; run by install --chain's wrapper (which does not exec it), the
// wrapper's parent is, and the wrapper says so in QEMU_MODWATCH_DAEMON_PID.

/** The PID of the daemon that runs this hook: what the dispatcher passed, else this process's parent. */
export function hookDaemonPid(env: NodeJS.ProcessEnv): number {
  const given = env.QEMU_MODWATCH_DAEMON_PID;
  return given !== undefined && /^[1-9][0-9]{0,9}$/.test(given) ? Number(given) : process.ppid;
}

/**
 * The name of the daemon that started this hook: what the dispatcher
 * found (QEMU_MODWATCH_DAEMON), else the parent process's comm. null when
 * neither can be read.
 */
export function hookDaemon(paths: Paths, env: NodeJS.ProcessEnv): string | null {
  const given = env.QEMU_MODWATCH_DAEMON;
  if (given !== undefined) return given.trim() || null;
  try {
    return (
      fs
        .readFileSync(paths.host(`${PROC_DIR}/${hookDaemonPid(env)}/comm`), 'utf8')
        .slice(0, 64)
        .trim() || null
    );
  } catch {
    return null;
  }
}
