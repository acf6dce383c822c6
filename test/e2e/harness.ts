// End-to-end harness: a real libvirtd + virtlogd + QEMU (TCG guests), fully
// isolated from the host in a private mount namespace.
//
// How the isolation works
// -----------------------
// A long-lived holder process (`unshare --mount --propagation private sleep
// infinity`) owns a new mount namespace. Everything else enters it with
// `nsenter --mount=/proc/<holder>/ns/mnt`. Inside that namespace:
//
// - these directories are bind mounts of private directories in the env's
//   temp dir (so the host side can read and edit them through hostPath()):
//     /etc/libvirt                 top-level *.conf of the host's copy only
//                                  (no hooks, no domain/network XML), plus
//                                  our qemu.conf and libvirtd.conf
//     /var/cache/libvirt           empty: the capabilities cache starts cold
//     /var/lib/libvirt             empty
//     /run/libvirt                 empty
//     /var/log/libvirt             empty
//     /var/lib/qemu-modwatch       empty
//     <QEMU module dir>            `cp -a` of the world's own (same mtimes):
//                                  the host's, or the one opts.layers install
// - a bind mount needs an existing mount point. A target that does not exist
//   on the host (e.g. /var/cache/libvirt on a host without libvirt's state)
//   is created inside an overlayfs that is mounted over its nearest existing
//   ancestor (lowerdir = the host's directory, upper/work in the temp dir),
//   so the host's directory is never written to.
// - /etc is always such an overlay. That is how /etc/qemu-modwatch.conf is
//   made privately overridable: it is removed (whited out) by default,
//   written from opts.config, or later by env.writeFile() /
//   env.removeFile(), all inside the namespace (writes land in the overlay's
//   upper dir). Atomic replace by rename, deletion and re-creation all work,
//   which a bind-mounted single file would not allow. The same overlay adds
//   the `libvirt-qemu` user/group that Debian's libvirtd insists on parsing
//   at start-up even when qemu.conf says user = "root", without touching the
//   host's /etc/passwd.
// - Paths that live only in an overlay (e.g. /etc/qemu-modwatch.conf, or
//   /run/qemu/<ver> if a test creates it) have no stable host-side path:
//   hostPath() refuses them; use env.exec/env.writeFile/env.readFile.
// - opts.privateDirs adds more such private bind mounts (e.g. the install
//   dir of the executable under test); opts.overlayDirs adds more
//   copy-on-write overlays over existing host directories (e.g. /usr/bin,
//   so a chmod of an emulator never reaches the host's file).
// - Mounts hidden by an overlay (e.g. a container's /etc/resolv.conf bind)
//   are bound back on top of the overlay.
//
// Clean-up: teardown() kills every process whose /proc/<pid>/ns/mnt is the
// env's namespace (daemons, QEMU, hooks, stray execs), the holder last, and
// removes the temp dir. Host processes are never touched: they are in a
// different mount namespace. If the test process dies without a teardown
// (SIGINT, SIGTERM, SIGKILL, timeout), a detached reaper process that watches
// the test process does the same, and a process 'exit' handler does it
// synchronously on a normal exit. The namespace's mounts are never visible to
// the host (propagation private), and disappear with its last process.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { inCI } from '../fixtures/ci';
import { overlayMountLines } from '../fixtures/overlay-mount';
import {
  comm,
  isAlive,
  isExecutable,
  kill,
  readNs,
  run,
  sleep,
  tail,
  waitFor,
  which,
  type ExecOptions,
  type ExecResult,
} from '../fixtures/processes';
import { shq as q } from '../fixtures/shell';

export { isExecutable, type ExecOptions, type ExecResult };

export const LIBVIRTD = '/usr/sbin/libvirtd';
export const VIRTLOGD = '/usr/sbin/virtlogd';
export const VIRSH = '/usr/bin/virsh';
export const QEMU = '/usr/bin/qemu-system-x86_64';
export const MODULE_DIR = '/usr/lib/x86_64-linux-gnu/qemu';
export const CACHE_DIR = '/var/cache/libvirt/qemu/capabilities';
/** libvirt's cache file name of an emulator: sha256 of its path as spelled. */
export const cacheEntryName = (emulator: string) => `${crypto.createHash('sha256').update(emulator).digest('hex')}.xml`;
export const CONFIG_FILE = '/etc/qemu-modwatch.conf';
export const URI = 'qemu:///system';

/** qemu.conf for a root daemon without cgroups, security drivers or namespaces. */
export const QEMU_CONF = [
  'user = "root"',
  'group = "root"',
  'cgroup_controllers = [ ]',
  'security_driver = "none"',
  'namespaces = [ ]',
  '',
].join('\n');

/**
 * libvirtd.conf: warnings and errors to stderr (libvirtd.out in the temp dir),
 * plus a debug log of hook runs and of the capabilities code (why a cache
 * entry was judged outdated) in /var/log/libvirt/libvirtd.log. util.hook
 * logs only "Calling hook <file> id=.. op=.."; a hook's exit status, stdout
 * and stderr are logged by util.command ("Result status N, stdout: '..'
 * stderr: '..'", in the same thread).
 */
export const LIBVIRTD_CONF = [
  'log_filters = "1:util.hook 1:util.command 1:qemu.qemu_capabilities 3:*"',
  'log_outputs = "1:file:/var/log/libvirt/libvirtd.log 3:stderr"',
  '',
].join('\n');

/** Where a daemon writes its debug log: the QEMU daemon to libvirtd.log (LIBVIRTD_CONF), any other to <name>.log. */
function debugLogOf(name: string, qemuDaemon: QemuDaemon): string {
  return `/var/log/libvirt/${name === qemuDaemon ? 'libvirtd' : name}.log`;
}

// ---------------------------------------------------------------------------
// Can the e2e tests run here?

export type CanRun = { ok: true } | { ok: false; reason: string };

let canRunMemo: CanRun | undefined;

