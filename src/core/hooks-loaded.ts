// Whether a running libvirt daemon can be running our hooks. libvirt decides
// which drivers have hooks when it starts and on reload (SIGHUP): a hook file
// or a .d directory with scripts in it. A driver that had a hook already
// picks up a new drop-in at once; the first hook of a driver waits for the
// next reload. So a daemon that started before our hooks arrived, with no
// other QEMU hook then, and has not run our daemon hook since, is not
// running our QEMU hook: its guest starts go unchecked.

/** An interval of epoch ms: a process's start time is known only to the kernel's tick, or its second. */
export interface TimeBounds {
  earliestMs: number;
  latestMs: number;
}

export interface RunningDaemon {
  /** libvirtd or virtqemud. */
  name: string;
  pid: number;
  /** null when /proc does not tell. */
  started: TimeBounds | null;
  /** The systemd unit it runs in, from its cgroup; null when none. */
  unit: string | null;
}

export interface HookFilesFacts {
  /** Newest change (ctime or mtime) of the dispatchers we installed, epoch ms; null when none are installed. */
  installedMs: number | null;
  /** Oldest change of any other hook of the qemu driver (a file of someone else's), epoch ms; null when none. */
  otherQemuHookMs: number | null;
}

/** What our daemon hook recorded of its last run in a daemon (store/daemon-hooks.ts). */
export interface DaemonHookRun {
  daemon: string;
  pid: number;
  atMs: number;
}

export interface HooksLoadedFacts {
  hooks: HookFilesFacts;
  daemons: RunningDaemon[];
  /** The records, by daemon name; a corrupt one is absent. */
  runs: DaemonHookRun[];
  /** Whether systemd runs this system and kill(1) is at /bin/kill, which Debian's and Fedora's ExecReload use. */
  systemctlReloadWorks: boolean;
}

export type LoadedVerdict =
  | { kind: 'loaded'; why: string }
  | { kind: 'not-loaded'; why: string; command: string }
  | { kind: 'cannot-tell'; why: string };

export interface DaemonVerdict {
  daemon: RunningDaemon;
  verdict: LoadedVerdict;
}

/** One verdict per running daemon; none when our hooks are not installed. */
export function judgeHooksLoaded(f: HooksLoadedFacts): DaemonVerdict[] {
  const installed = f.hooks.installedMs;
  if (installed === null) return [];
  return f.daemons.map((d) => ({ daemon: d, verdict: judgeOne(d, installed, f) }));
}

function judgeOne(d: RunningDaemon, installedMs: number, f: HooksLoadedFacts): LoadedVerdict {
  const at = iso(installedMs);
  if (!d.started) return { kind: 'cannot-tell', why: 'its start time cannot be read' };
  if (d.started.earliestMs > installedMs)
    return { kind: 'loaded', why: `it started after qemu-modwatch's hooks were installed (${at})` };
  if (d.started.latestMs >= installedMs)
    return { kind: 'cannot-tell', why: `it started about when qemu-modwatch's hooks were installed (${at})` };
  const other = f.hooks.otherQemuHookMs;
  if (other !== null && other < d.started.earliestMs)
    return { kind: 'loaded', why: 'another qemu hook was there when it started, so it picks up drop-ins at once' };
  const run = f.runs.find((r) => r.daemon === d.name && r.pid === d.pid);
  if (run && run.atMs >= Math.floor(installedMs))
    return { kind: 'loaded', why: `it ran qemu-modwatch's daemon hook at ${iso(run.atMs)}, after the hooks arrived` };
  // Our daemon hook ran in it before the files changed: the files were replaced, and the driver keeps its hooks.
  if (run) return { kind: 'loaded', why: `it ran qemu-modwatch's daemon hook at ${iso(run.atMs)}` };
  return {
    kind: 'not-loaded',
    why:
      `started before qemu-modwatch's hooks were installed (${at}) and has not run them since: ` +
      'guest starts are not checked until it reloads',
    command: reloadCommand(d, f.systemctlReloadWorks),
  };
}

/** The command that reloads it here: its unit's reload where that can work, else the signal by PID. */
export function reloadCommand(d: RunningDaemon, systemctlReloadWorks: boolean): string {
  if (d.unit && systemctlReloadWorks) return `systemctl reload ${d.unit.replace(/\.service$/, '')}`;
  return `kill -HUP ${d.pid}`;
}

/** The finding's text for a daemon that is not running our hooks. */
export function notLoadedMessage(d: RunningDaemon, v: { why: string; command: string }): string {
  return `${d.name} (pid ${d.pid}) ${v.why}: run \`${v.command}\``;
}

function iso(ms: number): string {
  return new Date(Math.floor(ms)).toISOString();
}
