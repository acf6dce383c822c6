// Stack 3 under a real systemd: upstream libvirt 11.3.0 (build/libvirt-modular.sh)
// in a systemd-nspawn container (root: build/nspawn-root.sh), its daemons
// started by libvirt's own socket and service units, so socket activation
// and the idle exit are systemd's. Or (ContainerOptions.root = DEBIAN_ROOT)
// the root with Debian's own libvirtd and nothing laid over it: a host the
// .deb is installed on as an admin would. Not a test file itself.
//
// How a container is made, and why
// --------------------------------
// - A holder process (`unshare --mount --propagation private sleep
//   infinity`) owns a private mount namespace. In it, and only there: an
//   overlayfs at <temp dir>/root, lower = the libvirt tree over the shared
//   root (both read-only), upper/work in the test's temp dir; and a tmpfs
//   over the host's /run/systemd, so that what nspawn keeps there
//   (propagate/, unix-export/) never reaches the host. Nothing is mounted
//   in the host's namespace: the mounts go with the namespace's last
//   process, even after a SIGKILL of the test.
// - The root is prepared before boot through the holder's view
//   (/proc/<holder>/root/...): configs, hooks, the executable, the enabled
//   sockets (the host's `systemctl --root`, offline), drop-ins.
// - cgroups: nspawn runs the container in the cgroup it is started in (it
//   moves itself to a "supervisor" child, the payload to "payload"). This
//   host has no systemd of its own, so nobody gives it one: the launcher
//   moves itself into a fresh cgroup per container (hybrid host:
//   /sys/fs/cgroup/systemd/NAME and /sys/fs/cgroup/unified/NAME; unified
//   host: /sys/fs/cgroup/NAME) before it execs nspawn; teardown removes
//   them. Without that, nspawn makes payload/ and supervisor/ at the host's
//   cgroup roots, the same for every container.
// - SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: the container gets a cgroup2
//   hierarchy of its own (cgroup namespace) also on a hybrid host. nspawn's
//   hybrid default gives it the v1 controllers read-only, where libvirt's
//   default cgroup_controllers fail a guest start ("Failed to create v1
//   controller cpu for group: Read-only file system"). QEMU_CONF asks for
//   none, so both work; unified also suits a libvirt with default settings.
// - `systemd-nspawn -b --register=no --keep-unit --private-network`: no
//   machined (there is none), no scope unit, no network: the container's
//   sockets stay off the host's. nspawn's /dev has no /dev/kvm, so libvirt
//   probes with TCG only, as in the other worlds.
// - Commands run inside with `nsenter -t <container PID 1> -a`.
// - Teardown: SIGTERM to nspawn by PID (with -b it sends its --kill-signal,
//   SIGRTMIN+3, to the container's systemd: a clean halt), SIGKILL of the
//   container's PID 1 (its whole PID namespace) if it lingers, then the
//   holder, the cgroups, the temp dir. A process 'exit' handler does the
//   same synchronously, and a detached reaper does it when the test process
//   dies without either.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { inCI } from '../fixtures/ci';
import {
  comm,
  isAlive,
  isExecutable,
  kill,
  readNs,
  run as runCommand,
  tail,
  waitFor,
  which,
  type ExecOptions,
  type ExecResult,
} from '../fixtures/processes';
import { shq as q } from '../fixtures/shell';

export type { ExecOptions, ExecResult };
import {
  CACHE_DIR,
  LIBVIRTD_CONF,
  listCacheFiles,
  type CacheFile,
  QEMU,
  QEMU_CONF,
  canRun,
  domainXml,
  domcapsArgs,
  parseReprobes,
  parseVideoModels,
  type DomainOptions,
  type Reprobe,
  type TestLike,
} from './harness';
import { BUILT_EXE, EXE, HOOK_DAEMON, HOOK_NAME, HOOK_QEMU, TOP } from './modwatch';

export const STACK_TREE = path.join(TOP, '.stacks/libvirt-11.3.0');
export const CONTAINER_ROOT = path.join(TOP, '.stacks/nspawn-bookworm');

