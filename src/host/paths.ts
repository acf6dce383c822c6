import * as fs from 'node:fs';
import * as path from 'node:path';
import { UNRESOLVABLE } from '../os/file-info';

// Every system path the tool touches goes through here, so that --root (a
// sysroot for tests, or a mounted image) applies to all of them at once.
// Under a root, paths resolve as if the root were `/`: an image's absolute
// symlinks (`/var/run -> /run`, `/lib -> usr/lib`, a link to `/etc/...`)
// and `..` lead to the image's own files, never to this machine's.

export const CONFIG_FILE = '/etc/qemu-modwatch.conf';
export const SYSTEM_STATE_DIR = '/var/lib/qemu-modwatch';
export const SYSTEM_CACHE_DIR = '/var/cache/libvirt/qemu/capabilities';
/** Where the system daemon keeps a `<domain>.pid` per running guest. */
export const SYSTEM_PID_DIR = '/run/libvirt/qemu';
export const PROC_DIR = '/proc';
/** Where libvirt looks for hooks: <driver> and, since 6.5.0, <driver>.d/. */
export const HOOKS_DIR = '/etc/libvirt/hooks';
/** What `install --chain` appends to the name of an admin's single-file hook it moves aside to run it first. */
export const CHAINED_SUFFIX = '.before-qemu-modwatch';
/**
 * The copies of a hook file package managers and editors leave beside it
 * (the dispatchers' own list, hooks/qemu.d/50-qemu-modwatch: such a copy of
 * ours exits at once). libvirt runs them all the same.
 */
export const HOOK_BACKUP_RE = /(\.dpkg-[^/]*|\.rpmnew|\.rpmsave|\.rpmorig|\.ucf-[^/]*|~)$/;
/**
 * The line every dispatcher and chain wrapper of ours carries, as its second
 * line, and nothing else does: what tells our hooks from an admin's that
 * merely mentions qemu-modwatch (one that runs `qemu-modwatch refresh`).
 * build/deb/hooks-present.sh has the same line (a test keeps them equal).
 */
export const HOOK_MARKER = '# qemu-modwatch hook: this line marks a hook file as installed by qemu-modwatch';

/** Module directories distros compile into QEMU (CONFIG_QEMU_MODDIR). */
export const DEFAULT_MODULE_DIRS = ['/usr/lib64/qemu', '/usr/lib/qemu', '/usr/local/lib/qemu', '/usr/local/lib64/qemu'];
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
  /**
   * Maps a system path to where it is on this machine (under --root), every
   * symlink on the way, the last component's too, resolved inside the root:
   * for stat, open and read.
   */
  host(p: string): string;
  /**
   * Like host(), but the last component is left as it is: for lstat,
   * readlink, unlink, rename and placing a file, which act on a link itself.
   */
  hostNoFollow(p: string): string;
  /**
   * The inverse of host(), for paths the kernel reports (a /proc link of a
   * process started from inside the sysroot names the file on this machine).
   */
  system(hostPath: string): string;
}

export function makePaths(opts: PathsOptions): Paths {
  const root = path.resolve(opts.root ?? '/');
  const host = (p: string) => (root === '/' ? p : resolveInRoot(root, p, true));
  const hostNoFollow = (p: string) => (root === '/' ? p : resolveInRoot(root, p, false));
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
    hostNoFollow,
    system,
  };
}

/** Linux's limit on symlinks followed in one lookup (MAXSYMLINKS). */
const MAX_LINKS = 40;

/**
 * Where system path p is on this machine when `root` is the system's `/`:
 * each component is looked up under the root; a symlink's target is read
 * and followed from the root (an absolute one) or from its directory (a
 * relative one); `..` never climbs above the root. What does not exist is
 * appended as it is: it does not exist under the root either. followLast
 * false leaves a symlink in the last component unresolved.
 */
export function resolveInRoot(root: string, p: string, followLast: boolean): string {
  const done: string[] = [];
  const todo = p
    .split('/')
    .filter((c) => c !== '' && c !== '.')
    .reverse();
  let links = 0;
  while (todo.length) {
    const name = todo.pop()!;
    if (name === '..') {
      done.pop();
      continue;
    }
    const here = `${root}/${[...done, name].join('/')}`;
    const last = todo.length === 0;
    let target: string | null = null;
    if (!last || followLast) {
      try {
        target = fs.readlinkSync(here);
      } catch {
        target = null; // not a symlink, or not there: taken as it is
      }
    }
    if (target === null) {
      done.push(name);
      continue;
    }
    if (++links > MAX_LINKS) return `${here}${UNRESOLVABLE}`;
    if (target.startsWith('/')) done.length = 0;
    todo.push(
      ...target
        .split('/')
        .filter((c) => c !== '' && c !== '.')
        .reverse(),
    );
  }
  return done.length ? `${root}/${done.join('/')}` : root;
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
    /** The last run of our daemon hook in each QEMU daemon (store/daemon-hooks.ts). */
    daemonHook: (daemon: string) => path.join(dir, `daemon-hook.${daemon}.json`),
    /** A time before our hooks first arrived (store/hooks-installed-after.ts; the packages write it too). */
    hooksInstalledAfter: path.join(dir, 'hooks-installed-after'),
    /** What install placed (store/install-manifest.ts). */
    installManifest: path.join(dir, 'install-manifest.json'),
  };
}
