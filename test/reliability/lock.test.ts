import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import t, { type Test } from 'tap';
import { OWNERLESS_STALE_MS, withStateLock } from '../../src/store/lock';
import { TOP } from '../fixtures/sysroot';
import { prng } from './helpers';

// The state lock on its own: a dead holder is taken over at once, a live
// one is never broken, the age-based fallback for locks without an owner,
// and mutual exclusion among processes that are killed while they hold it.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-lock-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

function lockDir(): { stateDir: string; lockPath: string } {
  const stateDir = path.join(dir, `s${n++}`);
  fs.mkdirSync(stateDir);
  return { stateDir, lockPath: path.join(stateDir, 'lock') };
}

function self(): { start: string; boot: string; pidns: string } {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  return {
    start: stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!,
    boot: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    pidns: fs.readlinkSync('/proc/self/ns/pid'),
  };
}

function startOf(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

/** A lock as a holder leaves it: the directory and its owner file. */
function plant(lockPath: string, owner: Record<string, unknown> | null, ageMs = 0): void {
  fs.mkdirSync(lockPath);
  if (owner) fs.writeFileSync(path.join(lockPath, 'owner'), JSON.stringify(owner) + '\n');
  const when = new Date(Date.now() - ageMs);
  fs.utimesSync(lockPath, when, when);
}

async function timeToLock(stateDir: string, lockPath: string): Promise<number> {
  const start = performance.now();
  await withStateLock(stateDir, lockPath, () => undefined);
  return performance.now() - start;
}

function sleeper(): ChildProcess {
  return spawn('sleep', ['60'], { stdio: 'ignore' });
}

/** A live process to name as a lock's owner, killed at the end of the test at the latest. */
async function liveOwner(t: Test): Promise<{ proc: ChildProcess; owner: Record<string, unknown> }> {
  const proc = sleeper();
  t.teardown(() => proc.kill());
  await new Promise((r) => setTimeout(r, 50));
  const me = self();
  return { proc, owner: { pid: proc.pid, start: startOf(proc.pid!), boot: me.boot, pidns: me.pidns } };
}

/** Asks for the lock; taken() says whether it has been given yet, done when it has been released. */
function askFor(stateDir: string, lockPath: string): { taken: () => boolean; done: Promise<void> } {
  let got = false;
  const done = withStateLock(stateDir, lockPath, () => {
    got = true;
  });
  return { taken: () => got, done };
}

t.test('a dead holder is taken over at once, whatever the age of its lock', async (t) => {
  const gone = spawnSync('true').pid!;
  const me = self();
  for (const age of [0, 3_600_000]) {
    const { stateDir, lockPath } = lockDir();
    plant(lockPath, { pid: gone, start: '1', boot: me.boot, pidns: me.pidns }, age);
    const ms = await timeToLock(stateDir, lockPath);
    t.ok(ms < 500, `lock ${age ? 'an hour' : 'a moment'} old: taken in ${ms.toFixed(0)} ms`);
    t.notOk(fs.existsSync(lockPath), 'and released');
  }
});

t.test('a reused pid, another boot: the holder is gone too', async (t) => {
  const live = sleeper();
  t.teardown(() => live.kill());
  await new Promise((r) => setTimeout(r, 50));
  const me = self();
  const cases: [string, Record<string, unknown>][] = [
    ['pid alive, other start time (reused)', { pid: live.pid, start: '1', boot: me.boot, pidns: me.pidns }],
    [
      'holder from another boot',
      { pid: live.pid, start: startOf(live.pid!), boot: '00000000-0000-0000-0000-000000000000', pidns: me.pidns },
    ],
  ];
  for (const [label, owner] of cases) {
    const { stateDir, lockPath } = lockDir();
    plant(lockPath, owner);
    const ms = await timeToLock(stateDir, lockPath);
    t.ok(ms < 500, `${label}: taken in ${ms.toFixed(0)} ms`);
  }
});

t.test('a live holder is never broken, however old its lock', async (t) => {
  const live = await liveOwner(t);
  const { stateDir, lockPath } = lockDir();
  plant(lockPath, live.owner, 3_600_000);
  const asked = askFor(stateDir, lockPath);
  await new Promise((r) => setTimeout(r, 1500));
  t.notOk(asked.taken(), 'still waiting after 1.5 s for a live holder of an hour-old lock');
  // The holder is killed: its lock goes at once.
  live.proc.kill('SIGKILL');
  const start = performance.now();
  await asked.done;
  t.ok(asked.taken(), `taken ${(performance.now() - start).toFixed(0)} ms after the holder died`);
});

t.test('a breaker killed while it held the breaker lock holds nobody up; a live one is waited for', async (t) => {
  const gone = spawnSync('true').pid!;
  const me = self();
  const dead = { pid: gone, start: '1', boot: me.boot, pidns: me.pidns };
  {
    const { stateDir, lockPath } = lockDir();
    plant(lockPath, dead);
    plant(`${lockPath}.break`, dead);
    const ms = await timeToLock(stateDir, lockPath);
    t.ok(ms < 500, `a dead holder and a dead breaker: taken in ${ms.toFixed(0)} ms`);
    t.same(fs.readdirSync(stateDir), [], 'lock, breaker and their removed copies are all gone');
  }
  {
    const live = await liveOwner(t);
    const { stateDir, lockPath } = lockDir();
    plant(lockPath, dead);
    plant(`${lockPath}.break`, live.owner);
    const asked = askFor(stateDir, lockPath);
    await new Promise((r) => setTimeout(r, 1000));
    t.notOk(asked.taken(), 'a live breaker is not cleared: still waiting after 1 s');
    live.proc.kill('SIGKILL');
    await asked.done;
    t.ok(asked.taken(), 'taken once the breaker died');
  }
});

t.test('releasing never leaves a lock without its owner, at any step', async (t) => {
  // A holder killed between two steps of its release leaves what was there
  // at that step. Before every file-system call the release makes, the
  // lock must be either complete (with its owner file) or gone.
  const { stateDir, lockPath } = lockDir();
  const broken: string[] = [];
  const check = (call: string) => {
    if (fs.existsSync(lockPath) && !fs.existsSync(path.join(lockPath, 'owner'))) broken.push(call);
  };
  // The module object itself: what the lock's own `fs` reads through.
  const realFs = require('node:fs') as Record<string, unknown>;
  const calls = ['unlinkSync', 'rmdirSync', 'rmSync', 'renameSync'] as const;
  const saved = calls.map((c) => [c, realFs[c]] as const);
  await withStateLock(stateDir, lockPath, () => {
    for (const [c, f] of saved) {
      realFs[c] = (...args: unknown[]) => {
        check(c);
        return (f as (...a: unknown[]) => unknown)(...args);
      };
    }
  }).finally(() => {
    for (const [c, f] of saved) realFs[c] = f;
  });
  check('after release');
  t.same(broken, [], 'the lock was complete or gone before each step');
  t.same(fs.readdirSync(stateDir), [], 'nothing left behind');
});

t.test(
  `a lock without an owner (older versions, or a holder killed right after mkdir) is taken after ` +
    `${OWNERLESS_STALE_MS / 1000} s`,
  async (t) => {
    {
      const { stateDir, lockPath } = lockDir();
      plant(lockPath, null, OWNERLESS_STALE_MS - 2000);
      const ms = await timeToLock(stateDir, lockPath);
      t.ok(
        ms > 1500 && ms < 4000,
        `an ownerless lock ${(OWNERLESS_STALE_MS - 2000) / 1000} s old: taken after ${ms.toFixed(0)} ms`,
      );
    }
    {
      // A holder in another pid namespace cannot be judged by pid: its lock ages out like an ownerless one.
      const { stateDir, lockPath } = lockDir();
      const me = self();
      plant(lockPath, { pid: 1, start: '1', boot: me.boot, pidns: 'pid:[1]' }, OWNERLESS_STALE_MS + 1000);
      const ms = await timeToLock(stateDir, lockPath);
      t.ok(ms < 500, `owner in another pid namespace, lock older than the limit: taken in ${ms.toFixed(0)} ms`);
    }
    {
      const { stateDir, lockPath } = lockDir();
      plant(lockPath, null);
      fs.writeFileSync(path.join(lockPath, 'owner'), '{"pid":');
      const ms = await timeToLock(stateDir, lockPath);
      t.ok(
        ms > OWNERLESS_STALE_MS - 500,
        `an owner file cut short counts as no owner: taken after ${ms.toFixed(0)} ms`,
      );
    }
  },
);

t.test('mutual exclusion while holders are SIGKILLed', async (t) => {
  // The lock module bundled on its own, so that plain node processes can use it.
  const bundle = path.join(dir, 'lock-worker.cjs');
  await esbuild.build({
    stdin: {
      contents: `
        const fs = require('node:fs');
        const path = require('node:path');
        const { withStateLock } = require(${JSON.stringify(path.join(TOP, 'src/store/lock.ts'))});
        const [stateDir, rounds] = [process.argv[2], Number(process.argv[3])];
        const marker = path.join(stateDir, 'holder');
        const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return e.code !== 'ESRCH'; } };
        (async () => {
          for (let i = 0; i < rounds; i++) {
            await withStateLock(stateDir, path.join(stateDir, 'lock'), () => {
              let fd;
              try {
                fd = fs.openSync(marker, 'wx');
              } catch {
                const other = Number(fs.readFileSync(marker, 'utf8'));
                // A holder killed inside leaves its marker: only a live one is a second holder.
                if (alive(other)) {
                  fs.appendFileSync(path.join(stateDir, 'violations'), other + ' ' + process.pid + '\\n');
                }
                fs.rmSync(marker, { force: true });
                fd = fs.openSync(marker, 'wx');
              }
              fs.writeSync(fd, String(process.pid));
              fs.closeSync(fd);
              const until = Date.now() + 2;
              while (Date.now() < until);
              fs.appendFileSync(path.join(stateDir, 'count'), Date.now() + '\\n');
              fs.rmSync(marker);
            });
          }
        })();
      `,
      resolveDir: dir,
      loader: 'js',
    },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    outfile: bundle,
    logLevel: 'warning',
  });
  const { stateDir } = lockDir();
  const random = prng(7);
  const workers = 24;
  const rounds = 15;
  let killed = 0;
  const runs: Promise<void>[] = [];
  const children: ChildProcess[] = [];
  for (let w = 0; w < workers; w++) {
    const child = spawn(process.execPath, [bundle, stateDir, String(rounds)], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(child);
    runs.push(new Promise((r) => child.once('close', () => r())));
  }
  // Kill a third of them at random moments while they queue for and hold the lock.
  for (const child of children.filter((_, i) => i % 3 === 0)) {
    await new Promise((r) => setTimeout(r, random() * 150));
    if (child.kill('SIGKILL')) killed++;
  }
  const start = performance.now();
  await Promise.all(runs);
  const times = fs.existsSync(path.join(stateDir, 'count'))
    ? fs.readFileSync(path.join(stateDir, 'count'), 'utf8').split('\n').filter(Boolean).map(Number)
    : [];
  const count = times.length;
  const gap = Math.max(0, ...times.slice(1).map((x, i) => x - times[i]!));
  const violations = fs.existsSync(path.join(stateDir, 'violations'))
    ? fs.readFileSync(path.join(stateDir, 'violations'), 'utf8')
    : '';
  t.equal(violations, '', 'never two live holders at once');
  t.ok(
    count >= (workers - killed) * rounds,
    `${count} critical sections completed (${workers - killed} workers ran all ${rounds} rounds, ${killed} killed)`,
  );
  t.comment(`longest pause between two holders: ${gap} ms`);
  t.ok(performance.now() - start < 60_000, 'all done within the wait limit');
  t.notOk(fs.existsSync(path.join(stateDir, 'lock')), 'the lock is free at the end');
});
