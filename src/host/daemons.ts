import * as fs from 'node:fs';
import { QEMU_DAEMONS } from '../core/daemons';
import type { HookFilesFacts, ReloadFacts, RunningDaemon, TimeBounds } from '../core/hooks-loaded';
import { listDir, readHead } from '../os/file-info';
import { CHAINED_SUFFIX, HOOK_BACKUP_RE, HOOK_MARKER, HOOKS_DIR, MULTIARCH_RE, PROC_DIR, type Paths } from './paths';
import { isProcfs } from './processes';

// observe: the running libvirt daemons that hold QEMU capabilities (root's),
// when each started, and when the hook files libvirt reads were installed:
// what core/hooks-loaded.ts judges. Under --root, the root's /proc and /etc.

/** Where `install --chain` moved an admin's single-file hook (install.ts): it was there before ours. */
const CHAINED_QEMU_HOOK = `${HOOKS_DIR}/qemu${CHAINED_SUFFIX}`;
/** The kernel's clock ticks per second in /proc (USER_HZ): 100 on every architecture Linux distros ship. */
const USER_HZ = 100;

export function runningQemuDaemons(paths: Paths): RunningDaemon[] {
  let names: string[];
  try {
    names = fs.readdirSync(paths.host(PROC_DIR));
  } catch {
    return [];
  }
  const boot = bootBounds(paths);
  // A daemon in a container reads other hook files than ours; one in a
  // sandbox of ours (the textfile service's own mount namespace) reads the
  // same. What tells them apart is the hooks directory it sees. Under
  // --root, /proc/PID/root would lead out of the root: an image's or a
  // test's /proc is the root's, and a real procfs there is judged by no
  // hooks at all (daemonsOutsideRoot).
  const ours = paths.root === '/' ? fileId(HOOKS_DIR) : null;
  const out: RunningDaemon[] = [];
  for (const name of names) {
    if (!/^[1-9][0-9]*$/.test(name)) continue;
    const dir = paths.host(`${PROC_DIR}/${name}`);
    const stat = readSmall(`${dir}/stat`);
    // comm is in parentheses and may hold anything, parentheses too: the fields follow the last ')'.
    const close = stat?.lastIndexOf(')') ?? -1;
    if (!stat || close < 0) continue;
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    if (!QEMU_DAEMONS.includes(comm)) continue;
    // A user's session daemon runs hooks too, but not the system's state: only root's count.
    if (uidOf(dir) !== 0) continue;
    if (ours !== null && fileId(`${dir}/root${HOOKS_DIR}`) !== ours) continue;
    const ticks = Number(stat.slice(close + 2).split(' ')[19]);
    const started: TimeBounds | null =
      boot && Number.isFinite(ticks)
        ? {
            earliestMs: boot.earliestMs + (ticks * 1000) / USER_HZ,
            latestMs: boot.latestMs + ((ticks + 1) * 1000) / USER_HZ,
          }
        : null;
    out.push({ name: comm, pid: Number(name), started, unit: unitOf(readSmall(`${dir}/cgroup`)) });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/** A directory's device and inode, or null when it cannot be seen. */
function fileId(p: string): string | null {
  try {
    const st = fs.statSync(p, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/**
 * When the system booted, in epoch ms: now less /proc/uptime (centiseconds)
 * when it can be read, else /proc/stat's btime (whole seconds).
 */
function bootBounds(paths: Paths): TimeBounds | null {
  const now = Date.now();
  const up = /^(\d+)\.(\d\d)\s/.exec(readSmall(paths.host(`${PROC_DIR}/uptime`)) ?? '');
  if (up) {
    const upMs = Number(up[1]) * 1000 + Number(up[2]) * 10;
    return { earliestMs: now - upMs - 10, latestMs: now - upMs + 10 };
  }
  const btime = /^btime (\d+)$/m.exec(readSmall(paths.host(`${PROC_DIR}/stat`), 64 * 1024) ?? '');
  if (!btime) return null;
  return { earliestMs: Number(btime[1]) * 1000, latestMs: Number(btime[1]) * 1000 + 1000 };
}

/** The systemd service a process runs in: the last component of its cgroup path, if a .service. */
function unitOf(cgroup: string | null): string | null {
  for (const line of (cgroup ?? '').split('\n')) {
    const m = /^0::.*\/([^/]+\.service)$/.exec(line) ?? /^\d+:name=systemd:.*\/([^/]+\.service)$/.exec(line);
    if (m?.[1]) return m[1];
  }
  return null;
}

/**
 * When our qemu dispatcher was placed by, at the latest, and the oldest
 * other hook of the qemu driver (core/hooks-loaded.ts says why these):
 * ctimes, as only a ctime cannot be set back. `chainedBeforeMs` is the
 * ctime install --chain saw of the admin's hook before it moved it aside
 * (its manifest), as the move changed it. The record of when they were
 * installed is the caller's (store/hooks-installed-after.ts).
 */
export function hookFilesFacts(paths: Paths, chainedBeforeMs: number | null): Omit<HookFilesFacts, 'installedAfterMs'> {
  let qemuPlacedByMs: number | null = null;
  let otherQemuHookMs: number | null = null;
  const earliest = (a: number | null, b: number) => Math.min(a ?? b, b);
  for (const file of [`${HOOKS_DIR}/qemu`, ...listNames(paths, `${HOOKS_DIR}/qemu.d`)]) {
    const st = executableFile(paths.host(file));
    if (!st) continue;
    // A package manager's copy of ours (an upgrade's .dpkg-old, an erase's .rpmsave) is not ours as installed;
    // to libvirt it is a hook like any other.
    if (isOurHook(paths, file)) qemuPlacedByMs = earliest(qemuPlacedByMs, st.ctimeMs);
    else otherQemuHookMs = earliest(otherQemuHookMs, st.ctimeMs);
  }
  // It was at hooks/qemu until the move; its ctime now is the move's, still a bound, if a later one.
  const chained = executableFile(paths.host(CHAINED_QEMU_HOOK));
  if (chained) otherQemuHookMs = earliest(otherQemuHookMs, chainedBeforeMs ?? chained.ctimeMs);
  return { qemuPlacedByMs, otherQemuHookMs };
}

/** Whether any hook of ours is there, for either driver: what the record of their arrival is kept for. */
export function anyHookOfOurs(paths: Paths): boolean {
  return ['qemu', 'daemon'].some((driver) =>
    [`${HOOKS_DIR}/${driver}`, ...listNames(paths, `${HOOKS_DIR}/${driver}.d`)].some(
      (file) => executableFile(paths.host(file)) !== null && isOurHook(paths, file),
    ),
  );
}

/** Ours: not a package manager's copy, and our marker line among its first lines (no mere mention of the name). */
function isOurHook(paths: Paths, file: string): boolean {
  if (HOOK_BACKUP_RE.test(file)) return false;
  return (readSmall(paths.host(file), 512) ?? '').split('\n').includes(HOOK_MARKER);
}

/** What picks the reload command (core/hooks-loaded.ts reloadCommand), from files: nothing is run. */
export function reloadFacts(paths: Paths): ReloadFacts {
  return {
    systemd: isDir(paths.host('/run/systemd/system')),
    binKill: executableFile(paths.host('/bin/kill')) !== null,
    systemdVersion: systemdVersion(paths),
  };
}

/** systemd names its shared library by its version (libsystemd-shared-252.so), wherever the distro puts it. */
function systemdVersion(paths: Paths): number | null {
  const dirs = [
    '/usr/lib/systemd',
    '/usr/lib64/systemd',
    '/lib/systemd',
    ...listDir(paths.host('/usr/lib'))
      .filter((n) => MULTIARCH_RE.test(n))
      .map((n) => `/usr/lib/${n}/systemd`),
  ];
  for (const dir of dirs) {
    for (const name of listDir(paths.host(dir))) {
      const m = /^libsystemd-shared-(\d+)[.-]/.exec(name);
      if (m) return Number(m[1]);
    }
  }
  return null;
}

/**
 * Under --root, whether ROOT/proc is a real procfs: then the daemons in it
 * are this machine's, not the root's (host/processes.ts isProcfs).
 */
export function daemonsOutsideRoot(paths: Paths): boolean {
  return paths.root !== '/' && isProcfs(paths.hostNoFollow(PROC_DIR));
}

function listNames(paths: Paths, dir: string): string[] {
  return listDir(paths.host(dir)).map((n) => `${dir}/${n}`);
}

function executableFile(file: string): fs.Stats | null {
  try {
    const st = fs.statSync(file);
    return st.isFile() && (st.mode & 0o111) !== 0 ? st : null;
  } catch {
    return null;
  }
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function uidOf(dir: string): number | null {
  try {
    return fs.statSync(dir).uid;
  } catch {
    return null;
  }
}

/** The first bytes of a small file (procfs reports size 0: read, not stat). */
function readSmall(file: string, max = 4096): string | null {
  try {
    return readHead(file, max);
  } catch {
    return null;
  }
}
