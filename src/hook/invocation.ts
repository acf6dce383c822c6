// libvirt's calling convention: which hook we are, from how we were started.

import type { Driver } from '../core/daemons';

/**
 * The driver when argv[0] is `.../hooks/qemu`, `.../hooks/daemon` or a file
 * in `.../hooks/qemu.d/` or `.../hooks/daemon.d/` (the name as exec'd, so a
 * symlink's own name counts).
 */
export function driverFromArgv0(argv0: string | undefined): Driver | null {
  if (!argv0) return null;
  const m = /(?:^|\/)hooks\/(qemu|daemon)(?:\.d\/[^/]+)?$/.exec(argv0);
  return m ? (m[1] as Driver) : null;
}

export type HookOp =
  | { handled: false }
  | { handled: true; driver: 'daemon'; op: 'start' | 'reload' }
  | { handled: true; driver: 'qemu'; op: 'prepare' | 'migrate' | 'restore'; domain: string };

/**
 * Which of libvirt's calls we act on. daemon: `- start - start`,
 * `- reload begin SIGHUP`. qemu: `<domain> prepare|migrate|restore begin -`.
 * Everything else (started, stopped, release, reconnect, attach, shutdown,
 * anything a later libvirt adds) is left alone.
 */
export function classifyHook(driver: Driver, args: string[]): HookOp {
  const [object, op, subop] = args;
  if (driver === 'daemon') {
    if (op === 'start') return { handled: true, driver, op: 'start' };
    if (op === 'reload' && subop === 'begin') return { handled: true, driver, op: 'reload' };
    return { handled: false };
  }
  if ((op === 'prepare' || op === 'migrate' || op === 'restore') && subop === 'begin' && object !== undefined) {
    return { handled: true, driver, op, domain: object };
  }
  return { handled: false };
}
