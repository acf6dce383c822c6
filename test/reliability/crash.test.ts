import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { domainXml, prepare } from '../fixtures/hooks';
import { EMULATOR, MODDIR, sysroot } from '../fixtures/sysroot';
import { baselineModules, prng, spawnHook, stateOf } from './helpers';

// Crash consistency: the hook SIGKILLed at random points, most of them
// while it writes the state. The state must always parse as the old or the
// new version, a lock left by the killed holder must not hold up the next
// guest start, and the killed writer's temp file must not pile up.

const SEED = Number(process.env.QEMU_MODWATCH_CRASH_SEED ?? 20240611);
const KILLS = Number(process.env.QEMU_MODWATCH_CRASH_KILLS ?? 200);
/** Enough modules that state.json is a quarter megabyte and writing it takes a few milliseconds. */
const MODULES = 1000;
/** Kills that left a lock whose next hook is timed (each costs a full run). */
const TIMED_TAKEOVERS = 25;
const STATE_DIR = '/var/lib/qemu-modwatch';

t.test(`SIGKILL at ${KILLS} random points (seed ${SEED})`, async (t) => {
  const s = sysroot(t);
  const templates = s.mkdir('/srv/templates');
  for (let i = 0; i < 8; i++) s.addModule('/srv/templates', `t${i}.so`);
  for (let i = 0; i < MODULES; i++) {
    fs.linkSync(path.join(templates, `t${i % 8}.so`), s.host(`${MODDIR}/hw-bulk-${String(i).padStart(5, '0')}.so`));
  }
  t.equal(s.run(['accept']).code, 0);
  s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  const stateDir = s.host(STATE_DIR);
  const toggles = Array.from({ length: 8 }, (_, i) => `hw-toggle-${i}.so`);
  const toggle = (i: number) => {
    const name = toggles[i % toggles.length]!;
    const file = s.host(`${MODDIR}/${name}`);
    // A copy, not a link: linking would move the ctime of every bulk module sharing the inode.
    if (fs.existsSync(file)) fs.rmSync(file);
    else fs.copyFileSync(path.join(templates, `t${i % 8}.so`), file);
  };
  const onDisk = () => new Set(fs.readdirSync(s.host(MODDIR)).filter((n) => n.endsWith('.so')));
  // Two settling runs: modules written just now are read again once (see RACY_MARGIN_NS).
  await new Promise((r) => setTimeout(r, 2100));
  prepare(s);
  prepare(s);
  t.comment(`state.json is ${(fs.statSync(s.statePath()).size / 1e6).toFixed(2)} MB for ${MODULES} modules`);

  // Measure first: when, after the spawn, the temp file appears and the rename lands.
  const calib: { tmp: number; renamed: number; exit: number }[] = [];
  for (let i = 0; i < 6; i++) {
    toggle(1000 + i);
    let tmp = NaN;
    let renamed = NaN;
    const start = performance.now();
    const watcher = fs.watch(stateDir, (_event, name) => {
      const now = performance.now() - start;
      if (typeof name !== 'string') return;
      if (/^\.state\.json\..*\.tmp$/.test(name) && Number.isNaN(tmp)) tmp = now;
      if (name === 'state.json') renamed = now;
    });
    const { done } = spawnHook(s, ['g', 'prepare', 'begin', '-'], domainXml('g'));
    const r = await done;
    const exit = performance.now() - start;
    await new Promise((res) => setTimeout(res, 20));
    watcher.close();
    t.equal(r.code, 0);
    calib.push({ tmp, renamed, exit });
  }
  const ok = calib.filter((c) => !Number.isNaN(c.tmp) && !Number.isNaN(c.renamed));
  t.ok(ok.length >= 3, 'the write was seen in calibration');
  // The write itself lasts milliseconds but starts anywhere from 250 to 550 ms
  // after the spawn, so kills aimed at it start their delay when the temp file appears.
  const writes = ok.map((c) => c.renamed - c.tmp).sort((a, b) => a - b);
  const writeMs = 2 * writes[Math.floor(writes.length / 2)]!;
  const runEnd = Math.max(...calib.map((c) => c.exit));
  t.comment(
    `calibration (temp file, rename, exit; ms after spawn): ` +
      `${calib.map((c) => [c.tmp, c.renamed, c.exit].map((x) => x.toFixed(0)).join('/')).join(' ')}`,
  );
  t.comment(
    `kills aimed at the write: 0-${(writeMs + 2).toFixed(0)} ms after the temp file appears; the others: ` +
      `0-${runEnd.toFixed(0)} ms after the spawn`,
  );

  const random = prng(SEED);
  const outcome = { beforeWrite: 0, duringWrite: 0, afterWrite: 0, completed: 0 };
  const takeover: number[] = [];
  const problems: string[] = [];
  let locksLeft = 0;
  for (let i = 0; i < KILLS; i++) {
    toggle(i);
    const old = fs.readFileSync(s.statePath(), 'latin1');
    const atWrite = random() < 0.6;
    const delay = atWrite ? random() * (writeMs + 2) : random() * runEnd;
    const { child, done } = spawnHook(s, [`k${i}`, 'prepare', 'begin', '-'], domainXml(`k${i}`));
    let timer: NodeJS.Timeout | undefined;
    const kill = () => {
      timer ??= setTimeout(() => child.kill('SIGKILL'), delay);
    };
    const watcher = atWrite
      ? fs.watch(stateDir, (_e, name) => typeof name === 'string' && /^\.state\.json\..*\.tmp$/.test(name) && kill())
      : null;
    if (!atWrite) kill();
    const r = await done;
    watcher?.close();
    clearTimeout(timer);
    const temps = fs.readdirSync(stateDir).filter((n) => /^\.state\.json\..*\.tmp$/.test(n));
    const now = fs.readFileSync(s.statePath(), 'latin1');
    if (r.signal !== 'SIGKILL') outcome.completed++;
    else if (temps.length > 0) outcome.duringWrite++;
    else if (now !== old) outcome.afterWrite++;
    else outcome.beforeWrite++;

    // The state is the old one, byte for byte, or a complete new one that matches the disk.
    if (now !== old) {
      const st = stateOf(s);
      const recorded = baselineModules(s, MODDIR);
      if (typeof st === 'string' || typeof recorded === 'string')
        problems.push(`kill ${i} at ${delay.toFixed(0)} ms: state ${st}`);
      else if (JSON.stringify(Object.keys(recorded).sort()) !== JSON.stringify([...onDisk()].sort()))
        problems.push(`kill ${i}: new state does not match the disk`);
    }

    // A lock left behind must not hold up the next start: time one that runs to the end.
    if (fs.existsSync(path.join(stateDir, 'lock')) && locksLeft++ < TIMED_TAKEOVERS) {
      // With a change to act on, so it needs the lock (with nothing to do a hook never takes it).
      toggle(i + 7);
      const start = performance.now();
      const next = prepare(s, `next${i}`);
      takeover.push(performance.now() - start);
      if (next.code !== 0) problems.push(`kill ${i}: the next hook exited ${next.code}: ${next.stderr}`);
      if (fs.existsSync(path.join(stateDir, 'lock'))) problems.push(`kill ${i}: lock still there after the next hook`);
      const left = fs.readdirSync(stateDir).filter((n) => n.endsWith('.tmp'));
      if (left.length > 0) problems.push(`kill ${i}: temp files left after the next hook: ${left.join(' ')}`);
    }
  }
  t.same(problems, [], `${KILLS} kills: the state always parsed as the old or the new version`);
  t.comment(
    `kills: ${outcome.beforeWrite} before the write, ${outcome.duringWrite} during it (temp file left), ` +
      `${outcome.afterWrite} after it, ${outcome.completed} runs finished first`,
  );
  t.ok(outcome.duringWrite >= 5, `the write itself was hit (${outcome.duringWrite} times)`);
  takeover.sort((a, b) => a - b);
  const median = takeover[Math.floor(takeover.length / 2)] ?? 0;
  const max = takeover.at(-1) ?? 0;
  t.comment(
    `${locksLeft} kills left the lock behind; for ${takeover.length} of them the next hook took median ` +
      `${median.toFixed(0)} ms, max ${max.toFixed(0)} ms (a full run is ${runEnd.toFixed(0)} ms)`,
  );
  t.ok(locksLeft > 0, 'some kills left the lock behind');
  t.ok(
    max < 3000,
    `a dead holder's lock is taken over at once, not after the 10 s an ownerless lock needs (max ${max.toFixed(0)} ms)`,
  );

  // A change, so the last run needs the lock and clears what the last kill left.
  toggle(KILLS + 1);
  t.equal(prepare(s, 'final').code, 0);
  const recorded = baselineModules(s, MODDIR);
  t.same(
    typeof recorded === 'string' ? recorded : Object.keys(recorded).sort(),
    [...onDisk()].sort(),
    'in the end the baseline is the disk',
  );
  t.same(
    fs.readdirSync(stateDir).filter((n) => n.endsWith('.tmp') || n === 'lock' || n === 'lock.break'),
    [],
    'no temp file or lock left',
  );
});
