import * as fs from 'node:fs';
import { QEMU_DAEMONS } from '../core/daemons';
import type { HookFilesFacts, RunningDaemon, TimeBounds } from '../core/hooks-loaded';
import { readHead } from '../os/file-info';
import { CHAINED_SUFFIX, HOOK_BACKUP_RE, HOOKS_DIR, PROC_DIR, type Paths } from './paths';

// observe: the running libvirt daemons that hold QEMU capabilities (root's),
// when each started, and when the hook files libvirt reads were installed:
// what core/hooks-loaded.ts judges. Under --root, the root's /proc and /etc.

/** Every dispatcher and wrapper we install says so in its first lines (hooks/, install.ts chainWrapper). */
const OURS = /qemu-modwatch/;
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
  // --root, /proc/PID/root would lead out of the root: every daemon there
  // is the root's.
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
 * When our hook files arrived (the newest change of the dispatchers we
 * placed, in either layout), and when the oldest other hook of the qemu
 * driver did. The record of since when they have been there is the
 * caller's (store/hooks-present.ts).
 */
export function hookFilesFacts(paths: Paths): Omit<HookFilesFacts, 'presentSince'> {
  let installedMs: number | null = null;
  let otherQemuHookMs: number | null = null;
  for (const driver of ['qemu', 'daemon']) {
    const files = [`${HOOKS_DIR}/${driver}`, ...listNames(paths, `${HOOKS_DIR}/${driver}.d`)];
    for (const file of files) {
      const st = executableFile(paths.host(file));
      if (!st) continue;
      const changed = Math.max(st.ctimeMs, st.mtimeMs);
      // A package manager's copy of ours (an upgrade's .dpkg-old, an erase's .rpmsave) is not what was installed
      // then; to libvirt it is a hook like any other.
      if (!HOOK_BACKUP_RE.test(file) && OURS.test(readSmall(paths.host(file), 512) ?? '')) {
        installedMs = Math.max(installedMs ?? changed, changed);
      } else if (driver === 'qemu') {
        // Its ctime is the last time it changed: it has been there at least since.
        otherQemuHookMs = Math.min(otherQemuHookMs ?? st.ctimeMs, st.ctimeMs);
      }
    }
  }
  // The move changed its ctime, not its mtime.
  const chained = executableFile(paths.host(CHAINED_QEMU_HOOK));
  if (chained) otherQemuHookMs = Math.min(otherQemuHookMs ?? chained.mtimeMs, chained.mtimeMs);
  return { installedMs, otherQemuHookMs };
}

/** Whether `systemctl reload` can work for libvirt's units: systemd runs, and their ExecReload's /bin/kill is there. */
export function systemctlReloadWorks(paths: Paths): boolean {
  return isDir(paths.host('/run/systemd/system')) && executableFile(paths.host('/bin/kill')) !== null;
}

function listNames(paths: Paths, dir: string): string[] {
  try {
    return fs
      .readdirSync(paths.host(dir))
      .sort()
      .map((n) => `${dir}/${n}`);
  } catch {
    return [];
  }
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