/** A root file system the containers boot an overlay of, and what is laid over it. */
export interface ContainerRoot {
  /** The debootstrap root (build/nspawn-root.sh VARIANT). */
  dir: string;
  variant: 'upstream' | 'debian';
  /** A libvirt tree laid over the root (its daemons, units and configs), or null: the root's own libvirt. */
  libvirtTree: string | null;
}

/** Upstream libvirt 11.3.0's modular daemons over a root that has only their libraries. */
export const UPSTREAM_ROOT: ContainerRoot = { dir: CONTAINER_ROOT, variant: 'upstream', libvirtTree: STACK_TREE };
/** Debian 12's own libvirtd 9.0 (libvirt-daemon-system), QEMU 7.2, procps and nodejs. */
export const DEBIAN_ROOT: ContainerRoot = {
  dir: path.join(TOP, '.stacks/nspawn-bookworm-debian'),
  variant: 'debian',
  libvirtTree: null,
};

/**
 * A Debian host without /bin/kill, for the case of a libvirtd reload that
 * fails: Debian's libvirt does not depend on procps, and libvirtd.service
 * reloads with `/bin/kill -HUP $MAINPID`. procps is removed before the boot.
 */
export function withoutProcps(opts: ContainerOptions): ContainerOptions {
  return { ...opts, root: opts.root ?? DEBIAN_ROOT, removePackages: [...(opts.removePackages ?? []), 'procps'] };
}
export const URI = 'qemu:///system';
export const NETWORK_URI = 'network:///system';

/** virtqemud's debug log (LIBVIRTD_CONF); virtnetworkd writes the same settings to a file of its own. */
export const QEMU_DAEMON_LOG = '/var/log/libvirt/libvirtd.log';
export const NETWORK_DAEMON_LOG = '/var/log/libvirt/virtnetworkd.log';
/** One line per start of the executable, when counted (ContainerOptions.countExecs). */
export const EXEC_LOG = '/var/log/qemu-modwatch-execs.log';

/** The libvirt units the scenarios use: sockets only, as a distro enables them; the services are socket-activated. */
const ENABLED_UNITS = ['virtlogd.socket', 'virtqemud.socket', 'virtnetworkd.socket'];

/** Why the container cannot be booted here, or false; under CI a failure (inCI), never a skip. */
export function containerSkip(t: TestLike, root: ContainerRoot = UPSTREAM_ROOT): string | false {
  const why = containerMissing(root);
  if (!why) return false;
  if (inCI()) t.fail(`the systemd stack is needed under CI: ${why}`);
  else t.comment(`systemd stack tests skipped: ${why}`);
  return why;
}

function containerMissing(root: ContainerRoot): string | null {
  const r = canRun();
  if (!r.ok) return r.reason;
  if (!isExecutable(BUILT_EXE)) return `${path.relative(TOP, BUILT_EXE)} not built (npm run build)`;
  const tree = root.libvirtTree;
  if (
    tree &&
    (!fs.existsSync(path.join(tree, 'usr/lib/systemd/system/virtqemud.socket')) ||
      !fs.existsSync(path.join(tree, '.complete')))
  ) {
    return `${path.relative(TOP, tree)} is not built with libvirt's units (bash build/libvirt-modular.sh)`;
  }
  if (!fs.existsSync(path.join(root.dir, '.complete')))
    return `${path.relative(TOP, root.dir)} is not built (bash build/nspawn-root.sh ${root.variant})`;
  if (!which('systemd-nspawn'))
    return 'systemd-nspawn not found (package systemd-container; bash build/nspawn-root.sh installs it)';
  if (!which('systemctl')) return 'systemctl not found (the host systemd package enables the units offline)';
  return null;
}

/** What a service manager gives: nothing of the test runner's environment reaches the container. */
const CLEAN_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', HOME: '/root' };

/** A command on the host or in the container, in the environment a service manager gives. */
function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return runCommand(argv, { env: CLEAN_ENV, ...opts });
}

/**
 * Where each container gets a cgroup of its own, for the hierarchies this
 * host has mounted: cgroup2 at /sys/fs/cgroup, or the hybrid layout
 * (name=systemd v1, which nspawn takes its own cgroup from, and the cgroup2
 * at unified/, which the container's systemd manages).
 */
function cgroupDirs(name: string): string[] {
  if (fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) return [`/sys/fs/cgroup/${name}`];
  return ['/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified']
    .filter((d) => fs.existsSync(path.join(d, 'cgroup.procs')))
    .map((d) => `${d}/${name}`);
}

