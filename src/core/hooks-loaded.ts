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
  /**
   * When our qemu-driver dispatcher was placed, at the latest: its ctime
   * (epoch ms), the earliest of ours there (qemu.d/50-qemu-modwatch, or
   * hooks/qemu in the single-file and --chain layouts). Not its mtime, which
   * cp -p, tar and dpkg keep from the build. An admin's edit or chmod makes
   * it later, never earlier. Null when none of ours is there.
   */
  qemuPlacedByMs: number | null;
  /**
   * A time before our hooks first arrived, as the packages and install
   * recorded it when none of ours was there (store/hooks-installed-after.ts):
   * kept across upgrades, gone with the hooks. Null for no record (hooks
   * installed by a version that kept none, or a damaged record).
   */
  installedAfterMs: number | null;
  /**
   * The earliest time another qemu hook (someone else's, there now) was
   * placed by, at the latest: its ctime, or for the one install --chain
   * moved aside, its ctime from before the move. Null when none.
   */
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
  reload: ReloadFacts;
  /**
   * Under --root with a real procfs at ROOT/proc: the daemons are this
   * machine's (one PID namespace), and which hooks each reads cannot be seen
   * without leaving the root.
   */
  daemonsOutsideRoot: boolean;
}

/** What picks the command that reloads a daemon (reloadCommand). */
export interface ReloadFacts {
  /** systemd runs this system (/run/systemd/system). */
  systemd: boolean;
  /** /bin/kill is there: Debian's and Fedora's libvirt units' ExecReload runs it. */
  binKill: boolean;
  /** systemd's version, from its shared library's file name; null when not found. */
  systemdVersion: number | null;
}

export type LoadedVerdict =
  | { kind: 'loaded'; why: string }
  | { kind: 'not-loaded'; why: string; command: string }
  | { kind: 'cannot-tell'; why: string };

export interface DaemonVerdict {
  daemon: RunningDaemon;
  verdict: LoadedVerdict;
}

/**
 * How far apart two clocks may be: a process's start time is the boot time
 * (now less the uptime) plus its ticks, a file's ctime and a record's time
 * are the wall clock's then, and NTP steps the wall clock.
 */
export const CLOCK_SLACK_MS = 2000;

/** One verdict per running daemon; none when our qemu hook is not there. */
export function judgeHooksLoaded(f: HooksLoadedFacts): DaemonVerdict[] {
  if (f.hooks.qemuPlacedByMs === null) return [];
  return f.daemons.map((d) => ({ daemon: d, verdict: judgeOne(d, f) }));
}

function judgeOne(d: RunningDaemon, f: HooksLoadedFacts): LoadedVerdict {
  if (f.daemonsOutsideRoot)
    return {
      kind: 'cannot-tell',
      why: 'it is a process of this machine, and under --root it cannot be seen which hooks it reads',
    };
  if (!d.started) return { kind: 'cannot-tell', why: 'its start time cannot be read' };
  const placedBy = f.hooks.qemuPlacedByMs!;
  const after = f.hooks.installedAfterMs;
  const started = iso(d.started.earliestMs);
  // Started after our qemu hook was there: libvirt found it at its start.
  if (d.started.earliestMs > placedBy + CLOCK_SLACK_MS)
    return {
      kind: 'loaded',
      why: `it started (${started}) after qemu-modwatch's qemu hook was in place (${iso(placedBy)})`,
    };
  // A hook of the driver at its start enabled the driver: a drop-in added later is used at once.
  const other = f.hooks.otherQemuHookMs;
  if (other !== null && other + CLOCK_SLACK_MS < d.started.earliestMs)
    return {
      kind: 'loaded',
      why: `another qemu hook was there when it started (placed by ${iso(other)}), so it uses qemu-modwatch's at once`,
    };
  // Our daemon hook ran in this very process since our hooks arrived: at a start or reload, when libvirt looked at
  // the hooks again, and both dispatchers arrive in one unpack, so our qemu hook was there then too. A run from
  // before they arrived was of hooks since removed, which that reload's successor may have dropped. Without a record
  // of their arrival, a run is still of these hooks: the records are new in the version that writes the arrival, and
  // a purge removes both.
  const run = f.runs.find(
    (r) =>
      r.daemon === d.name &&
      r.pid === d.pid &&
      r.atMs + CLOCK_SLACK_MS >= d.started!.earliestMs &&
      (after === null || r.atMs >= after),
  );
  if (run)
    return { kind: 'loaded', why: `it ran qemu-modwatch's daemon hook at ${iso(run.atMs)}, after the hooks arrived` };
  if (after !== null && d.started.latestMs + CLOCK_SLACK_MS < after) {
    // Another hook there now, placed by after its start, may have been there at its start all the same.
    if (other !== null)
      return {
        kind: 'cannot-tell',
        why:
          `it started (${started}) before qemu-modwatch's hooks were installed (after ${iso(after)}), and ` +
          `another qemu hook is there, changed since (${iso(other)}): whether it was there at the start is not known`,
      };
    // No start time in a finding's text: read against the boot time (now less the uptime), it moves by
    // milliseconds from one check to the next, and a monitoring system would see a new message each time.
    return {
      kind: 'not-loaded',
      why:
        `started before qemu-modwatch's hooks were installed (after ${iso(after)}) and has not run them since: ` +
        'guest starts are not checked until it reloads',
      command: reloadCommand(d, f.reload),
    };
  }
  if (after === null)
    return {
      kind: 'cannot-tell',
      why:
        `it started (${started}), not after qemu-modwatch's qemu hook last changed (${iso(placedBy)}), no usable ` +
        'record says when the hooks were installed (none is kept by the versions before this one), and it has not ' +
        "run qemu-modwatch's daemon hook since: whether it runs them is not known",
    };
  return {
    kind: 'cannot-tell',
    why:
      `it started (${started}) about when qemu-modwatch's hooks were installed (after ${iso(after)}, in place by ` +
      `${iso(placedBy)}) and has not run qemu-modwatch's daemon hook since: whether they were there at its start is ` +
      'not known',
  };
}

/**
 * The command that reloads it here, the one the packages print when their
 * reload fails (build/deb/libvirt-reload.sh): in a systemd unit, the unit's
 * reload, which runs /bin/kill (Debian's and Fedora's ExecReload); without
 * /bin/kill, systemd's own signal to the unit's main process. systemd 252
 * renamed --kill-who to --kill-whom, and its newest versions no longer list
 * the old name: the shell asks `systemctl --help`, this reads the version
 * from its library's file name, and where that is not found says the one
 * command sure to work now, the signal by PID. No unit: the signal by PID.
 */
export function reloadCommand(d: RunningDaemon, r: ReloadFacts): string {
  if (!d.unit || !r.systemd) return `kill -HUP ${d.pid}`;
  if (r.binKill) return `systemctl reload ${d.unit}`;
  if (r.systemdVersion === null) return `kill -HUP ${d.pid}`;
  return `systemctl kill --signal=HUP ${r.systemdVersion >= 252 ? '--kill-whom' : '--kill-who'}=main ${d.unit}`;
}

/** The finding's text for a daemon that is not running our hooks. */
export function notLoadedMessage(d: RunningDaemon, v: { why: string; command: string }): string {
  return `${d.name} (pid ${d.pid}) ${v.why}: run \`${v.command}\``;
}

function iso(ms: number): string {
  return new Date(Math.floor(ms)).toISOString();
}
