// Another system's root, copy-on-write: a root file system built once
// (build/nspawn-root.sh) is booted into by chroot, never written to. Like
// overlay-host.ts, every run() starts a new mount and PID namespace; there
// the root is the lower dir of an overlay whose upper dir is kept across
// runs, so one run's install is the next run's starting point. /proc is the
// namespace's own, /dev the host's (bound inside the namespace only), /tmp
// a fresh tmpfs, and /mnt the test's files, read-only.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { shq } from '../fixtures/shell';
import type { RunResult } from './overlay-host';

export class OverlayRoot {
  readonly dir: string;
  readonly upper: string;
  /** Host side of the chroot's /mnt. */
  readonly mnt: string;
  private runs = 0;

  constructor(
    readonly root: string,
    label: string,
  ) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `${label}-`));
    this.upper = path.join(this.dir, 'upper');
    this.mnt = path.join(this.dir, 'mnt');
    for (const d of [this.upper, this.mnt, path.join(this.dir, 'merged')]) fs.mkdirSync(d);
  }

  /** Runs a bash script as root in the chroot, in a bare environment; never throws for a non-zero exit. */
  run(script: string, opts: { timeout?: number } = {}): RunResult {
    const n = ++this.runs;
    const work = path.join(this.dir, `work-${n}`);
    fs.mkdirSync(work);
    const merged = path.join(this.dir, 'merged');
    const inner = path.join(this.mnt, `.run-${n}.sh`);
    fs.writeFileSync(inner, `cd /\n${script}\n`);
    const outer = [
      'set -eu',
      `mount -t overlay overlay -o ${shq(`lowerdir=${this.root},upperdir=${this.upper},workdir=${work}`)} ` +
        shq(merged),
      `mount -t proc proc ${shq(`${merged}/proc`)}`,
      `mount --rbind /dev ${shq(`${merged}/dev`)}`,
      `mount -t tmpfs tmpfs ${shq(`${merged}/tmp`)}`,
      `mount --bind ${shq(this.mnt)} ${shq(`${merged}/mnt`)}`,
      `mount -o remount,bind,ro ${shq(`${merged}/mnt`)}`,
      'set +e',
      `exec chroot ${shq(merged)} /usr/bin/env -i LC_ALL=C ` +
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root USER=root LOGNAME=root ' +
        `TMPDIR=/tmp /bin/bash /mnt/${path.basename(inner)}`,
    ];
    const file = path.join(this.dir, `run-${n}.sh`);
    fs.writeFileSync(file, outer.join('\n') + '\n');
    const r = spawnSync(
      'unshare',
      ['--mount', '--pid', '--fork', '--kill-child', '--mount-proc', '--propagation', 'private', 'bash', file],
      { encoding: 'utf8', timeout: opts.timeout ?? 300_000, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
    );
    const stderr = (r.stderr ?? '') + (r.error ? `\n[overlay-root] ${r.error.message}` : '');
    return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr };
  }

  /** What the runs left in the root, as paths below /: upper-dir entries (a directory only when empty), whiteouts. */
  changed(): string[] {
    const out: string[] = [];
    const visit = (rel: string): boolean => {
      let listed = false;
      for (const e of fs.readdirSync(path.join(this.upper, rel), { withFileTypes: true })) {
        const r = `${rel}/${e.name}`;
        if (e.isDirectory()) {
          const below = visit(r);
          const onRoot = fs.lstatSync(this.root + r, { throwIfNoEntry: false }) !== undefined;
          if (!below && !onRoot) out.push(`${r}/`);
          listed ||= below || !onRoot;
        } else {
          out.push(r);
          listed = true;
        }
      }
      return listed;
    };
    visit('');
    return out.sort();
  }

  cleanup(): void {
    // Nothing is mounted on the host side; the namespaces died with their runs.
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