/** A cgroup and its children, deepest first (rmdir removes only empty ones). */
function removeCgroup(dir: string): boolean {
  const walk = (d: string): string[] => {
    let subs: string[] = [];
    try {
      subs = fs
        .readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => path.join(d, e.name));
    } catch {
      return [];
    }
    return [...subs.flatMap(walk), d];
  };
  for (const d of walk(dir)) {
    try {
      fs.rmdirSync(d);
    } catch {
      /* busy: retried by the caller */
    }
  }
  return !fs.existsSync(dir);
}

/** The host's nspawn leftovers, if any (it keeps state in /run/systemd/nspawn*). */
function hostNspawnPaths(): string[] {
  try {
    return fs
      .readdirSync('/run/systemd')
      .filter((n) => n.startsWith('nspawn'))
      .map((n) => `/run/systemd/${n}`);
  } catch {
    return [];
  }
}

// Runs when the test process died without a teardown: the same steps, by PID.
const REAPER = `
parent=$1 nspawn=$2 holder=$3 holder_ns=$4 dir=$5; shift 5
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
is_nspawn() { [ "$(cat "/proc/$nspawn/comm" 2>/dev/null)" = systemd-nspawn ]; }
if is_nspawn; then
  kill -TERM "$nspawn" 2>/dev/null
  for i in $(seq 50); do is_nspawn || break; sleep 0.2; done
  if is_nspawn; then
    for c in $(cat /proc/$nspawn/task/*/children 2>/dev/null); do kill -KILL "$c" 2>/dev/null; done
    sleep 0.5; kill -KILL "$nspawn" 2>/dev/null
  fi
fi
[ "$(readlink "/proc/$holder/ns/mnt" 2>/dev/null)" = "$holder_ns" ] && kill -KILL "$holder" 2>/dev/null
for i in $(seq 20); do
  left=
  for cg; do [ -d "$cg" ] && { find "$cg" -depth -type d -exec rmdir {} \\; 2>/dev/null; [ -d "$cg" ] && left=1; }; done
  [ -z "$left" ] && break
  sleep 0.5
done
rm -rf -- "$dir"
`;

// ---------------------------------------------------------------------------

export interface ContainerOptions {
  /** Temp dir prefix: one of the host snapshot's (mw-...), so a leftover fails the run. */
  label: string;
  /** Which root, and whether a libvirt tree is laid over it; default UPSTREAM_ROOT. */
  root?: ContainerRoot;
  /** Packages removed (`dpkg -r`, offline, in the overlay) before the boot: a host that never had them. */
  removePackages?: string[];
  /** Install qemu-modwatch (the dispatchers and the executable) as production does; false: a control without it. */
  product: boolean;
  /** A counting wrapper at EXE (the executable next to it as qemu-modwatch.real): one EXEC_LOG line per start. */
  countExecs?: boolean;
  /** virtqemud's idle timeout, s (a drop-in over libvirt's `--timeout 120`); with a libvirt tree only. */
  qemuIdleTimeout?: number;
  /** ms to wait for the boot; default 60000. */
  bootTimeout?: number;
}

export interface UnitState {
  ActiveState: string;
  SubState: string;
  MainPID: number;
  Result: string;
  ExecMainStatus: string;
}

export interface JournalEntry {
  /** Every field of journalctl's JSON record. */
  fields: Record<string, string>;
  message: string;
  priority: number | null;
}

const live = new Set<Container>();
let exitHook = false;

export class Container {
  readonly dir: string;
  /** The merged root as the holder sees it (before boot, and the container's / after). */
  readonly root: string;
  /** Milliseconds from spawning nspawn to `systemctl is-system-running` saying running (or degraded). */
  bootMs = 0;
  /** `systemctl is-system-running` at the end of the boot. */
  systemState = '';

  private holder: ChildProcess | null = null;
  private holderNs: string | null = null;
  private nspawn: ChildProcess | null = null;
  private leaderPid = 0;
  private reaperPid: number | undefined;
  private readonly cgroups: string[];
  private readonly nspawnBefore: Set<string>;
  private tornDown: Promise<void> | null = null;

