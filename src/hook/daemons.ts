import * as fs from 'node:fs';
import { PROC_DIR, type Paths } from '../system/paths';

// Which libvirt daemon runs the daemon hook. libvirtd and every modular
// daemon share one main and run hooks/daemon with the same argv; only the
// parent process tells them apart. The list is the dispatcher's too
// (hooks/daemon.d/50-qemu-modwatch), and a test keeps the two equal.

/** The daemons that hold QEMU capabilities: their start is before they load any. */
export const QEMU_DAEMONS = ['libvirtd', 'virtqemud'];

/** libvirt's other modular daemons: their start has nothing to do with QEMU capabilities. */
export const OTHER_DAEMONS = [
  'virtnetworkd', 'virtstoraged', 'virtnodedevd', 'virtnwfilterd', 'virtsecretd', 'virtinterfaced', 'virtproxyd',
  'virtlxcd', 'virtchd', 'virtvboxd', 'virtxend', 'virtbhyved', 'virtvzd',
];

export type DaemonKind = 'qemu' | 'other' | 'unknown';

export function daemonKind(name: string | null): DaemonKind {
  if (name !== null && QEMU_DAEMONS.includes(name)) return 'qemu';
  if (name !== null && OTHER_DAEMONS.includes(name)) return 'other';
  return 'unknown';
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
    return fs.readFileSync(paths.host(`${PROC_DIR}/${process.ppid}/comm`), 'utf8').slice(0, 64).trim() || null;
  } catch {
    return null;
  }
}
