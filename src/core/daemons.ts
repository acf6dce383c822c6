// Which libvirt daemons hold QEMU capabilities. libvirtd and every modular
// daemon share one main and run hooks/daemon with the same argv (the hook
// tells them apart by its parent, hook/daemons.ts). The list is the
// dispatcher's too (hooks/daemon.d/50-qemu-modwatch), and a test keeps the
// two equal.

/** libvirt's hook scripts we are: hooks/qemu (guests) and hooks/daemon. */
export type Driver = 'qemu' | 'daemon';

/** The daemons that hold QEMU capabilities: their start is before they load any. */
export const QEMU_DAEMONS = ['libvirtd', 'virtqemud'];

/** libvirt's other modular daemons: their start has nothing to do with QEMU capabilities. */
export const OTHER_DAEMONS = [
  'virtnetworkd',
  'virtstoraged',
  'virtnodedevd',
  'virtnwfilterd',
  'virtsecretd',
  'virtinterfaced',
  'virtproxyd',
  'virtlxcd',
  'virtchd',
  'virtvboxd',
  'virtxend',
  'virtbhyved',
  'virtvzd',
];

export type DaemonKind = 'qemu' | 'other' | 'unknown';

export function daemonKind(name: string | null): DaemonKind {
  if (name !== null && QEMU_DAEMONS.includes(name)) return 'qemu';
  if (name !== null && OTHER_DAEMONS.includes(name)) return 'other';
  return 'unknown';
}