/** Whether a real libvirtd can be run in a private mount namespace here. */
export function canRun(): CanRun {
  if (canRunMemo) return canRunMemo;
  const no = (reason: string): CanRun => (canRunMemo = { ok: false, reason });
  if (process.platform !== 'linux') return no(`not Linux (${process.platform})`);
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return no('not running as root (needs mount namespaces and a system libvirtd)');
  }
  for (const tool of ['unshare', 'nsenter', 'mount', 'cp', 'touch', 'bash']) {
    if (!which(tool)) return no(`${tool} not found`);
  }
  for (const [what, p] of [
    ['libvirtd', LIBVIRTD],
    ['virtlogd', VIRTLOGD],
    ['virsh', VIRSH],
    ['qemu-system-x86_64', QEMU],
  ] as const) {
    if (!isExecutable(p)) return no(`${what} not found at ${p}`);
  }
  try {
    if (!fs.statSync(MODULE_DIR).isDirectory()) return no(`${MODULE_DIR} is not a directory`);
  } catch {
    return no(`QEMU module directory ${MODULE_DIR} not found`);
  }
  try {
    if (!/\boverlay\b/.test(fs.readFileSync('/proc/filesystems', 'utf8'))) {
      return no('the kernel has no overlayfs');
    }
  } catch (e) {
    return no(`cannot read /proc/filesystems: ${(e as Error).message}`);
  }
  const probe = spawnSync('unshare', ['--mount', '--propagation', 'private', 'true'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (probe.status !== 0) {
    return no(`unshare --mount does not work here: ${(probe.stderr || probe.error?.message || '').trim()}`);
  }
  return (canRunMemo = { ok: true });
}

/** The parts of a tap Test this harness uses. */
export interface TestLike {
  fail(message: string): unknown;
  comment(...args: unknown[]): unknown;
  teardown(fn: () => unknown): unknown;
}

/**
 * Call once at the top of an e2e test file. Returns false when the tests can
 * run, or the reason to skip every scenario (`t.test(name, { skip }, fn)`).
 * Under CI, not being able to run is a failure: it records one here and
 * still returns the reason so the scenarios are reported as skipped.
 */
export function e2eSkip(t: TestLike): string | false {
  const r = canRun();
  if (r.ok) return false;
  if (inCI()) t.fail(`e2e tests cannot run although CI is set: ${r.reason}`);
  else t.comment(`e2e tests skipped: ${r.reason}`);
  return r.reason;
}

// ---------------------------------------------------------------------------
// Small utilities

/** Milliseconds since `t0` (a performance.now() value), rounded to 0.1 ms. */
const since = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;

/** Runs `fn` and returns its result with the wall-clock time it took. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: since(t0), value };
}

/** PIDs of all processes in mount namespace `ns` (e.g. "mnt:[4026532177]"). */
export function pidsInNamespace(ns: string, exclude: number[] = []): number[] {
  const pids: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid || exclude.includes(pid)) continue;
    if (readNs(pid) === ns && isAlive(pid)) pids.push(pid);
  }
  return pids;
}

/** Bash reaper: waits for the test process to die, then cleans up like teardown(). */
const REAPER = `
parent=$1 ns=$2 holder=$3 dir=$4
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
# The holder keeps the namespace (and so its inode number) alive: only scan
# while it is still in it.
for round in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(readlink "/proc/$holder/ns/mnt" 2>/dev/null)" = "$ns" ] || break
  found=
  for p in /proc/[0-9]*; do
    pid=\${p#/proc/}
    [ "$pid" = "$holder" ] && continue
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
    kill -KILL "$pid" 2>/dev/null && found=1
  done
  [ -z "$found" ] && break
  sleep 0.3
done
[ "$(readlink "/proc/$holder/ns/mnt" 2>/dev/null)" = "$ns" ] && kill -KILL "$holder" 2>/dev/null
sleep 0.3
rm -rf -- "$dir"
`;

// ---------------------------------------------------------------------------
// The environment

export interface HookFiles {
  /** name -> host file, installed as /etc/libvirt/hooks/qemu.d/<name> (0755). */
  qemuD?: Record<string, string>;
  /** name -> host file, installed as /etc/libvirt/hooks/daemon.d/<name> (0755). */
  daemonD?: Record<string, string>;
  /** host file installed as /etc/libvirt/hooks/qemu (0755). */
  qemu?: string;
  /** host file installed as /etc/libvirt/hooks/daemon (0755). */
  daemon?: string;
}

export interface EnvOptions {
  hooks?: HookFiles;
  /** Contents of /etc/qemu-modwatch.conf inside the namespace; absent when undefined. */
  config?: string;
  /** Extra lines appended to qemu.conf. */
  qemuConf?: string;
  /** Replaces LIBVIRTD_CONF (libvirtd.conf). */
  libvirtdConf?: string;
  /** Start virtlogd + libvirtd (default true). With false, call startDaemon() yourself. */
  startDaemon?: boolean;
  /** ms to wait for each daemon's socket; default 30000. */
  daemonTimeout?: number;
  /** Prefix of the temp dir name. */
  label?: string;
  /**
   * More directories made private like the ones listed at the top: each is a
   * bind mount of a fresh, empty directory in the temp dir (host side:
   * hostPath()). One missing on the host is created inside an overlay over
   * its nearest existing ancestor; one that exists is hidden (shows empty).
   */
  privateDirs?: string[];
  /**
   * Existing host directories overlaid copy-on-write (lowerdir = the host's
   * directory, upper/work in the temp dir), like /etc: they show the host's
   * files, but whatever is written, chmod'ed, replaced or removed in them
   * inside the namespace lands in the temp dir. E.g. /usr/bin, so that a
   * chmod of an emulator never reaches the host's file. Their files have no
   * host path: use env.exec/writeFile/readFile.
   */
  overlayDirs?: string[];
  /**
   * Read-only layers laid over one of overlayDirs (or /etc): the target ->
   * directories on the host laid over it, top first, e.g. /usr -> a libvirt
   * built for the tests over a QEMU installed for them (test/e2e/stacks.ts).
   * The target's files show through where no layer has them; a layer's
   * whiteouts hide them.
   */
  layers?: Record<string, string | string[]>;
  /**
   * The daemon that holds QEMU's capabilities, as startDaemon() starts it:
   * the monolithic libvirtd (default), or libvirt's modular virtqemud, then
   * with virtnetworkd started before it and running beside it.
   */
  daemon?: QemuDaemon;
}

