import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import t from 'tap';
import { BARE_ENV, domainXml, installDispatchers, runHookFile } from '../fixtures/hooks';
import { EMULATOR, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';

// The qemu dispatcher's fast path: no Node start when nothing changed, and
// a full check whenever anything it watches may have changed.

const start = (file: string, name = 'g') =>
  runHookFile(file, [name, 'prepare', 'begin', '-'], { input: domainXml(name) });

/**
 * Moves the mark to now, as if the last full check had run a while after
 * the sysroot was built, and waits out the clock's tick so that anything
 * the test changes next is clearly newer.
 */
async function settleMark(s: Sysroot): Promise<void> {
  const now = new Date();
  fs.utimesSync(s.host('/var/lib/qemu-modwatch/mark'), now, now);
  await new Promise((r) => setTimeout(r, 30));
}

/** A sysroot with the dispatchers installed and one full check done. */
function primed(t: tap.Test, s = Sysroot.qemuHost()) {
  sysroot(t, s);
  s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  const hooks = installDispatchers(s);
  const r = start(hooks.qemu);
  t.equal(r.code, 0, r.stderr);
  t.equal(hooks.starts(), 1, 'first start runs the full check');
  t.ok(fs.existsSync(s.host('/var/lib/qemu-modwatch/mark')), 'mark written');
  t.ok(fs.existsSync(s.host('/var/lib/qemu-modwatch/watch')), 'watch list written');
  return { s, hooks };
}

t.test('nothing changed: the executable is not started at all', async (t) => {
  const { s, hooks } = primed(t);
  // Make the executable unusable: a start that reached it would fail loudly.
  await settleMark(s);
  hooks.forbidExecutable();
  for (let i = 0; i < 5; i++) {
    const r = start(hooks.qemu);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, '');
  }
  t.equal(hooks.starts(), 1, 'no further starts');
});

