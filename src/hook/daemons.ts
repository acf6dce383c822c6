import * as fs from 'node:fs';
import { PROC_DIR, type Paths } from '../host/paths';

// Which libvirt daemon runs the daemon hook. libvirtd and every modular
// daemon share one main and run hooks/daemon with the same argv; only the
// parent process tells them apart (what each one is: core/daemons.ts).

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
        .readFileSync(paths.host(`${PROC_DIR}/${process.ppid}/comm`), 'utf8')
        .slice(0, 64)
        .trim() || null
    );
  } catch {
    return null;
  }
}
