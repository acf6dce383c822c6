// The host, copy-on-write: a package can be really installed, run its
// maintainer scripts and be purged without the host noticing.
//
// Every run() starts a new mount and PID namespace (`unshare --mount --pid
// --fork --mount-proc`) in which /etc, /usr, /var, /run and /root are
// overlayfs mounts (/root: Debian's rpm keeps its database in ~/.rpmdb):
// lowerdir the host's directory, upperdir kept in a temp dir across runs, so
// one run's install is the next run's starting point. The work dir
// is fresh for each mount: the previous namespace's overlay may not be
// gone yet. Mounts below a target (a container's /etc/resolv.conf or
// /etc/hosts bind mounts) would be hidden by the overlay, so they are bound
// back on top (test/fixtures/overlay-mount.ts). Merged /usr makes /lib, /bin and
// /sbin part of the /usr overlay.
//
// The PID namespace keeps `pidof libvirtd` in a maintainer script from
// finding (and signalling) a daemon of the host or of another test, and
// every process a run starts dies with it (--kill-child).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { overlayMountLines } from '../fixtures/overlay-mount';

export const TARGETS = ['/etc', '/usr', '/var', '/run', '/root'] as const;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Why packages cannot be installed in a private namespace here, or null when they can. */
export function cannotRun(tools: string[] = []): string | null {
  if (process.platform !== 'linux') return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return 'not running as root (needs mount namespaces and overlayfs)';
  for (const tool of ['unshare', 'mount', 'bash', ...tools]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0) return `${tool} not found`;
  }
  try {
    if (!/\toverlay$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'))) return 'the kernel has no overlayfs';
  } catch (e) {
    return `cannot read /proc/filesystems: ${(e as Error).message}`;
  }
  for (const t of TARGETS) {
    if (!fs.statSync(t, { throwIfNoEntry: false })?.isDirectory()) return `${t} is not a directory`;
  }
  const tmp = fs.realpathSync(os.tmpdir());
  if (TARGETS.some((t) => tmp === t || tmp.startsWith(`${t}/`))) {
    return `the temp dir ${tmp} is inside ${TARGETS.join(', ')}, which the test overlays; set TMPDIR elsewhere`;
  }
  const probe = spawnSync(
    'unshare',
    ['--mount', '--pid', '--fork', '--mount-proc', '--propagation', 'private', 'true'],
    {
      encoding: 'utf8',
      timeout: 20_000,
    },
  );
  if (probe.status !== 0)
    return `unshare --mount --pid does not work here: ${(probe.stderr || probe.error?.message || '').trim()}`;
  return null;
}

type UpperEntry = { path: string; kind: 'created' | 'modified' | 'whiteout'; id: string };

export class OverlayHost {
  readonly dir: string;
  private runs = 0;
  /** What prepare() changed, by path: the world's starting point, left out of created() and modified(). */
  private readonly start = new Map<string, string>();

  constructor(label: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${label}-`));
    TARGETS.forEach((_, i) => fs.mkdirSync(path.join(this.dir, 'ovl', String(i), 'upper'), { recursive: true }));
  }

  /** A directory of the host's file system for the test's own files (not overlaid). */
  scratch(name: string): string {
    const p = path.join(this.dir, 'scratch', name);
    fs.mkdirSync(p, { recursive: true });
    return p;
  }

  /** Runs a bash script in a fresh namespace over the overlays; never throws for a non-zero exit. */
  run(script: string, opts: { timeout?: number; env?: NodeJS.ProcessEnv } = {}): RunResult {
    const n = ++this.runs;
    const lines = ['set -eu'];
    TARGETS.forEach((t, i) => {
      const base = path.join(this.dir, 'ovl', String(i));
      const work = path.join(base, `work-${n}`);
      fs.mkdirSync(work);
      lines.push(
        ...overlayMountLines(t, { upper: path.join(base, 'upper'), work, stage: path.join(base, `stage-${n}`) }),
      );
    });
    lines.push('set +eu', 'cd /', script);
    const file = path.join(this.dir, `run-${n}.sh`);
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = spawnSync(
      'unshare',
      ['--mount', '--pid', '--fork', '--kill-child', '--mount-proc', '--propagation', 'private', 'bash', file],
      {
        encoding: 'utf8',
        timeout: opts.timeout ?? 300_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        env: opts.env ?? {
          PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
          LC_ALL: 'C',
          HOME: '/root',
          TMPDIR: '/tmp',
        },
      },
    );
    const stderr = (r.stderr ?? '') + (r.error ? `\n[overlay-host] ${r.error.message}` : '');
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr };
  }

  /**
   * Runs script as the first run, to make the world what a test needs
   * whatever the host has (e.g. a host where the package under test was
   * never installed: purged from the overlay's package database, its files
   * and state removed), and takes what it changed as the starting point.
   * created() and modified() then list only what the later runs changed.
   */
  prepare(script: string): RunResult {
    if (this.runs > 0) throw new Error('prepare() must be the first run');
    const r = this.run(script);
    for (const e of this.walkUpper()) this.start.set(e.path, `${e.kind} ${e.id}`);
    return r;
  }

  /**
   * What the runs created, as paths below /: files, symlinks and
   * directories in the upper dirs that the host does not have (a directory
   * only when nothing below it is listed), and whiteouts (deletions) of
   * host files. Host files that were only modified are left out: see
   * modified().
   */
  created(): string[] {
    return this.changes()
      .filter((e) => e.kind !== 'modified')
      .map((e) => e.path);
  }

  /** Host files the runs changed (copied up into the overlay). */
  modified(): string[] {
    return this.changes()
      .filter((e) => e.kind === 'modified')
      .map((e) => e.path);
  }

  /** The upper dirs' entries, less those exactly as prepare() left them. */
  private changes(): UpperEntry[] {
    return this.walkUpper().filter((e) => this.start.get(e.path) !== `${e.kind} ${e.id}`);
  }

  /** The upper copy of a path below one of the targets, or null. */
  upperPath(p: string): string | null {
    const i = TARGETS.findIndex((t) => p === t || p.startsWith(`${t}/`));
    if (i < 0) return null;
    const u = path.join(this.dir, 'ovl', String(i), 'upper', p.slice(TARGETS[i]!.length));
    return fs.existsSync(u) ? u : null;
  }

  private walkUpper(): UpperEntry[] {
    const out: UpperEntry[] = [];
    TARGETS.forEach((t, i) => {
      const upper = path.join(this.dir, 'ovl', String(i), 'upper');
      const visit = (rel: string): boolean => {
        let listed = false;
        for (const e of fs.readdirSync(path.join(upper, rel), { withFileTypes: true })) {
          const r = `${rel}/${e.name}`;
          const onHost = fs.lstatSync(t + r, { throwIfNoEntry: false }) !== undefined;
          if (e.isDirectory()) {
            const below = visit(r);
            if (!below && !onHost) out.push({ path: `${t}${r}/`, kind: 'created', id: 'dir' });
            listed ||= below || !onHost;
          } else {
            // A whiteout is a 0/0 character device.
            const st = fs.lstatSync(path.join(upper, r));
            const whiteout = st.isCharacterDevice() && st.rdev === 0;
            const id = whiteout ? 'whiteout' : `${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`;
            out.push({ path: t + r, kind: whiteout ? 'whiteout' : onHost ? 'modified' : 'created', id });
            listed = true;
          }
        }
        return listed;
      };
      visit('');
    });
    return out.sort((a, b) => (a.path < b.path ? -1 : 1));
  }

  cleanup(): void {
    // Nothing is mounted on the host side; the namespaces died with their runs.
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
