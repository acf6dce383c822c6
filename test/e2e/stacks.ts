// The libvirt and QEMU stacks the end-to-end scenarios run on: the host's
// own, and what build/setup.sh makes beside it in .stacks/ (never installed
// on the host), laid over /usr and /etc of each private world.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { inCI } from '../fixtures/ci';
import { type EnvOptions, type QemuDaemon, type TestLike } from './harness';
import { TOP } from './modwatch';

export type StackId = 'debian-12' | 'backports' | 'modular' | 'modular-qemu-10';

export interface Stack {
  id: StackId;
  /** For test names and the README: what runs, with versions. */
  title: string;
  /** What `virsh version` must say: "Using library: libvirt <libvirt>", "Running hypervisor: QEMU <qemu>.x". */
  libvirt: string;
  qemu: string;
  daemon: QemuDaemon;
  /** Layers over /usr and /etc, top first (none: the host's own). */
  layers: Record<string, string[]>;
  /** Why the stack is not ready here, and what makes it; null when it is. */
  missing(): string | null;
}

const STACKS_DIR = path.join(TOP, '.stacks');
const UPSTREAM = path.join(STACKS_DIR, 'libvirt-11.3.0');
const BACKPORTS = path.join(STACKS_DIR, 'backports');

function upstreamMissing(): string | null {
  return fs.existsSync(path.join(UPSTREAM, '.complete'))
    ? null
    : `${path.relative(TOP, UPSTREAM)} is not built (bash build/libvirt-modular.sh)`;
}

/**
 * The backports layers hold what dpkg changed over the host's packages of then: the script that makes them
 * says whether they still fit.
 */
function backportsMissing(): string | null {
  const r = spawnSync('bash', [path.join(TOP, 'build/backports-stack.sh'), '--check'], { encoding: 'utf8' });
  return r.status === 0
    ? null
    : r.stdout.trim() || `build/backports-stack.sh --check: ${r.stderr.trim() || r.error?.message}`;
}

const layer = (dir: string, top: string) => path.join(dir, top);

export const STACKS: Record<StackId, Stack> = {
  'debian-12': {
    id: 'debian-12',
    title: "Debian 12's libvirtd 9.0 and QEMU 7.2",
    libvirt: '9.0.0',
    qemu: '7.2',
    daemon: 'libvirtd',
    layers: {},
    missing: () => null,
  },
  backports: {
    id: 'backports',
    title: "bookworm-backports' libvirtd 11.3 and QEMU 10.0 (dpkg)",
    libvirt: '11.3.0',
    qemu: '10.0',
    daemon: 'libvirtd',
    layers: {
      '/usr': [layer(BACKPORTS, 'libvirt/usr'), layer(BACKPORTS, 'qemu/usr')],
      '/etc': [layer(BACKPORTS, 'libvirt/etc'), layer(BACKPORTS, 'qemu/etc')],
    },
    missing: backportsMissing,
  },
  modular: {
    id: 'modular',
    title: 'upstream libvirt 11.3.0: virtqemud and virtnetworkd, QEMU 7.2',
    libvirt: '11.3.0',
    qemu: '7.2',
    daemon: 'virtqemud',
    layers: { '/usr': [layer(UPSTREAM, 'usr')] },
    missing: upstreamMissing,
  },
  'modular-qemu-10': {
    id: 'modular-qemu-10',
    title: 'upstream libvirt 11.3.0: virtqemud and virtnetworkd, QEMU 10.0',
    libvirt: '11.3.0',
    qemu: '10.0',
    daemon: 'virtqemud',
    layers: { '/usr': [layer(UPSTREAM, 'usr'), layer(BACKPORTS, 'qemu/usr')], '/etc': [layer(BACKPORTS, 'qemu/etc')] },
    missing: () => upstreamMissing() ?? backportsMissing(),
  },
};

/**
 * A world's options on a stack: its layers (/usr overlaid to lay them on), its QEMU daemon, its name in the
 * temp dir's.
 */
export function onStack(stack: Stack, opts: EnvOptions): EnvOptions {
  const layered = Object.keys(stack.layers);
  return {
    ...opts,
    label: `${opts.label ?? 'mw-e2e'}-${stack.id}`,
    overlayDirs: [...new Set([...(opts.overlayDirs ?? []), ...layered.filter((d) => d !== '/etc')])],
    layers: { ...opts.layers, ...stack.layers },
    daemon: stack.daemon,
  };
}

/**
 * Why a stack's tests cannot run here, or false; after the harness's own
 * check (e2eSkip, scenarioSkip). Under CI a stack that is not set up fails
 * the run with the reason.
 */
export function stackSkip(t: TestLike, stack: Stack): string | false {
  const why = stack.missing();
  if (!why) return false;
  if (inCI()) t.fail(`the stack ${stack.id} is needed under CI: ${why}`);
  else t.comment(`tests on ${stack.id} skipped: ${why}`);
  return why;
}