export type QemuDaemon = 'libvirtd' | 'virtqemud';

/** What runs beside the QEMU daemon of each kind (see EnvOptions.daemon). */
const COMPANIONS: Record<QemuDaemon, string[]> = { libvirtd: [], virtqemud: ['virtnetworkd'] };

export type VideoModel = 'none' | 'qxl' | 'vga';

export interface DomainOptions {
  emulator?: string;
  video?: VideoModel;
}

export interface CacheFile {
  /** `<sha256>.xml` */
  name: string;
  /** Path inside the namespace. */
  path: string;
  /** Path of the private copy on the host side. */
  hostPath: string;
  ino: string;
  mtimeNs: string;
  size: number;
}

export interface Timings {
  /** virtlogd start to its socket, ms. */
  virtlogdStart?: number;
  /** Every libvirtd start: spawn to answering `virsh uri`, ms. */
  libvirtdStarts: number[];
}

/** The files of a world's capabilities cache, seen at `hostDir` on the host, sorted by name. */
export function listCacheFiles(hostDir: string): CacheFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(hostDir);
  } catch {
    return [];
  }
  return names.sort().flatMap((name) => {
    try {
      const st = fs.statSync(path.join(hostDir, name), { bigint: true });
      const file = { name, path: path.posix.join(CACHE_DIR, name), hostPath: path.join(hostDir, name) };
      return [{ ...file, ino: st.ino.toString(), mtimeNs: st.mtimeNs.toString(), size: Number(st.size) }];
    } catch {
      return [];
    }
  });
}

/** `virsh domcapabilities` for an x86_64 emulator, TCG, machine pc: what every world asks. */
export function domcapsArgs(emulator: string): string[] {
  return ['domcapabilities', '--emulatorbin', emulator, '--arch', 'x86_64', '--machine', 'pc', '--virttype', 'qemu'];
}

/** Tiny TCG guest: no disk, 64 MiB, pty serial, no balloon. */
export function domainXml(name: string, opts: DomainOptions = {}): string {
  const emulator = opts.emulator ?? QEMU;
  const video = opts.video ?? 'none';
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <emulator>${emulator}</emulator>
    <serial type='pty'/>
    <console type='pty'/>
    <video>
      <model type='${video}'/>
    </video>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** Values of the video modelType enum in `virsh domcapabilities` output. */
export function parseVideoModels(domcapsXml: string): string[] {
  const video = /<video\b[^>]*>([\s\S]*?)<\/video>/.exec(domcapsXml);
  if (!video?.[1]) return [];
  const en = /<enum name='modelType'>([\s\S]*?)<\/enum>/.exec(video[1]);
  if (!en?.[1]) return [];
  return [...en[1].matchAll(/<value>([^<]*)<\/value>/g)].map((m) => m[1] ?? '');
}

/** Why libvirt judged a cache entry outdated, from the wording of its debug line. */
export type ReprobeReason =
  | 'modules directory'
  | 'binary'
  | 'libvirt'
  | 'host CPU'
  | 'microcode'
  | 'kernel'
  | 'host cpuid'
  | 'kvm nested'
  | 'kvm secure guest'
  | 'kvm usable now'
  | 'other';

export interface Reprobe {
  emulator: string;
  reason: ReprobeReason;
  /** libvirt's words after "Outdated capabilities for '<emulator>': ". */
  text: string;
}

const REPROBE_REASONS: [RegExp, ReprobeReason][] = [
  [/^QEMU modules directory /, 'modules directory'],
  [/^QEMU binary changed/, 'binary'],
  [/^libvirt changed/, 'libvirt'],
  [/^host CPU changed/, 'host CPU'],
  [/^microcode version changed/, 'microcode'],
  [/^kernel version changed/, 'kernel'],
  [/^host cpuid changed/, 'host cpuid'],
  [/^kvm kernel nested/, 'kvm nested'],
  [/^kvm kernel secure guest/, 'kvm secure guest'],
];

function reprobeReason(text: string): ReprobeReason {
  return REPROBE_REASONS.find(([re]) => re.test(text))?.[1] ?? 'other';
}

/** The re-probes in a libvirt debug log (virQEMUCapsIsValid's lines, and KVM's), in order. */
export function parseReprobes(log: string): Reprobe[] {
  return log.split('\n').flatMap((line) => {
    const outdated = /Outdated capabilities for '([^']*)': (.*)$/.exec(line);
    if (outdated)
      return [{ emulator: outdated[1] ?? '', reason: reprobeReason(outdated[2] ?? ''), text: outdated[2] ?? '' }];
    const kvm = /KVM was not enabled when probing '([^']*)', but it should be usable now/.exec(line);
    return kvm ? [{ emulator: kvm[1] ?? '', reason: 'kvm usable now' as const, text: 'KVM should be usable now' }] : [];
  });
}

/**
 * "<emulator>: <reason>" of the re-probes from index `from` on, each pair
 * once (one lookup can log its reason twice), for one t.same() against
 * what a scenario set up.
 */
export function reprobeSummary(env: { reprobes(): Reprobe[] }, from = 0): string[] {
  return [
    ...new Set(
      env
        .reprobes()
        .slice(from)
        .map((r) => `${r.emulator}: ${r.reason}`),
    ),
  ];
}

interface Mapping {
  /** Path inside the namespace. */
  target: string;
  /** Private directory on the host side, under the env's temp dir. */
  source: string;
}

const liveEnvs = new Set<Env>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const env of liveEnvs) env.teardownSync();
  });
}

export class Env {
  /** Host-side temp dir holding the private copies, logs and overlays. */
  readonly dir: string;
  readonly holderPid: number;
  /** The namespace, as /proc/<pid>/ns/mnt reads: "mnt:[<inode>]". */
  readonly mntNs: string;
  readonly moduleDir = MODULE_DIR;
  readonly emulator = QEMU;
  readonly cacheDir = CACHE_DIR;
  readonly timings: Timings = { libvirtdStarts: [] };
  readonly qemuDaemon: QemuDaemon;

