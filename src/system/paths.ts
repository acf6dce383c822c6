import * as path from 'node:path';

// Every system path the tool touches goes through here, so that --root (a
// sysroot for tests, or a mounted image) applies to all of them at once.

export const CONFIG_FILE = '/etc/qemu-modwatch.conf';
export const SYSTEM_STATE_DIR = '/var/lib/qemu-modwatch';
export const SYSTEM_CACHE_DIR = '/var/cache/libvirt/qemu/capabilities';
/** Where the system daemon keeps a `<domain>.pid` per running guest. */
export const SYSTEM_PID_DIR = '/run/libvirt/qemu';
export const PROC_DIR = '/proc';

/** Module directories distros compile into QEMU (CONFIG_QEMU_MODDIR). */
export const DEFAULT_MODULE_DIRS = [
  '/usr/lib64/qemu',
  '/usr/lib/qemu',
  '/usr/local/lib/qemu',
  '/usr/local/lib64/qemu',
];
/** Parents whose `<multiarch>/qemu` children are module directories (Debian/Ubuntu). */
export const MULTIARCH_PARENTS = ['/usr/lib', '/usr/local/lib'];
/** Debian's module-upgrade copies: /var/run/qemu/<package version>/. */
export const UPGRADE_PARENT = '/var/run/qemu';
export const EMULATOR_DIRS = ['/usr/bin', '/usr/local/bin'];
export const EXTRA_EMULATORS = ['/usr/libexec/qemu-kvm'];

/** A multiarch tuple as Debian names them: x86_64-linux-gnu, arm-linux-gnueabihf, ... */
export const MULTIARCH_RE = /^[a-z0-9_]+-linux-[a-z0-9_]+$/;

export interface PathsOptions {
  root?: string;
  config?: string;
  uid: number;
  env: NodeJS.ProcessEnv;
}

export interface Paths {
  /** The sysroot, '/' on a live system. */
  root: string;
  /** Session mode: an unprivileged user's own libvirt daemon. */
  session: boolean;
  /** Config file on this machine: --config as given, else CONFIG_FILE under the root. */
  configFile: string;
  stateDir: string;
  cacheDir: string;
  /** libvirt's pid files of running guests. */
  pidDir: string;
  /** Maps a system path to where it is on this machine (under --root). */
  host(p: string): string;
  /**
   * The inverse of host(), for paths the kernel reports (a /proc link of a
   * process started from inside the sysroot names the file on this machine).
   */
  system(hostPath: string): string;
}

export function makePaths(opts: PathsOptions): Paths {
  const root = path.resolve(opts.root ?? '/');
  const host = (p: string) => (root === '/' ? p : path.join(root, p));
  const session = opts.uid !== 0;
  const home = opts.env.HOME || '/';
  const stateDir = session
    ? path.join(opts.env.XDG_STATE_HOME || path.join(home, '.local/state'), 'qemu-modwatch')
    : SYSTEM_STATE_DIR;
  const cacheDir = session
    ? path.join(opts.env.XDG_CACHE_HOME || path.join(home, '.cache'), 'libvirt/qemu/cache/capabilities')
    : SYSTEM_CACHE_DIR;
  // libvirt's session daemon keeps its run state under $XDG_RUNTIME_DIR/libvirt.
  const runtime = opts.env.XDG_RUNTIME_DIR || `/run/user/${opts.uid}`;
  const pidDir = session ? path.join(runtime, 'libvirt/qemu/run') : SYSTEM_PID_DIR;
  const system = (h: string) => (root !== '/' && h.startsWith(root + '/') ? h.slice(root.length) : h);
  return {
    root,
    session,
    configFile: opts.config ? path.resolve(opts.config) : host(CONFIG_FILE),
    stateDir,
    cacheDir,
    pidDir,
    host,
    system,
  };
}

export function stateFiles(paths: Paths) {
  const dir = paths.stateDir;
  return {
    state: path.join(dir, 'state.json'),
    /** Time marker for the dispatcher's fast path ("mark", not "stamp"). */
    mark: path.join(dir, 'mark'),
    /** What the dispatcher's fast path watches. */
    watch: path.join(dir, 'watch'),
    lock: path.join(dir, 'lock'),
    /** The cache entries' headers, by stat data (cache-memo.ts). */
    cacheMemo: path.join(dir, 'cache-headers.json'),
  };
}