  /** The root booted, and whether a libvirt tree is over it. */
  get rootSpec(): ContainerRoot {
    return this.opts.root ?? UPSTREAM_ROOT;
  }

  /** @internal use bootContainer() */
  constructor(readonly opts: ContainerOptions) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${opts.label}-`));
    this.root = path.join(this.dir, 'root');
    this.cgroups = cgroupDirs(path.basename(this.dir));
    this.nspawnBefore = new Set(hostNspawnPaths());
  }

  /** The container's PID 1 as the host sees it. */
  get pid1(): number {
    return this.leaderPid;
  }

  /** A path inside the container, as a path the test process can open (through the container's PID 1). */
  hostPath(p: string): string {
    if (!this.leaderPid) throw new Error('the container is not running');
    return `/proc/${this.leaderPid}/root${path.posix.normalize(p)}`;
  }

  private holderPath(p: string): string {
    return `/proc/${this.holder?.pid}/root${this.root}${path.posix.normalize(p)}`;
  }

  private inHolder(): string[] {
    return ['nsenter', `--mount=/proc/${this.holder?.pid}/ns/mnt`, '--'];
  }

  // -- set-up -----------------------------------------------------------------

  /** @internal */
  async start(): Promise<void> {
    fs.mkdirSync(path.join(this.dir, 'upper'));
    fs.mkdirSync(path.join(this.dir, 'work'));
    fs.mkdirSync(this.root);
    const holder = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sleep', 'infinity'], {
      stdio: 'ignore',
      detached: true,
    });
    holder.on('error', () => {});
    holder.unref();
    this.holder = holder;
    const hostNs = readNs('self');
    const entered = await waitFor(
      () => {
        const ns = holder.pid ? readNs(holder.pid) : null;
        if (ns && ns !== hostNs && comm(holder.pid!) === 'sleep') this.holderNs = ns;
        return this.holderNs !== null || holder.exitCode !== null;
      },
      10_000,
      10,
    );
    if (!entered || !this.holderNs) throw new Error('the mount namespace holder did not start');
    this.startReaper();

    // /run/systemd is the host's; a tmpfs there keeps nspawn's files private.
    // Where the host has none, /run itself gets one (mkdir would create it on the host).
    const runTmpfs = fs.existsSync('/run/systemd') ? '/run/systemd' : '/run';
    const layers = [this.rootSpec.libvirtTree, this.rootSpec.dir].filter((l): l is string => l !== null);
    for (const p of [this.dir, ...layers]) {
      if (p.startsWith(`${runTmpfs}/`))
        throw new Error(`${p} is under ${runTmpfs}, which the container's namespace hides; set TMPDIR elsewhere`);
    }
    const lower = layers.join(':');
    await run(
      [
        ...this.inHolder(),
        'sh',
        '-euc',
        [
          `mount -t overlay overlay -o ` +
            `${q(`lowerdir=${lower},upperdir=${this.dir}/upper,workdir=${this.dir}/work`)} ${q(this.root)}`,
          `mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs ${q(runTmpfs)}`,
        ].join('\n'),
      ],
      { timeout: 30_000 },
    );
    await this.prepareRoot();
    await this.boot();
  }

  private write(p: string, content: string, mode = 0o644): void {
    const f = this.holderPath(p);
    fs.mkdirSync(path.dirname(f), { recursive: true, mode: 0o755 });
    fs.writeFileSync(f, content, { mode });
    fs.chmodSync(f, mode);
  }

  private async prepareRoot(): Promise<void> {
    const o = this.opts;
    this.write('/etc/libvirt/qemu.conf', QEMU_CONF);
    if (this.rootSpec.libvirtTree) await this.prepareModular();
    // Debian's own libvirtd, as its packages enabled it; only its log settings are ours.
    else this.write('/etc/libvirt/libvirtd.conf', LIBVIRTD_CONF);
    if (o.removePackages?.length) {
      // Offline, as on a host they were never installed on: no systemd runs in the root yet.
      await run([...this.inHolder(), 'chroot', this.root, 'dpkg', '-r', ...o.removePackages], { timeout: 60_000 });
    }
    if (o.product) {
      for (const [driver, file] of [
        ['qemu', HOOK_QEMU],
        ['daemon', HOOK_DAEMON],
      ] as const) {
        this.write(`/etc/libvirt/hooks/${driver}.d/${HOOK_NAME}`, fs.readFileSync(file, 'utf8'), 0o755);
      }
      const exe = this.holderPath(EXE);
      fs.mkdirSync(path.dirname(exe), { recursive: true, mode: 0o755 });
      if (o.countExecs) {
        fs.copyFileSync(BUILT_EXE, `${exe}.real`);
        fs.chmodSync(`${exe}.real`, 0o755);
        this.write(
          EXE,
          `#!/bin/sh\n# e2e: count the starts of the executable.\necho "$*" >> ${EXEC_LOG}\nexec ${EXE}.real "$@"\n`,
          0o755,
        );
      } else {
        fs.copyFileSync(BUILT_EXE, exe);
        fs.chmodSync(exe, 0o755);
      }
    }
  }

  /** The upstream tree's configs and units: its modular daemons as a distro would enable them. */
  private async prepareModular(): Promise<void> {
    const o = this.opts;
    this.write('/etc/libvirt/virtqemud.conf', LIBVIRTD_CONF);
    // A log of its own: which daemon ran a hook is then beyond doubt.
    const netConf = LIBVIRTD_CONF.replace(QEMU_DAEMON_LOG, NETWORK_DAEMON_LOG);
    if (netConf === LIBVIRTD_CONF) throw new Error(`LIBVIRTD_CONF does not log to ${QEMU_DAEMON_LOG}`);
    this.write('/etc/libvirt/virtnetworkd.conf', netConf);
    // No firewall tool in the container: virtnetworkd would refuse to start.
    fs.appendFileSync(this.holderPath('/etc/libvirt/network.conf'), 'firewall_backend = "none"\n');
    // The tree's default network autostarts (a bridge, dnsmasq): none here,
    // as in the other worlds, which have no network definitions at all.
    fs.rmSync(this.holderPath('/etc/libvirt/qemu/networks/autostart/default.xml'), { force: true });
    // The build's qemu_user is root: no libvirt-qemu user needed (virtqemud starts without one).
    if (o.qemuIdleTimeout !== undefined) {
      // Later Environment= lines win: this replaces the unit's "--timeout 120".
      this.write(
        '/etc/systemd/system/virtqemud.service.d/50-e2e-timeout.conf',
        `[Service]\nEnvironment=VIRTQEMUD_ARGS="--timeout ${o.qemuIdleTimeout}"\n`,
      );
    }
    // As `systemctl enable` does it on an installed system, here offline.
    await run([...this.inHolder(), 'systemctl', `--root=${this.root}`, 'enable', ...ENABLED_UNITS], {
      timeout: 30_000,
    });
  }

  private async boot(): Promise<void> {
    const log = path.join(this.dir, 'boot.log');
    const fd = fs.openSync(log, 'a');
    const t0 = performance.now();
    try {
      for (const cg of this.cgroups) fs.mkdirSync(cg);
      // The launcher joins the cgroups, then becomes nspawn (nsenter into the
      // holder's namespace does not fork): the spawned PID is nspawn's.
      const joins = this.cgroups.map((cg) => `echo $$ > ${q(`${cg}/cgroup.procs`)}`).join('\n');
      const nspawnArgs = ['systemd-nspawn', '-b', '--register=no', '--keep-unit', '--private-network', '-D', this.root];
      const child = spawn('sh', ['-euc', `${joins}\nexec ${[...this.inHolder(), ...nspawnArgs].map(q).join(' ')}`], {
        stdio: ['ignore', fd, fd],
        detached: true,
        env: { ...CLEAN_ENV, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1' },
      });
      child.on('error', () => {});
      child.unref();
      this.nspawn = child;
      fs.writeFileSync(path.join(this.dir, 'nspawn.pid'), `${child.pid ?? 0}\n`);
    } finally {
      fs.closeSync(fd);
    }
    const nspawn = this.nspawn;
    const gone = () => nspawn.exitCode !== null || nspawn.signalCode !== null;
    const hostPidNs = readNs('self', 'pid');
    const found = await waitFor(
      () => {
        if (gone()) return true;
        const kids = (() => {
          try {
            return fs
              .readFileSync(`/proc/${nspawn.pid}/task/${nspawn.pid}/children`, 'utf8')
              .trim()
              .split(/\s+/)
              .filter(Boolean)
              .map(Number);
          } catch {
            return [];
          }
        })();
        const leader = kids.find((k) => readNs(k, 'pid') !== hostPidNs && comm(k) === 'systemd');
        if (leader) this.leaderPid = leader;
        return leader !== undefined;
      },
      this.opts.bootTimeout ?? 60_000,
      20,
    );
    if (!found || gone()) throw new Error(`systemd-nspawn ${gone() ? 'exited' : 'started no systemd'}:\n${tail(log)}`);
    let state = '';
    const up = await waitFor(
      async () => {
        if (gone()) return true;
        state = (
          await this.exec(['systemctl', 'is-system-running'], { allowFail: true, timeout: 10_000 })
        ).stdout.trim();
        return state === 'running' || state === 'degraded';
      },
      this.opts.bootTimeout ?? 60_000,
      50,
    );
    if (!up || gone())
      throw new Error(
        `the container did not boot (${gone() ? 'nspawn exited' : `is-system-running: ${state}`}):\n${tail(log)}`,
      );
    this.bootMs = Math.round(performance.now() - t0);
    this.systemState = state;
  }

  private startReaper(): void {
    const file = path.join(this.dir, 'reaper.sh');
    fs.writeFileSync(file, REAPER);
    // nspawn's PID is not known yet: the reaper reads it from a file written at boot.
    const reaper = spawn(
      'bash',
      [
        '-c',
        `sleep 0.1; while [ ! -s ${q(`${this.dir}/nspawn.pid`)} ] && kill -0 ${process.pid} 2>/dev/null; ` +
          `do sleep 0.5; done; exec bash ${q(file)} ${process.pid} "$(cat ${q(`${this.dir}/nspawn.pid`)} ` +
          `2>/dev/null || echo 0)" ${this.holder?.pid} ${q(this.holderNs ?? '')} ${q(this.dir)} ` +
          `${this.cgroups.map(q).join(' ')}`,
      ],
      {
        stdio: 'ignore',
        detached: true,
      },
    );
    reaper.on('error', () => {});
    reaper.unref();
    this.reaperPid = reaper.pid;
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const c of live) c.teardownSync();
      });
    }
    live.add(this);
  }

  // -- inside -----------------------------------------------------------------

  /** Runs a command in the container (all its namespaces, its root). Throws on a non-zero exit unless allowFail. */
  exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.tornDown) return Promise.reject(new Error('container already torn down'));
    if (!this.leaderPid || !isAlive(this.leaderPid)) return Promise.reject(new Error('the container is not running'));
    return run(['nsenter', '-t', String(this.leaderPid), '-a', '--', ...cmd], opts);
  }

  /** `virsh -c qemu:///system ...` in the container. */
  virsh(...args: string[]): Promise<ExecResult> {
    return this.exec(['virsh', '-c', URI, ...args]);
  }

  /** `virsh -c <uri> ...`, e.g. network:///system, which socket-activates virtnetworkd. */
  virshAt(uri: string, ...args: string[]): Promise<ExecResult> {
    return this.exec(['virsh', '-c', uri, ...args]);
  }

  /** Defines the tiny TCG guest of the other worlds (harness domainXml). */
  async defineDomain(name: string, opts: DomainOptions = {}): Promise<void> {
    await this.exec(['sh', '-c', `cat > /root/${name}.xml && virsh -c ${URI} define /root/${name}.xml`], {
      input: domainXml(name, opts),
    });
  }

  /** `virsh domcapabilities` for the x86_64 emulator, TCG, machine pc. */
  async domcapabilities(emulator = QEMU): Promise<string> {
    return (await this.virsh(...domcapsArgs(emulator))).stdout;
  }

  /** What QEMU itself makes of the container's modules: the device names `-device help` lists. */
  async qemuDevices(emulator = QEMU): Promise<string[]> {
    const r = await this.exec([emulator, '-machine', 'none', '-device', 'help'], { allowFail: true });
    return [...r.stdout.matchAll(/^name "([^"]+)"/gm)].map((m) => m[1] ?? '');
  }

  async domcapsVideoModels(emulator?: string): Promise<string[]> {
    return parseVideoModels(await this.domcapabilities(emulator));
  }

  /**
   * virtqemud's debug log (hooks, util.command, capabilities), or another daemon's:
   * `daemonLog(NETWORK_DAEMON_LOG)`.
   */
  daemonLog(file = QEMU_DAEMON_LOG): string {
    try {
      return fs.readFileSync(this.hostPath(file), 'utf8');
    } catch {
      return '';
    }
  }

  /** Something hookCalls()/hookRuns() read: virtnetworkd's log. */
  get networkDaemon(): { daemonLog(): string } {
    return { daemonLog: () => this.daemonLog(NETWORK_DAEMON_LOG) };
  }

  /** libvirt's own logged reasons for each re-probe (virtqemud's log). */
  reprobes(): Reprobe[] {
    return parseReprobes(this.daemonLog());
  }

  /**
   * What qemu-modwatch logged to the container's journal, oldest first (journald flushed first); or the
   * entries of other journalctl matches, e.g. `_SYSTEMD_UNIT=qemu-modwatch.service`.
   */
  async journal(...matches: string[]): Promise<JournalEntry[]> {
    await this.exec(['journalctl', '--sync'], { allowFail: true });
    const which = matches.length ? matches : ['SYSLOG_IDENTIFIER=qemu-modwatch'];
    const out = (await this.exec(['journalctl', '-o', 'json', '--no-pager', ...which], { allowFail: true })).stdout;
    return out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        const raw = JSON.parse(l) as Record<string, unknown>;
        const fields: Record<string, string> = {};
        for (const [k, v] of Object.entries(raw)) {
          // journald gives a field that is not valid UTF-8 as an array of bytes.
          fields[k] = Array.isArray(v) ? Buffer.from(v as number[]).toString('utf8') : String(v);
        }
        return {
          fields,
          message: fields.MESSAGE ?? '',
          priority: fields.PRIORITY !== undefined ? Number(fields.PRIORITY) : null,
        };
      });
  }

  /** `systemctl show` of a unit. */
  async unit(name: string): Promise<UnitState> {
    const out = (
      await this.exec(['systemctl', 'show', '-p', 'ActiveState,SubState,MainPID,Result,ExecMainStatus', name])
    ).stdout;
    const v: Record<string, string> = {};
    for (const line of out.split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) v[line.slice(0, i)] = line.slice(i + 1);
    }
    return {
      ActiveState: v.ActiveState ?? '',
      SubState: v.SubState ?? '',
      MainPID: Number(v.MainPID ?? 0),
      Result: v.Result ?? '',
      ExecMainStatus: v.ExecMainStatus ?? '',
    };
  }

  /** Resolves true once the unit is in `state` (ActiveState), false after timeoutMs. */
  async waitUnit(name: string, state: string, timeoutMs: number): Promise<boolean> {
    return waitFor(async () => (await this.unit(name)).ActiveState === state, timeoutMs, 200);
  }

  /**
   * Every path the container changed since its root was made, sorted: what the overlay's upper dir
   * holds (files and directories written, whiteouts of those removed). Any other path is still the
   * read-only layers' (lowerPath()), apart from the file systems mounted over the root (/run, /tmp).
   */
  overlayChanges(): string[] {
    const upper = path.join(this.dir, 'upper');
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const e of fs.readdirSync(path.join(upper, rel), { withFileTypes: true })) {
        const p = path.posix.join(rel, e.name);
        out.push(p);
        if (e.isDirectory()) walk(p);
      }
    };
    walk('/');
    return out.sort();
  }

  /** A path of the read-only layers (the libvirt tree first, then the root), as the host opens it. */
  lowerPath(p: string): string {
    const tree = this.rootSpec.libvirtTree;
    const inTree = tree ? path.join(tree, p) : null;
    return inTree && fs.lstatSync(inTree, { throwIfNoEntry: false }) ? inTree : path.join(this.rootSpec.dir, p);
  }

  /** Files in the container's capabilities cache, sorted by name. */
  cacheFiles(): CacheFile[] {
    return listCacheFiles(this.hostPath(CACHE_DIR));
  }

  /** Starts of the executable so far (countExecs). */
  execCount(): number {
    try {
      return fs.readFileSync(this.hostPath(EXEC_LOG), 'utf8').split('\n').filter(Boolean).length;
    } catch {
      return 0;
    }
  }

  /** The container's /var/lib/qemu-modwatch/state.json, raw ('' when there is none). */
  stateFile(): string {
    try {
      return fs.readFileSync(this.hostPath('/var/lib/qemu-modwatch/state.json'), 'utf8');
    } catch {
      return '';
    }
  }

  // -- teardown ---------------------------------------------------------------

  /** Stops the container and removes all it left. Idempotent; never throws (warns with what it could not clean). */
  teardown(): Promise<void> {
    if (!this.tornDown) this.tornDown = this.doTeardown();
    return this.tornDown;
  }

  private isNspawn(): boolean {
    const n = this.nspawn;
    return !!n?.pid && n.exitCode === null && n.signalCode === null && comm(n.pid) === 'systemd-nspawn';
  }

  private async doTeardown(): Promise<void> {
    const problems: string[] = [];
    const n = this.nspawn;
    if (n?.pid && this.isNspawn()) {
      // nspawn passes SIGTERM on as SIGRTMIN+3 to the container's systemd: a clean halt.
      kill(n.pid, 'SIGTERM');
      if (!(await waitFor(() => !this.isNspawn(), 15_000))) {
        problems.push('the container did not halt within 15 s: killed');
        if (this.leaderPid && isAlive(this.leaderPid)) kill(this.leaderPid, 'SIGKILL');
        if (!(await waitFor(() => !this.isNspawn(), 5_000))) kill(n.pid, 'SIGKILL');
      }
    }
    if (this.leaderPid && isAlive(this.leaderPid) && readNs(this.leaderPid, 'pid') !== readNs('self', 'pid'))
      kill(this.leaderPid, 'SIGKILL');
    this.killHolder();
    const h = this.holder;
    if (h?.pid) await waitFor(() => !isAlive(h.pid!), 5_000, 50);
    if (!(await waitFor(() => this.cgroups.every(removeCgroup), 10_000, 200)))
      problems.push(`cgroups left: ${this.cgroups.filter((c) => fs.existsSync(c)).join(' ')}`);
    this.removeNspawnLeftovers();
    if (this.reaperPid) kill(this.reaperPid, 'SIGKILL');
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch (e) {
      problems.push(`removing ${this.dir}: ${(e as Error).message}`);
    }
    live.delete(this);
    if (problems.length) process.emitWarning(`systemd container teardown: ${problems.join('; ')}`);
  }

  private killHolder(): void {
    const h = this.holder;
    if (h?.pid && this.holderNs && readNs(h.pid) === this.holderNs) kill(h.pid, 'SIGKILL');
  }

  /**
   * Only what appeared since this container was made: its tmpfs should have kept nspawn off the host's
   * /run/systemd.
   */
  private removeNspawnLeftovers(): void {
    for (const p of hostNspawnPaths()) if (!this.nspawnBefore.has(p)) fs.rmSync(p, { recursive: true, force: true });
  }

  /** Last resort on process exit: SIGKILL by PID, then the same clean-up, synchronously. */
  teardownSync(): void {
    if (this.tornDown) return;
    this.tornDown = Promise.resolve();
    if (this.leaderPid && isAlive(this.leaderPid) && readNs(this.leaderPid, 'pid') !== readNs('self', 'pid'))
      kill(this.leaderPid, 'SIGKILL');
    if (this.nspawn?.pid && this.isNspawn()) kill(this.nspawn.pid, 'SIGKILL');
    this.killHolder();
    for (let i = 0; i < 20 && !this.cgroups.every(removeCgroup); i++) spawnSync('sleep', ['0.2']);
    this.removeNspawnLeftovers();
    if (this.reaperPid) kill(this.reaperPid, 'SIGKILL');
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* the reaper is gone too; nothing more to do */
    }
    live.delete(this);
  }
}

/** Boots a container for one test; its teardown is registered on the test first (it runs when the boot fails too). */
export async function bootContainer(t: TestLike, opts: ContainerOptions): Promise<Container> {
  const c = new Container(opts);
  t.teardown(() => c.teardown());
  try {
    await c.start();
  } catch (e) {
    await c.teardown();
    throw e;
  }
  return c;
}