t.test('ops the hook ignores never start it, whatever the state', async (t) => {
  const s = sysroot(t);
  const hooks = installDispatchers(s);
  hooks.forbidExecutable();
  for (const [op, sub] of [
    ['started', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
    ['reconnect', 'begin'],
    ['attach', 'begin'],
  ]) {
    t.equal(runHookFile(hooks.qemu, ['g', op!, sub!, '-'], { input: domainXml() }).code, 0, op);
  }
  t.equal(runHookFile(hooks.daemon, ['-', 'shutdown', '-', 'shutdown']).code, 0);
  // A package manager's leftover copy of the dispatcher runs too (libvirt runs every executable in qemu.d):
  // it must not act.
  for (const suffix of ['.dpkg-old', '.dpkg-dist', '.rpmsave', '.rpmnew', '~']) {
    const copy = hooks.qemu + suffix;
    fs.copyFileSync(hooks.qemu, copy);
    fs.chmodSync(copy, 0o755);
    t.equal(runHookFile(copy, ['g', 'prepare', 'begin', '-'], { input: domainXml() }).code, 0, suffix);
    const dcopy = hooks.daemon + suffix;
    fs.copyFileSync(hooks.daemon, dcopy);
    fs.chmodSync(dcopy, 0o755);
    t.equal(runHookFile(dcopy, ['-', 'start', '-', 'start']).code, 0, suffix);
  }
  t.equal(hooks.starts(), 0);
});

t.test('stdin reaches the executable untouched', async (t) => {
  const s = sysroot(t);
  const hooks = installDispatchers(s);
  const seen = s.host('/tmp/seen-stdin');
  s.write('/usr/libexec/qemu-modwatch/qemu-modwatch', `#!/bin/sh\ncat > ${seen}\n`, 0o755);
  const xml = domainXml('stdin-check') + '<!-- trailing bytes \u00e9 -->\n';
  t.equal(runHookFile(hooks.qemu, ['stdin-check', 'restore', 'begin', '-'], { input: xml }).code, 0);
  t.equal(fs.readFileSync(seen, 'utf8'), xml);
});

t.test('a change within the same second as the scan is still seen', async (t) => {
  const { s, hooks } = primed(t);
  // Immediately after the full check: same second, often the same tick.
  s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
  t.equal(start(hooks.qemu).code, 0);
  t.equal(hooks.starts(), 2, 'full check ran');
  t.equal(s.cacheFiles().length, 0, 'and acted');
});

t.test('a change made while the executable is scanning is not lost', async (t) => {
  // Enough modules that the first scan (no baseline: every file is read) takes a while.
  const s = Sysroot.qemuHost(Array.from({ length: 1500 }, (_, i) => `block-m${i}.so`));
  sysroot(t, s);
  s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  const hooks = installDispatchers(s);
  const child = spawn(hooks.qemu, ['g', 'prepare', 'begin', '-'], {
    env: BARE_ENV,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  // Listened for from the start: a quick run may be over before the change below is made.
  const closed = new Promise((r) => child.on('close', r));
  child.stdin.end(domainXml());
  // Change a module while the scan is (very likely) under way.
  await new Promise((r) => setTimeout(r, 150));
  const changedAt = Date.now();
  s.replaceInPlace(MODDIR, 'block-m7.so');
  await closed;
  t.comment(`full check took ${Date.now() - changedAt} ms after the change`);
  t.equal(start(hooks.qemu).code, 0);
  t.equal(hooks.starts(), 2, 'the next start ran the full check');
  // Whichever run saw it, the baseline now holds the new build.
  const now = JSON.parse(s.run(['--check', '--json']).stdout);
  t.same(now.changes, [], 'baseline matches the modules on disk');
});

t.test('a module directory that appears after the mark', async (t) => {
  const { s, hooks } = primed(t);
  await settleMark(s);
  // A default directory that did not exist: /usr/lib64/qemu.
  s.addModule('/usr/lib64/qemu', 'hw-display-qxl.so');
  // Put every ctime-based signal out of play: only the "appeared" check can see it.
  t.equal(start(hooks.qemu).code, 0);
  t.equal(hooks.starts(), 2);
});

t.test('a new upgrade copy and a new multiarch directory are seen', async (t) => {
  for (const dir of ['/var/run/qemu/1_9.0', '/usr/lib/aarch64-linux-gnu/qemu']) {
    const { s, hooks } = primed(t);
    await settleMark(s);
    s.addModule(dir, 'hw-usb-host.so');
    t.equal(start(hooks.qemu).code, 0);
    t.equal(hooks.starts(), 2, dir);
  }
});

t.test('a changed or new config file', async (t) => {
  {
    const { s, hooks } = primed(t);
    await settleMark(s);
    s.writeConfig('[modules]\ndirs = /opt/mods\n');
    t.equal(start(hooks.qemu).code, 0);
    t.equal(hooks.starts(), 2, 'new config');
  }
  {
    const s = Sysroot.qemuHost();
    s.writeConfig('[policy]\nnudge = none\n');
    const { hooks } = primed(t, s);
    await settleMark(s);
    start(hooks.qemu);
    t.equal(hooks.starts(), 1, 'settled');
    fs.appendFileSync(s.host('/etc/qemu-modwatch.conf'), '# edited\n');
    t.equal(start(hooks.qemu).code, 0);
    t.equal(hooks.starts(), 2, 'edited config');
  }
});

t.test('a missing, unreadable or odd mark or watch list means the full check', async (t) => {
  const cases: [string, (s: Sysroot) => void][] = [
    ['mark missing', (s) => fs.rmSync(s.host('/var/lib/qemu-modwatch/mark'))],
    ['watch missing', (s) => fs.rmSync(s.host('/var/lib/qemu-modwatch/watch'))],
    [
      'mark is a directory',
      (s) => {
        fs.rmSync(s.host('/var/lib/qemu-modwatch/mark'));
        fs.mkdirSync(s.host('/var/lib/qemu-modwatch/mark'));
      },
    ],
    [
      'mark is a dangling symlink',
      (s) => {
        fs.rmSync(s.host('/var/lib/qemu-modwatch/mark'));
        fs.symlinkSync('/nonexistent', s.host('/var/lib/qemu-modwatch/mark'));
      },
    ],
    ['watch list garbage', (s) => fs.writeFileSync(s.host('/var/lib/qemu-modwatch/watch'), 'X what\n')],
    [
      'watched path vanished',
      (s) => fs.writeFileSync(s.host('/var/lib/qemu-modwatch/watch'), `F ${s.host('/gone')}\nE\n`),
    ],
    [
      'watch list cut short',
      (s) => {
        const file = s.host('/var/lib/qemu-modwatch/watch');
        fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/E\n$/, ''));
      },
    ],
  ];
  for (const [label, spoil] of cases) {
    const { s, hooks } = primed(t);
    await settleMark(s);
    spoil(s);
    t.equal(start(hooks.qemu).code, 0, label);
    t.equal(hooks.starts(), 2, label);
  }
});

t.test('pending changes under on_change = warn keep every start on the full path', async (t) => {
  const s = Sysroot.qemuHost();
  s.writeConfig('[policy]\non_change = warn\n');
  const { hooks } = primed(t, s);
  s.addModule(MODDIR, 'hw-usb-host.so');
  start(hooks.qemu);
  start(hooks.qemu);
  t.equal(hooks.starts(), 3, 'the warning repeats: no mark while changes are pending');
  t.notOk(fs.existsSync(s.host('/var/lib/qemu-modwatch/mark')));
});

t.test('the watch list names what the dispatcher needs', async (t) => {
  const { s } = primed(t);
  const lines = fs.readFileSync(s.host('/var/lib/qemu-modwatch/watch'), 'utf8').trim().split('\n');
  t.ok(lines.includes(`D ${s.host(MODDIR)}`), 'module directory, with its entries');
  t.ok(lines.includes(`F ${s.host(EMULATOR)}`), 'emulator');
  t.ok(lines.includes(`A ${s.host('/usr/lib64/qemu')}`), 'absent default directory');
  t.ok(lines.includes(`A ${s.host('/etc/qemu-modwatch.conf')}`), 'absent config');
  t.ok(lines.includes(`F ${s.host('/var/cache/libvirt/qemu/capabilities')}`), 'cache directory');
  t.equal(lines.pop(), 'E', 'ends with the end marker');
  t.ok(lines.every((l) => /^[ADF] \//.test(l)));
  const mark = fs.statSync(s.host('/var/lib/qemu-modwatch/mark'));
  t.ok(mark.mtimeMs < Date.now() - 1500, 'mark back-dated by the margin');
});
