// Which libvirt daemon runs the daemon hook. Every modular daemon runs
// hooks/daemon with `- start - start`; the hook is started here by a parent
// process of each name (a copy of the shell called virtnetworkd, virtqemud,
// ...), as libvirt's daemons start it. The real modular daemons are in the
// end-to-end suite.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { OTHER_DAEMONS, QEMU_DAEMONS } from '../../src/core/daemons';
import { BARE_ENV, fakeSyslog, fileId, installDispatchers, runHook } from '../fixtures/hooks';
import { EMULATOR, MODDIR, Sysroot, TOP, sysroot } from '../fixtures/sysroot';

/** A recorded baseline, a fresh cache entry, then a module added: a change for the next daemon to see. */
function changed(t: Test): { s: Sysroot; entry: string } {
  const s = sysroot(t);
  t.equal(s.run(['accept']).code, 0);
  const entry = s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  s.addModule(MODDIR, 'hw-usb-host.so');
  return { s, entry };
}

/** Runs `file ARGS` as a child of a process whose comm is `daemon` (a copy of sh by that name). */
function runAsChildOf(s: Sysroot, daemon: string, file: string, args: string[], env: Record<string, string> = {}) {
  const dir = s.mkdir(`/tmp/daemons/${daemon}`);
  const parent = path.join(dir, daemon);
  if (!fs.existsSync(parent)) fs.copyFileSync('/bin/sh', parent);
  fs.chmodSync(parent, 0o755);
  // "; exit $?" keeps the shell from exec'ing the hook: the shell stays its parent.
  const r = spawnSync(parent, ['-c', '"$0" "$@"; exit $?', file, ...args], {
    encoding: 'utf8',
    env: { ...BARE_ENV, ...env },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test("the dispatcher's list of daemons is the executable's", async (t) => {
  const text = fs.readFileSync(path.join(TOP, 'hooks/daemon.d/50-qemu-modwatch'), 'utf8');
  const names = [...text.matchAll(/^\s*([a-z|]+)\) exit 0 ;;$/gm)].flatMap((m) => (m[1] ?? '').split('|'));
  t.same(names.sort(), [...OTHER_DAEMONS].sort());
  t.notOk(QEMU_DAEMONS.some((d) => names.includes(d)));
});

t.test(
  'a daemon that holds no QEMU capabilities: the dispatcher exits, no executable start, nothing touched',
  async (t) => {
    for (const daemon of ['virtnetworkd', 'virtstoraged', 'virtproxyd']) {
      const { s, entry } = changed(t);
      const hooks = installDispatchers(s);
      const before = fs.readFileSync(s.statePath(), 'utf8');
      const emu = fileId(s.host(EMULATOR));
      const r = runAsChildOf(s, daemon, hooks.daemon, ['-', 'start', '-', 'start']);
      t.equal(r.code, 0, `${daemon}: exit 0`);
      t.equal(r.stdout + r.stderr, '', `${daemon}: silent`);
      t.equal(hooks.starts(), 0, `${daemon}: the executable was not started`);
      t.ok(s.cacheFiles().includes(entry), `${daemon}: the cache entry is left for virtqemud's hooks`);
      t.equal(
        fs.readFileSync(s.statePath(), 'utf8'),
        before,
        `${daemon}: no baseline recorded (the change stays to be seen)`,
      );
      t.same(fileId(s.host(EMULATOR)), emu, `${daemon}: no nudge`);
    }
  },
);

t.test('virtqemud and libvirtd starting: act, and no nudge (they load capabilities after the hook)', async (t) => {
  for (const daemon of QEMU_DAEMONS) {
    const { s, entry } = changed(t);
    const hooks = installDispatchers(s);
    const log = fakeSyslog(s, true);
    const emu = fileId(s.host(EMULATOR))!;
    const r = runAsChildOf(s, daemon, hooks.daemon, ['-', 'start', '-', 'start'], log.env);
    t.equal(r.code, 0, r.stderr);
    t.equal(hooks.starts(), 1, `${daemon}: the executable ran`);
    t.notOk(s.cacheFiles().includes(entry), `${daemon}: the stale entry is deleted`);
    t.equal(fileId(s.host(EMULATOR))!.ctimeMs, emu.ctimeMs, `${daemon}: no nudge`);
    t.match(
      log.lines().join('\n'),
      new RegExp(`QEMU_MODWATCH_DAEMON=${daemon}\\|`),
      `${daemon}: the journal names the daemon`,
    );
  }
});

t.test(
  'a parent that cannot be named: act and nudge, so no change is recorded that no running daemon has seen',
  async (t) => {
    const { s, entry } = changed(t);
    const hooks = installDispatchers(s);
    const emu = fileId(s.host(EMULATOR))!;
    const r = runAsChildOf(s, 'some-daemon', hooks.daemon, ['-', 'start', '-', 'start']);
    t.equal(r.code, 0, r.stderr);
    t.notOk(s.cacheFiles().includes(entry), 'deleted');
    t.ok(fileId(s.host(EMULATOR))!.ctimeMs > emu.ctimeMs, 'and the emulator nudged');
  },
);

t.test('the executable started directly as the hook reads its parent itself', async (t) => {
  // Under --root, /proc is the sysroot's: the test process is the parent it finds there.
  for (const [daemon, acts] of [
    ['virtnetworkd', false],
    ['virtqemud', true],
  ] as const) {
    const { s, entry } = changed(t);
    s.write(`/proc/${process.pid}/comm`, `${daemon}\n`);
    t.equal(runHook(s, 'daemon', ['-', 'start', '-', 'start']).code, 0);
    t.equal(!s.cacheFiles().includes(entry), acts, `${daemon}: ${acts ? 'acts' : 'does nothing'}`);
  }
  const { s } = changed(t);
  s.write(`/proc/${process.pid}/comm`, 'virtnetworkd\n');
  const told = runHook(s, 'daemon', ['-', 'reload', 'begin', 'SIGHUP'], { env: { QEMU_MODWATCH_DAEMON: 'virtqemud' } });
  t.equal(told.code, 0);
  t.equal(s.cacheFiles().length, 0, 'what the dispatcher found (QEMU_MODWATCH_DAEMON) wins over /proc');
});

t.test('every argv libvirt has used for the qemu hook; 10.5+ passes a reason to release', async (t) => {
  const { s, entry } = changed(t);
  const hooks = installDispatchers(s);
  hooks.forbidExecutable();
  const forms = [
    ['g', 'started', 'begin', '-'],
    ['g', 'stopped', 'end', '-'],
    ['g', 'release', 'end', '-'],
    ['g', 'release', 'end', 'destroyed'],
    ['g', 'release', 'end', 'shutdown'],
    ['g', 'release', 'end', 'failed'],
    ['g', 'reconnect', 'begin', '-'],
    ['g', 'attach', 'begin', '-'],
  ];
  for (const args of forms) {
    const r = runAsChildOf(s, 'virtqemud', hooks.qemu, args);
    t.same([r.code, r.stdout, r.stderr], [0, '', ''], `${args.join(' ')}: silent, exit 0`);
    const direct = runHook(s, 'qemu', args);
    t.same([direct.code, direct.stdout, direct.stderr], [0, '', ''], `${args.join(' ')}: the executable too`);
  }
  t.equal(hooks.starts(), 0, 'the dispatcher started the executable for none of them');
  t.ok(s.cacheFiles().includes(entry), 'and nothing was acted on');
});

t.test(
  'the other orderings: refresh with virtqemud down, then its start; virtqemud and virtnetworkd starting at once',
  async (t) => {
    {
      // A package trigger's refresh while virtqemud is down (idle exit): it acts and records; the next start
      // sees nothing to do.
      const { s, entry } = changed(t);
      const hooks = installDispatchers(s);
      t.equal(s.run(['refresh']).code, 0);
      t.notOk(s.cacheFiles().includes(entry), 'refresh deleted the stale entry');
      const recorded = fs.readFileSync(s.statePath(), 'utf8');
      const r = runAsChildOf(s, 'virtqemud', hooks.daemon, ['-', 'start', '-', 'start']);
      t.equal(r.code, 0);
      t.equal(fs.readFileSync(s.statePath(), 'utf8'), recorded, "virtqemud's start after it: nothing left to act on");
    }
    {
      const { s, entry } = changed(t);
      const hooks = installDispatchers(s);
      const log = fakeSyslog(s);
      const both = ['virtnetworkd', 'virtqemud', 'virtstoraged'].map(
        (d) =>
          new Promise<number | null>((resolve) => {
            const dir = s.mkdir(`/tmp/daemons/${d}`);
            const parent = path.join(dir, d);
            fs.copyFileSync('/bin/sh', parent);
            fs.chmodSync(parent, 0o755);
            const c = spawn(parent, ['-c', '"$0" "$@"; exit $?', hooks.daemon, '-', 'start', '-', 'start'], {
              env: { ...BARE_ENV, ...log.env },
              stdio: 'ignore',
            });
            c.on('close', resolve);
          }),
      );
      t.same(await Promise.all(both), [0, 0, 0]);
      t.equal(hooks.starts(), 1, 'only virtqemud started the executable');
      t.notOk(s.cacheFiles().includes(entry), 'and it acted');
      t.equal(log.lines().filter((l) => /QEMU modules changed/.test(l)).length, 1, 'once');
    }
  },
);