  private readonly holder: ChildProcess;
  private readonly reaperPid: number | undefined;
  private readonly mappings: Mapping[];
  private readonly overlays: string[];
  private readonly daemonTimeout: number;
  private libvirtd: ChildProcess | null = null;
  private virtlogd: ChildProcess | null = null;
  private tornDown: Promise<void> | null = null;

  /** @internal use startEnv() */
  constructor(init: {
    dir: string;
    holder: ChildProcess;
    mntNs: string;
    reaperPid: number | undefined;
    mappings: Mapping[];
    overlays: string[];
    daemonTimeout: number;
    qemuDaemon: QemuDaemon;
  }) {
    this.qemuDaemon = init.qemuDaemon;
    this.dir = init.dir;
    this.holder = init.holder;
    this.holderPid = init.holder.pid as number;
    this.mntNs = init.mntNs;
    this.reaperPid = init.reaperPid;
    this.mappings = init.mappings;
    this.overlays = init.overlays;
    this.daemonTimeout = init.daemonTimeout;
  }

  private nsenter(): string[] {
    return ['nsenter', `--mount=/proc/${this.holderPid}/ns/mnt`, '--'];
  }

  /** Runs a command inside the namespace. Throws on non-zero exit unless allowFail. */
  exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.tornDown) return Promise.reject(new Error('env already torn down'));
    if (readNs(this.holderPid) !== this.mntNs) {
      return Promise.reject(new Error(`namespace holder ${this.holderPid} is gone`));
    }
    return run([...this.nsenter(), ...cmd], opts);
  }

  /** `virsh -c qemu:///system ...args` inside the namespace. */
  virsh(...args: string[]): Promise<ExecResult> {
    return this.exec([VIRSH, '-c', URI, ...args]);
  }

  /** Like virsh() but never throws on a non-zero exit. */
  virshAllowFail(...args: string[]): Promise<ExecResult> {
    return this.exec([VIRSH, '-c', URI, ...args], { allowFail: true });
  }

  /**
   * Maps a path inside the namespace to the private copy on the host side
   * (for the bind-mounted directories only; throws for anything else).
   */
  hostPath(p: string): string {
    const abs = path.posix.normalize(p);
    if (!path.posix.isAbsolute(abs)) throw new Error(`hostPath: not absolute: ${p}`);
    let best: Mapping | undefined;
    for (const m of this.mappings) {
      if (abs === m.target || abs.startsWith(m.target + '/')) {
        if (!best || m.target.length > best.target.length) best = m;
      }
    }
    if (!best) {
      const ovl = this.overlays.find((o) => abs === o || abs.startsWith(o + '/'));
      throw new Error(
        ovl
          ? `hostPath: ${p} lives in the private overlay over ${ovl}; use env.exec/writeFile/readFile`
          : `hostPath: ${p} is not private to the env (it is the host's own file)`,
      );
    }
    return path.join(best.source, abs.slice(best.target.length));
  }

  /** Writes a file inside the namespace (works for overlay-only paths too). */
  async writeFile(nsPath: string, content: string | Buffer, mode = 0o644): Promise<void> {
    await this.exec(['sh', '-c', 'umask 022; cat > "$1" && chmod "$2" "$1"', 'sh', nsPath, mode.toString(8)], {
      input: content,
    });
  }

  async readFile(nsPath: string): Promise<string> {
    return (await this.exec(['cat', '--', nsPath])).stdout;
  }

  async removeFile(nsPath: string): Promise<void> {
    await this.exec(['rm', '-f', '--', nsPath]);
  }

  /** Writes /etc/qemu-modwatch.conf inside the namespace (null removes it). */
  async setConfig(content: string | null): Promise<void> {
    if (content === null) await this.removeFile(CONFIG_FILE);
    else await this.writeFile(CONFIG_FILE, content, 0o644);
  }

  /**
   * Installs a hook file (mode 0755). kind 'qemu'/'daemon' with name null
   * writes the single file hooks/<kind>; with a name, hooks/<kind>.d/<name>.
   * Note libvirt's rule: the first hook of a driver needs a daemon restart.
   */
  installHook(kind: 'qemu' | 'daemon', name: string | null, hostFile: string): string {
    const hooks = this.hostPath('/etc/libvirt/hooks');
    const dest = name === null ? path.join(hooks, kind) : path.join(hooks, `${kind}.d`, name);
    fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o755 });
    fs.copyFileSync(hostFile, dest);
    fs.chmodSync(dest, 0o755);
    return dest;
  }

  // -- daemons --------------------------------------------------------------

  private logFile(name: string): string {
    return path.join(this.dir, 'logs', name);
  }

  private spawnDaemon(bin: string, logName: string, daemonArgs: string[] = []): ChildProcess {
    const log = this.logFile(logName);
    fs.appendFileSync(log, `\n===== [harness] ${new Date().toISOString()} starting ${bin} ${daemonArgs.join(' ')}\n`);
    const fd = fs.openSync(log, 'a');
    try {
      const [cmd = 'nsenter', ...args] = [...this.nsenter(), bin, ...daemonArgs];
      const child = spawn(cmd, args, {
        stdio: ['ignore', fd, fd],
        detached: true,
        // A clean environment like a service manager would give, so nothing of
        // the test runner (NODE_OPTIONS, TAP_*) reaches the daemon or hooks.
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', HOME: os.homedir() },
      });
      child.on('error', () => {});
      child.unref();
      return child;
    } finally {
      fs.closeSync(fd);
    }
  }

  private async waitSocket(child: ChildProcess, sock: string, what: string, log: string): Promise<void> {
    const host = this.hostPath(sock);
    const ok = await waitFor(() => {
      if (child.exitCode !== null || child.signalCode !== null) return true;
      try {
        return fs.statSync(host).isSocket();
      } catch {
        return false;
      }
    }, this.daemonTimeout);
    const died = child.exitCode !== null || child.signalCode !== null;
    if (!ok || died) {
      const why = died
        ? `${what} exited (${child.exitCode ?? child.signalCode}) before creating ${sock}`
        : `${what} did not create ${sock} within ${this.daemonTimeout} ms`;
      throw new Error(`${why}\n--- tail of ${path.basename(log)}:\n${tail(log)}`);
    }
  }

  /** The daemons a started world runs, sorted: the QEMU daemon, what runs beside it, virtlogd. */
  get daemons(): string[] {
    return [this.qemuDaemon, ...COMPANIONS[this.qemuDaemon], 'virtlogd'].sort();
  }

  /** PID of the running QEMU daemon (libvirtd or virtqemud), or null. */
  daemonPid(): number | null {
    const c = this.libvirtd;
    return c && c.exitCode === null && c.signalCode === null ? (c.pid ?? null) : null;
  }

  async startVirtlogd(): Promise<void> {
    if (this.virtlogd && this.virtlogd.exitCode === null && this.virtlogd.signalCode === null) return;
    for (const s of ['virtlogd-sock', 'virtlogd-admin-sock'])
      fs.rmSync(this.hostPath(`/run/libvirt/${s}`), { force: true });
    const t0 = performance.now();
    this.virtlogd = this.spawnDaemon(VIRTLOGD, 'virtlogd.out');
    await this.waitSocket(this.virtlogd, '/run/libvirt/virtlogd-sock', 'virtlogd', this.logFile('virtlogd.out'));
    this.timings.virtlogdStart = since(t0);
  }

  /**
   * Starts the QEMU daemon (and virtlogd, and for virtqemud virtnetworkd,
   * if needed); resolves once it answers `virsh uri`. Returns the time that
   * took, ms.
   */
  async startDaemon(): Promise<number> {
    if (this.tornDown) throw new Error('env already torn down');
    for (const c of COMPANIONS[this.qemuDaemon]) if (!this.modularPid(c)) await this.startModular(c);
    return this.spawnQemuDaemon([]);
  }

  private async spawnQemuDaemon(args: string[]): Promise<number> {
    if (this.tornDown) throw new Error('env already torn down');
    const name = this.qemuDaemon;
    if (this.daemonPid()) throw new Error(`${name} already running`);
    await this.startVirtlogd();
    const sock = name === 'libvirtd' ? 'libvirt' : name;
    for (const s of ['sock', 'sock-ro', 'admin-sock'])
      fs.rmSync(this.hostPath(`/run/libvirt/${sock}-${s}`), { force: true });
    const log = this.logFile(`${name}.out`);
    const t0 = performance.now();
    const child = this.spawnDaemon(`/usr/sbin/${name}`, `${name}.out`, args);
    this.libvirtd = child;
    await this.waitSocket(child, `/run/libvirt/${sock}-sock`, name, log);
    // The socket exists before the drivers are initialised; a first call
    // returns once they are (or fails if the daemon gives up).
    const r = await this.exec([VIRSH, '-c', URI, 'uri'], { allowFail: true, timeout: this.daemonTimeout });
    if (r.code !== 0 || !this.daemonPid()) {
      throw new Error(`${name} does not answer: ${r.stderr.trim()}\n--- tail of ${name}.out:\n${tail(log)}`);
    }
    const ms = since(t0);
    this.timings.libvirtdStarts.push(ms);
    return ms;
  }

  private readonly modular = new Map<string, ChildProcess>();

  /**
   * Starts one of libvirt's modular daemons, /usr/sbin/<name> (virtqemud,
   * virtnetworkd, ...; virtlogd first, nothing else), as a service manager
   * would, with `args` (--timeout N for the idle exit); resolves once its
   * socket exists, and for the QEMU daemon once it answers. Returns its PID.
   */
  async startModular(name: string, args: string[] = []): Promise<number> {
    if (name === this.qemuDaemon) {
      await this.spawnQemuDaemon(args);
      return this.daemonPid()!;
    }
    if (this.tornDown) throw new Error('env already torn down');
    if (this.modularPid(name)) throw new Error(`${name} already running`);
    await this.startVirtlogd();
    for (const s of ['sock', 'sock-ro', 'admin-sock'])
      fs.rmSync(this.hostPath(`/run/libvirt/${name}-${s}`), { force: true });
    const child = this.spawnDaemon(`/usr/sbin/${name}`, `${name}.out`, args);
    this.modular.set(name, child);
    await this.waitSocket(child, `/run/libvirt/${name}-sock`, name, this.logFile(`${name}.out`));
    return child.pid!;
  }

  /** PID of a running modular daemon, or null (not started, stopped, or exited by itself: the idle timeout). */
  modularPid(name: string): number | null {
    if (name === this.qemuDaemon) return this.daemonPid();
    const c = this.modular.get(name);
    return c && c.exitCode === null && c.signalCode === null ? (c.pid ?? null) : null;
  }

  /** Resolves when a modular daemon has exited by itself (its idle timeout), or false after timeoutMs. */
  async modularExited(name: string, timeoutMs: number): Promise<boolean> {
    return waitFor(() => this.modularPid(name) === null, timeoutMs, 100);
  }

  /** SIGTERM to the QEMU daemon by PID, wait (SIGKILL after `timeoutMs`). Running guests keep running. */
  async stopDaemon(timeoutMs = 15_000): Promise<void> {
    const child = this.libvirtd;
    const pid = this.daemonPid();
    if (!child || !pid) return;
    const gone = () => child.exitCode !== null || child.signalCode !== null;
    kill(pid, 'SIGTERM');
    if (!(await waitFor(gone, timeoutMs))) {
      kill(pid, 'SIGKILL');
      await waitFor(gone, 5_000);
    }
    this.libvirtd = null;
  }

  /** stopDaemon() then startDaemon(); the same hooks stay installed. Returns the start time, ms. */
  async restartDaemon(): Promise<number> {
    await this.stopDaemon();
    return this.startDaemon();
  }

  /**
   * The debug log of hooks and capabilities (see LIBVIRTD_CONF) of the QEMU
   * daemon, or of another modular daemon by name.
   */
  daemonLog(name: string = this.qemuDaemon): string {
    try {
      return fs.readFileSync(this.hostPath(debugLogOf(name, this.qemuDaemon)), 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * Every re-probe libvirt decided on, with its own logged reason
   * (virQEMUCapsIsValid's debug lines, in order). A probe of an emulator
   * that had no cache entry has no reason and is not listed.
   */
  reprobes(): Reprobe[] {
    return parseReprobes(this.daemonLog());
  }

  /** stdout/stderr of the QEMU daemon (all starts, separated by "=====" lines). */
  daemonOutput(): string {
    try {
      return fs.readFileSync(this.logFile(`${this.qemuDaemon}.out`), 'utf8');
    } catch {
      return '';
    }
  }

  // -- domains and capabilities --------------------------------------------

  /** Defines the tiny TCG guest; returns the wall-clock time of `virsh define`. */
  async defineDomain(name: string, opts: DomainOptions = {}): Promise<number> {
    const xmlFile = path.join(this.dir, `domain-${name}.xml`);
    fs.writeFileSync(xmlFile, domainXml(name, opts));
    const { ms } = await timed(() => this.virsh('define', xmlFile));
    return ms;
  }

  async domstate(name: string): Promise<string> {
    return (await this.virsh('domstate', name)).stdout.trim();
  }

  /** Raw `virsh domcapabilities` XML for emulator (default /usr/bin/qemu-system-x86_64). */
  async domcapabilities(emulator: string = QEMU): Promise<string> {
    return (await this.virsh(...domcapsArgs(emulator))).stdout;
  }

  /** The video model enum values libvirt reports for emulator. */
  async domcapsVideoModels(emulator: string = QEMU): Promise<string[]> {
    return parseVideoModels(await this.domcapabilities(emulator));
  }

  /** Files in the private capabilities cache dir, sorted by name. */
  cacheFiles(): CacheFile[] {
    return listCacheFiles(this.hostPath(CACHE_DIR));
  }

  /** Names of the running (or paused) domains, via virsh list. */
  async runningDomains(): Promise<string[]> {
    const r = await this.virsh('list', '--name');
    return r.stdout
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean);
  }

  /**
   * Saves the exact atime/mtime of an in-namespace path (e.g. the module dir)
   * and returns a function restoring it (`touch -r`, nanosecond exact).
   */
  saveTimes(nsPath: string): () => void {
    const host = this.hostPath(nsPath);
    const ref = path.join(this.dir, `times-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    fs.writeFileSync(ref, '');
    const r = spawnSync('touch', ['-r', host, ref]);
    if (r.status !== 0) throw new Error(`touch -r ${host} failed`);
    return () => {
      const s = spawnSync('touch', ['-r', ref, host]);
      if (s.status !== 0) throw new Error(`touch -r ${ref} ${host} failed`);
    };
  }

  // -- teardown -------------------------------------------------------------

  /** PIDs of QEMU processes of this env, from the pid files under /run/libvirt/qemu. */
  qemuPids(): number[] {
    const dir = this.hostPath('/run/libvirt/qemu');
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir).filter((n) => n.endsWith('.pid') && n !== 'driver.pid');
    } catch {
      return [];
    }
    const pids: number[] = [];
    for (const n of names) {
      const pid = Number(fs.readFileSync(path.join(dir, n), 'utf8').trim());
      // Only our own: same namespace (a stale pid file may name a reused PID).
      if (pid > 1 && readNs(pid) === this.mntNs && isAlive(pid)) pids.push(pid);
    }
    return pids;
  }

  /** Every process in the env's namespace except the holder. */
  processes(): { pid: number; comm: string }[] {
    if (readNs(this.holderPid) !== this.mntNs) return [];
    return pidsInNamespace(this.mntNs, [this.holderPid]).map((pid) => ({ pid, comm: comm(pid) ?? '?' }));
  }

  /**
   * Destroys all domains, stops libvirtd, virtlogd and any QEMU (by PID), kills
   * everything else left in the namespace and the holder, removes the temp
   * dir. Idempotent; never throws (returns what it could not clean).
   */
  teardown(): Promise<void> {
    if (!this.tornDown) this.tornDown = this.doTeardown();
    return this.tornDown;
  }

  private async doTeardown(): Promise<void> {
    const problems: string[] = [];
    const holderOk = () => readNs(this.holderPid) === this.mntNs;
    if (this.daemonPid() && holderOk()) {
      try {
        const doms = (
          await run([...this.nsenter(), VIRSH, '-c', URI, 'list', '--name'], { allowFail: true, timeout: 15_000 })
        ).stdout
          .split('\n')
          .map((s) => s.trim())
          .filter(Boolean);
        for (const d of doms) {
          await run([...this.nsenter(), VIRSH, '-c', URI, 'destroy', d], { allowFail: true, timeout: 15_000 });
        }
      } catch (e) {
        problems.push(`destroying domains: ${(e as Error).message}`);
      }
    }
    await this.stopDaemon(10_000).catch((e: Error) => problems.push(`stopping ${this.qemuDaemon}: ${e.message}`));
    if (holderOk()) {
      for (const pid of this.qemuPids()) kill(pid, 'SIGTERM');
      for (const name of this.modular.keys()) {
        const pid = this.modularPid(name);
        if (pid) kill(pid, 'SIGTERM');
      }
      const v = this.virtlogd;
      if (v?.pid && v.exitCode === null && v.signalCode === null) kill(v.pid, 'SIGTERM');
      await waitFor(() => this.processes().length === 0, 3_000);
      // Whatever is still there (hooks, stray execs, stuck QEMU): SIGKILL, while
      // the holder keeps the namespace (and its inode number) alive.
      for (let i = 0; i < 20 && holderOk(); i++) {
        const left = this.processes();
        if (left.length === 0) break;
        for (const p of left) kill(p.pid, 'SIGKILL');
        await sleep(100);
      }
      const left = this.processes();
      if (left.length) problems.push(`processes left: ${left.map((p) => `${p.pid} ${p.comm}`).join(', ')}`);
    }
    kill(this.holderPid, 'SIGKILL');
    await waitFor(
      () => this.holder.exitCode !== null || this.holder.signalCode !== null || !isAlive(this.holderPid),
      5_000,
    );
    if (this.reaperPid) kill(this.reaperPid, 'SIGKILL');
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch (e) {
      problems.push(`removing ${this.dir}: ${(e as Error).message}`);
    }
    liveEnvs.delete(this);
    if (problems.length) process.emitWarning(`e2e teardown: ${problems.join('; ')}`);
  }

  /** Synchronous last-resort clean-up (process 'exit'): SIGKILL everything, remove the dir. */
  teardownSync(): void {
    if (this.tornDown) return;
    this.tornDown = Promise.resolve();
    for (let i = 0; i < 10 && readNs(this.holderPid) === this.mntNs; i++) {
      const left = pidsInNamespace(this.mntNs, [this.holderPid]);
      if (left.length === 0) break;
      for (const pid of left) kill(pid, 'SIGKILL');
      spawnSync('sleep', ['0.1']);
    }
    kill(this.holderPid, 'SIGKILL');
    if (this.reaperPid) kill(this.reaperPid, 'SIGKILL');
    try {
      fs.rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* the reaper is gone; nothing more to do */
    }
    liveEnvs.delete(this);
  }
}

// ---------------------------------------------------------------------------
// startEnv

/** Directories made private; all bind mounts of fresh dirs except as noted. */
const PRIVATE_DIRS: { target: string; key: string }[] = [
  { target: '/etc/libvirt', key: 'etc-libvirt' },
  { target: '/var/cache/libvirt', key: 'var-cache-libvirt' },
  { target: '/var/lib/libvirt', key: 'var-lib-libvirt' },
  { target: '/run/libvirt', key: 'run-libvirt' },
  { target: '/var/log/libvirt', key: 'var-log-libvirt' },
  { target: '/var/lib/qemu-modwatch', key: 'var-lib-qemu-modwatch' },
  { target: MODULE_DIR, key: 'qemu-modules' },
];

function existsDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function nearestExistingAncestor(p: string): string {
  let cur = path.posix.dirname(p);
  while (cur !== '/' && !existsDir(cur)) cur = path.posix.dirname(cur);
  return cur;
}

/**
 * The shell lines that give the namespace a /dev of its own without
 * /dev/kvm: with it, libvirt probes with KVM and re-probes whenever the host
 * cpuid it reads changes (seen at random on nested VMs); a file or /dev/null
 * bound over it is worse (libvirt re-probes on every lookup). A tmpfs with
 * the few nodes libvirtd and a TCG guest use, bound from the host's /dev
 * through stage (a directory of the env's temp dir), a devpts instance of
 * its own for the guests' pty consoles, and a tmpfs /dev/shm.
 */
export function privateDevLines(stage: string): string[] {
  fs.mkdirSync(stage);
  const lines = [`mount --rbind /dev ${q(stage)}`, 'mount -t tmpfs -o mode=0755,nosuid tmpfs /dev'];
  for (const n of DEV_NODES) lines.push(`touch /dev/${n}`, `mount --bind ${q(`${stage}/${n}`)} /dev/${n}`);
  lines.push(
    'mkdir /dev/pts /dev/shm',
    'mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts',
    'ln -s pts/ptmx /dev/ptmx',
    'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm',
    'ln -s /proc/self/fd /dev/fd',
    'ln -s /proc/self/fd/0 /dev/stdin',
    'ln -s /proc/self/fd/1 /dev/stdout',
    'ln -s /proc/self/fd/2 /dev/stderr',
    `umount -l ${q(stage)}`,
  );
  return lines;
}

const DEV_NODES = ['null', 'zero', 'full', 'random', 'urandom', 'tty'];

/** Starts a private libvirt environment. Always pair with teardown() (see useEnv). */
export async function startEnv(opts: EnvOptions = {}): Promise<Env> {
  const can = canRun();
  if (!can.ok) throw new Error(`e2e environment cannot run: ${can.reason}`);
  const extraDirs = (opts.privateDirs ?? []).map((p) => {
    const target = path.posix.normalize(p).replace(/\/+$/, '');
    if (!path.posix.isAbsolute(target) || target === '/')
      throw new Error(`privateDirs: not an absolute directory below /: ${p}`);
    return { target, key: `extra${target.replace(/[^A-Za-z0-9]+/g, '-')}` };
  });
  const extraOverlays = (opts.overlayDirs ?? []).map((o) => {
    const abs = path.posix.normalize(o).replace(/\/+$/, '');
    if (!path.posix.isAbsolute(abs) || abs === '' || !existsDir(abs)) {
      throw new Error(`overlayDirs: ${o} is not an existing absolute directory below /`);
    }
    return abs;
  });
  installExitHook();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${opts.label ?? 'qemu-modwatch-e2e'}-`));
  fs.mkdirSync(path.join(dir, 'logs'));

  // Private directories, seeded.
  const mappings: Mapping[] = [...PRIVATE_DIRS, ...extraDirs].map(({ target, key }) => ({
    target,
    source: path.join(dir, 'mnt', key),
  }));
  for (const m of mappings) fs.mkdirSync(m.source, { recursive: true, mode: 0o755 });
  const etcLibvirt = path.join(dir, 'mnt', 'etc-libvirt');
  if (existsDir('/etc/libvirt')) {
    for (const n of fs.readdirSync('/etc/libvirt')) {
      const src = path.join('/etc/libvirt', n);
      // Only the daemons' own *.conf files: never the host's hooks or its
      // domain/network definitions (which would autostart here).
      if (n.endsWith('.conf') && fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(etcLibvirt, n));
    }
  }
  fs.writeFileSync(path.join(etcLibvirt, 'qemu.conf'), QEMU_CONF + (opts.qemuConf ? opts.qemuConf + '\n' : ''));
  fs.writeFileSync(path.join(etcLibvirt, 'libvirtd.conf'), opts.libvirtdConf ?? LIBVIRTD_CONF);
  const qemuDaemon = opts.daemon ?? 'libvirtd';
  if (qemuDaemon !== 'libvirtd') {
    // The modular daemons read their own files; each one's debug log is its own.
    const conf = opts.libvirtdConf ?? LIBVIRTD_CONF;
    fs.writeFileSync(path.join(etcLibvirt, `${qemuDaemon}.conf`), conf);
    for (const d of COMPANIONS[qemuDaemon])
      fs.writeFileSync(
        path.join(etcLibvirt, `${d}.conf`),
        conf.replaceAll(debugLogOf(qemuDaemon, qemuDaemon), debugLogOf(d, qemuDaemon)),
      );
    // No firewall tool in the world: the network daemon would refuse to start.
    fs.appendFileSync(path.join(etcLibvirt, 'network.conf'), 'firewall_backend = "none"\n');
  }
  const modSrc = path.join(dir, 'mnt', 'qemu-modules');

  // Which overlays are needed: /etc always (config file, passwd); the nearest
  // existing ancestor of every private dir missing on the host.
  const wanted = new Set<string>(['/etc']);
  for (const o of extraOverlays) wanted.add(o);
  for (const m of mappings) if (!existsDir(m.target)) wanted.add(nearestExistingAncestor(m.target));
  if (wanted.has('/')) throw new Error('refusing to overlay / itself');
  const overlays = [...wanted].filter((o) => ![...wanted].some((p) => p !== o && o.startsWith(p + '/'))).sort();

  // The temp dir must stay the host's own directory inside the namespace.
  for (const p of [...overlays, ...mappings.map((m) => m.target)]) {
    if (dir === p || dir.startsWith(p + '/')) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`the temp dir ${dir} is under ${p}, which the env makes private; set TMPDIR elsewhere`);
    }
  }

  const script: string[] = ['set -eu'];
  overlays.forEach((o, i) => {
    const base = path.join(dir, 'ovl', String(i));
    fs.mkdirSync(path.join(base, 'upper'), { recursive: true });
    fs.mkdirSync(path.join(base, 'work'), { recursive: true });
    const layer = opts.layers?.[o];
    const lower = Array.isArray(layer) ? layer.join(':') : layer;
    script.push(
      ...overlayMountLines(o, {
        upper: path.join(base, 'upper'),
        work: path.join(base, 'work'),
        stage: path.join(base, 'stage'),
        ...(lower ? { lower } : {}),
      }),
    );
  });
  // The module dir's copy is taken from inside, so that it holds the
  // modules of the QEMU the layers install (cp -a keeps the mtimes).
  script.push(`cp -a -- ${q(`${MODULE_DIR}/.`)} ${q(modSrc)}`, `touch -r ${q(MODULE_DIR)} ${q(modSrc)}`);
  for (const m of mappings) {
    // A mount point is made only where it lands in an overlay's upper dir
    // (its nearest existing ancestor is overlaid, see above): `mkdir -p` on a
    // directory of the host would outlive the namespace.
    script.push(
      existsDir(m.target)
        ? `[ -d ${q(m.target)} ] || { echo ` +
            `${q(`${m.target} vanished from the host while the env was set up`)} >&2; exit 1; }`
        : `mkdir -p ${q(m.target)}`,
      `mount --bind ${q(m.source)} ${q(m.target)}`,
    );
  }
  script.push(...privateDevLines(path.join(dir, 'dev-stage')));
  // Debian's libvirtd resolves its built-in default user at start even when
  // qemu.conf says root: make it exist, privately.
  script.push(
    `getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >> /etc/group`,
    `getent passwd libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:64055:Libvirt ` +
      `Qemu:/var/lib/libvirt:/usr/sbin/nologin' >> /etc/passwd`,
    `rm -f ${q(CONFIG_FILE)}`,
  );

  const holder = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sleep', 'infinity'], {
    stdio: 'ignore',
    detached: true,
  });
  holder.on('error', () => {});
  holder.unref();
  const holderPid = holder.pid;
  if (!holderPid) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error('could not start the namespace holder');
  }
  const hostNs = readNs(process.pid);
  let mntNs: string | null = null;
  await waitFor(
    () => {
      const ns = readNs(holderPid);
      if (ns && ns !== hostNs && comm(holderPid) === 'sleep') mntNs = ns;
      return mntNs !== null || holder.exitCode !== null;
    },
    10_000,
    10,
  );
  if (!mntNs) {
    kill(holderPid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error('the namespace holder did not enter a new mount namespace');
  }

  const reaperFile = path.join(dir, 'reaper.sh');
  fs.writeFileSync(reaperFile, REAPER);
  const reaper = spawn('bash', [reaperFile, String(process.pid), mntNs, String(holderPid), dir], {
    stdio: 'ignore',
    detached: true,
  });
  reaper.on('error', () => {});
  reaper.unref();

  const env = new Env({
    dir,
    holder,
    mntNs,
    reaperPid: reaper.pid,
    mappings,
    overlays,
    daemonTimeout: opts.daemonTimeout ?? 30_000,
    qemuDaemon,
  });
  liveEnvs.add(env);
  try {
    fs.writeFileSync(path.join(dir, 'mounts.sh'), script.join('\n') + '\n');
    await env.exec(['bash', path.join(dir, 'mounts.sh')], { timeout: 30_000 });
    const h = opts.hooks ?? {};
    if (h.qemu) env.installHook('qemu', null, h.qemu);
    if (h.daemon) env.installHook('daemon', null, h.daemon);
    for (const [n, f] of Object.entries(h.qemuD ?? {})) env.installHook('qemu', n, f);
    for (const [n, f] of Object.entries(h.daemonD ?? {})) env.installHook('daemon', n, f);
    if (opts.config !== undefined) await env.setConfig(opts.config);
    if (opts.startDaemon !== false) await env.startDaemon();
  } catch (e) {
    await env.teardown();
    throw e;
  }
  return env;
}

/** startEnv() with teardown registered on the test (runs even when it fails). */
export async function useEnv(t: TestLike, opts: EnvOptions = {}): Promise<Env> {
  let env: Env | undefined;
  t.teardown(() => env?.teardown());
  env = await startEnv(opts);
  return env;
}

/**
 * Wall-clock time from `virsh start <name>` to the domain being `running`
 * (virsh start returns once QEMU runs the guest; domstate confirms), ms.
 */
export async function timeDomainStart(env: Env, name: string, timeoutMs = 60_000): Promise<number> {
  const t0 = performance.now();
  await env.virsh('start', name);
  const ok = await waitFor(async () => (await env.domstate(name)) === 'running', timeoutMs, 20);
  if (!ok) throw new Error(`domain ${name} not running ${timeoutMs} ms after virsh start`);
  return since(t0);
}
