import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import {
  BARE_ENV,
  domainXml,
  fakeSyslog,
  fileId,
  prepare,
  runHook,
  runHookAsync,
  runHookFile,
} from '../fixtures/hooks';
import { EMULATOR, EXE, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';

// The hook, run as libvirt runs it, against sysroots.

/** A host with a recorded baseline and a fresh cache entry for the emulator. */
function settled(t: tap.Test, config?: string): { s: Sysroot; entry: string } {
  const s = sysroot(t);
  if (config) s.writeConfig(config);
  t.equal(s.run(['accept']).code, 0);
  const entry = s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  return { s, entry };
}

const state = (s: Sysroot) => JSON.parse(fs.readFileSync(s.statePath(), 'utf8'));

t.test('no change: nothing deleted, nudged, rewritten or logged', async (t) => {
  const { s, entry } = settled(t);
  const log = fakeSyslog(s);
  const cache = fileId(path.join(s.cacheDir(), entry));
  const emu = fileId(s.host(EMULATOR));
  const st = fileId(s.statePath());
  for (let i = 0; i < 3; i++) {
    const r = prepare(s, 'guest1', EMULATOR, log.env);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, '');
    t.equal(r.stderr, '');
  }
  const d = runHook(s, 'daemon', ['-', 'start', '-', 'start'], { env: log.env });
  t.equal(d.code, 0);
  t.same(fileId(path.join(s.cacheDir(), entry)), cache, 'cache entry untouched');
  t.same(fileId(s.host(EMULATOR)), emu, 'emulator not nudged');
  t.same(fileId(s.statePath()), st, 'state not rewritten');
  t.same(log.lines(), [], 'nothing logged');
});

t.test('cache headers are remembered by hooks and accept, never written by --check', async (t) => {
  const { s, entry } = settled(t);
  const memo = s.host('/var/lib/qemu-modwatch/cache-headers.json');
  // An entry is remembered once its ctime is older than the settling time.
  await new Promise((r) => setTimeout(r, 2100));
  fs.rmSync(memo, { force: true });
  t.equal(s.run(['--check']).code, 0);
  t.notOk(fs.existsSync(memo), '--check writes nothing');
  t.equal(prepare(s, 'guest1', EMULATOR).code, 0);
  t.equal(
    JSON.parse(fs.readFileSync(memo, 'utf8')).entries[entry]?.emulator,
    EMULATOR,
    'the hook remembered the header',
  );
  const id = fileId(memo);
  t.equal(prepare(s, 'guest1', EMULATOR).code, 0);
  t.same(fileId(memo), id, 'and does not rewrite what it already has');
  fs.rmSync(memo);
  t.equal(s.run(['accept']).code, 0);
  t.ok(fs.existsSync(memo), 'accept remembers them too');
});

t.test('module added, removed, replaced in place: invalidate and nudge (defaults)', async (t) => {
  for (const change of ['added', 'removed', 'replaced'] as const) {
    const { s, entry } = settled(t);
    const log = fakeSyslog(s);
    s.addCacheEntry('/usr/bin/qemu-system-aarch64', { ageSeconds: -5 });
    const before = fileId(s.host(EMULATOR))!;
    await new Promise((r) => setTimeout(r, 20));
    if (change === 'added') s.addModule(MODDIR, 'hw-usb-smartcard.so');
    if (change === 'removed') fs.rmSync(s.host(`${MODDIR}/block-rbd.so`));
    if (change === 'replaced') s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
    const r = prepare(s, 'web01', EMULATOR, log.env);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, '');
    t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)), `${change}: entry deleted`);
    t.equal(
      s.cacheFiles().length,
      0,
      `${change}: the missing emulator's stale entry too (unsure which directory it uses)`,
    );
    const after = fileId(s.host(EMULATOR))!;
    t.ok(after.ctimeMs > before.ctimeMs, `${change}: emulator ctime moved`);
    t.equal(after.mtimeMs, before.mtimeMs, `${change}: emulator mtime not touched`);
    t.equal(fs.statSync(s.host(EMULATOR)).mode & 0o7777, 0o755, 'mode unchanged');
    const lines = log.lines();
    t.equal(lines.length, 1, `${change}: one log line`);
    t.match(
      lines[0],
      new RegExp(
        `-t qemu-modwatch -p daemon.warning -- QEMU modules changed \\(${change} [a-z-]+\\.so\\) before ` +
          `prepare of domain 'web01' \\(emulator ${EMULATOR}\\): deleted 2 capabilities cache entries, ` +
          `nudged ${EMULATOR}`,
      ),
    );
    const st = state(s);
    t.equal(st.lastAction.trigger, 'hook qemu prepare');
    t.same(
      st.lastAction.deleted.sort(),
      [entry, s.cacheFiles()[0] ?? st.lastAction.deleted.find((x: string) => x !== entry)].sort(),
    );
    t.equal(s.json().report.changes.length, 0, `${change}: baseline moved`);
    // The nudge itself is recorded: the next run neither re-reads nor re-acts.
    const again = prepare(s, 'web01', EMULATOR, log.env);
    t.equal(again.code, 0);
    t.equal(log.lines().length, 1, 'acted once');
  }
});

t.test('nudge = moddir-mtime and nudge = none', async (t) => {
  {
    const { s } = settled(t, '[policy]\nnudge = moddir-mtime\n');
    const old = new Date('2020-01-01T00:00:00Z');
    s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
    fs.utimesSync(s.host(MODDIR), old, old);
    const emu = fileId(s.host(EMULATOR));
    t.equal(prepare(s).code, 0);
    t.ok(fs.statSync(s.host(MODDIR)).mtimeMs > Date.now() - 60_000, 'module directory mtime set to now');
    t.same(fileId(s.host(EMULATOR)), emu, 'emulator untouched');
    t.equal(s.cacheFiles().length, 0);
  }
  {
    const { s } = settled(t, '[policy]\nnudge = none\n');
    s.addModule(MODDIR, 'hw-usb-host.so');
    const emu = fileId(s.host(EMULATOR));
    const dir = fs.statSync(s.host(MODDIR)).mtimeMs;
    t.equal(prepare(s).code, 0);
    t.same(fileId(s.host(EMULATOR)), emu);
    t.equal(fs.statSync(s.host(MODDIR)).mtimeMs, dir);
    t.equal(s.cacheFiles().length, 0, 'still invalidated');
  }
});

t.test('on_change = warn: logs every time, changes nothing, until accept', async (t) => {
  const { s, entry } = settled(t, '[policy]\non_change = warn\n');
  const log = fakeSyslog(s);
  s.addModule(MODDIR, 'hw-usb-host.so');
  const st = fileId(s.statePath());
  for (let i = 0; i < 2; i++) t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
  t.ok(fs.existsSync(path.join(s.cacheDir(), entry)), 'entry kept');
  t.same(fileId(s.statePath()), st, 'baseline not moved');
  t.equal(log.lines().length, 2, 'warned twice');
  t.match(log.lines()[0], /on_change = warn, so nothing was done/);
  s.run(['accept']);
  t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
  t.equal(log.lines().length, 2, 'accepted: quiet again');
});

t.test('on_change = refuse: first start fails with one line, the next passes', async (t) => {
  const { s, entry } = settled(t, '[policy]\non_change = refuse\n');
  const log = fakeSyslog(s);
  s.replaceInPlace(MODDIR, 'hw-usb-redirect.so');
  const first = prepare(s, 'db1', EMULATOR, log.env);
  t.equal(first.code, 1);
  t.equal(first.stdout, '');
  t.match(
    first.stderr,
    new RegExp(
      String.raw`^qemu-modwatch: QEMU modules changed \(replaced hw-usb-redirect\.so\); libvirt's ` +
        String.raw`capabilities were refreshed \(1 cache entries\), start the domain again\n$`,
    ),
  );
  t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)));
  const second = prepare(s, 'db1');
  t.equal(second.code, 0, second.stderr);
  // refuse is for starts: an incoming migration is fixed, not cancelled.
  s.addModule(MODDIR, 'ui-gtk.so');
  const mig = runHook(s, 'qemu', ['db1', 'migrate', 'begin', '-'], { input: domainXml('db1') });
  t.equal(mig.code, 0);
});

t.test('migrate and restore: act, and print nothing on stdout', async (t) => {
  for (const op of ['migrate', 'restore']) {
    const { s, entry } = settled(t);
    s.addModule(MODDIR, 'hw-usb-host.so');
    const r = runHook(s, 'qemu', ['vm', op, 'begin', '-'], { input: domainXml('vm') });
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout, '', `${op}: stdout empty, libvirt keeps the XML`);
    t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)), `${op}: invalidated`);
  }
});

t.test('first run: records a baseline; deletes only entries stale by age', async (t) => {
  const s = sysroot(t);
  const log = fakeSyslog(s);
  s.addEmulator('/usr/bin/qemu-system-aarch64', { dirs: ['/usr/lib/aarch64-linux-gnu/qemu'] });
  s.addModule('/usr/lib/aarch64-linux-gnu/qemu', 'hw-display-qxl.so');
  const stale = s.addCacheEntry(EMULATOR, { ageSeconds: 600 });
  const fresh = s.addCacheEntry('/usr/bin/qemu-system-aarch64', { ageSeconds: -5 });
  // As libvirtd's own start runs it (the dispatcher names the daemon); an unnamed one is also nudged (daemons.test.ts).
  const r = runHook(s, 'daemon', ['-', 'start', '-', 'start'], {
    env: { ...log.env, QEMU_MODWATCH_DAEMON: 'libvirtd' },
  });
  t.equal(r.code, 0, r.stderr);
  t.same(s.cacheFiles(), [fresh]);
  t.notOk(s.cacheFiles().includes(stale));
  t.equal(state(s).schema, 1);
  t.match(log.lines().join('\n'), /stale capabilities cache entries: deleted 1 capabilities cache entries/);
  t.notMatch(log.lines().join('\n'), /nudged/, 'daemon start needs no nudge');
});

t.test('daemon start with no baseline and nothing stale records one quietly (notice)', async (t) => {
  const s = sysroot(t);
  const log = fakeSyslog(s);
  s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  t.equal(runHook(s, 'daemon', ['-', 'start', '-', 'start'], { env: log.env }).code, 0);
  t.equal(s.cacheFiles().length, 1);
  t.match(log.lines()[0], /-p daemon.notice -- recorded a first baseline: 3 modules in 1 module directories/);
});

t.test('daemon reload nudges; shutdown and other ops do nothing', async (t) => {
  const { s } = settled(t);
  s.addModule(MODDIR, 'hw-usb-host.so');
  s.write('/var/lib/qemu-modwatch/state.json.keep', fs.readFileSync(s.statePath()));
  const emu = fileId(s.host(EMULATOR))!;
  for (const args of [
    ['-', 'shutdown', '-', 'shutdown'],
    ['-', 'bogus'],
  ]) {
    t.equal(runHook(s, 'daemon', args).code, 0);
  }
  for (const op of ['started', 'stopped', 'release', 'reconnect', 'attach', 'start']) {
    t.equal(
      runHook(s, 'qemu', ['g', op, op === 'stopped' || op === 'release' ? 'end' : 'begin', '-'], { input: domainXml() })
        .code,
      0,
    );
  }
  t.equal(s.cacheFiles().length, 1, 'ignored ops left the cache alone');
  t.equal(runHook(s, 'daemon', ['-', 'reload', 'begin', 'SIGHUP']).code, 0);
  t.equal(s.cacheFiles().length, 0);
  t.ok(fileId(s.host(EMULATOR))!.ctimeMs > emu.ctimeMs, 'reload nudged the running daemon');
});

t.test('ignored ops do not even read the state', async (t) => {
  const s = sysroot(t);
  const log = fakeSyslog(s);
  s.write('/var/lib/qemu-modwatch/state.json', 'garbage');
  const r = runHook(s, 'qemu', ['g', 'stopped', 'end', '-'], { input: domainXml(), env: log.env });
  t.equal(r.code, 0);
  t.same(log.lines(), []);
  t.equal(fs.readFileSync(s.statePath(), 'utf8'), 'garbage');
});

t.test(
  'started by name: through a qemu.d symlink, and as hooks/qemu, with no options and a bare environment',
  async (t) => {
    for (const name of ['/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', '/etc/libvirt/hooks/qemu']) {
      const { s, entry } = settled(t);
      const link = s.host(name);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(EXE, link);
      s.addModule(MODDIR, 'hw-usb-host.so');
      const r = runHookFile(link, ['vm', 'prepare', 'begin', '-'], {
        input: domainXml('vm'),
        env: { QEMU_MODWATCH_ROOT: s.root },
      });
      t.equal(r.code, 0, r.stderr);
      t.equal(r.stdout, '');
      t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)), `${name}: acted`);
    }
    {
      // Completely empty environment.
      const { s, entry } = settled(t);
      s.addModule(MODDIR, 'hw-usb-host.so');
      const r = spawnSync(EXE, ['--root', s.root, 'hook', 'qemu', 'vm', 'prepare', 'begin', '-'], {
        input: domainXml('vm'),
        env: {},
        encoding: 'utf8',
      });
      t.equal(r.status, 0, r.stderr);
      t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)), 'env -i: acted');
    }
  },
);

t.test('a symlink planted in the cache directory survives, and so does its target', async (t) => {
  const { s, entry } = settled(t);
  const outside = s.write(
    '/srv/precious.xml',
    `<qemuCaps><emulator>${EMULATOR}</emulator><qemuctime>1</qemuctime></qemuCaps>`,
  );
  const old = new Date('2001-01-01');
  fs.utimesSync(outside, old, old);
  const link = path.join(s.cacheDir(), 'c'.repeat(64) + '.xml');
  fs.symlinkSync(outside, link);
  const dirLink = path.join(s.cacheDir(), 'd'.repeat(64) + '.xml');
  fs.mkdirSync(dirLink);
  s.addModule(MODDIR, 'hw-usb-host.so');
  t.equal(prepare(s).code, 0);
  t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)));
  t.ok(fs.lstatSync(link).isSymbolicLink(), 'symlink kept');
  t.ok(fs.existsSync(outside), 'target kept');
  t.ok(fs.statSync(dirLink).isDirectory(), 'directory kept');
});

t.test('a cache directory that is a symlink is neither read nor changed', async (t) => {
  const s = sysroot(t);
  s.run(['accept']);
  const real = s.mkdir('/srv/realcache');
  fs.mkdirSync(path.dirname(s.cacheDir()), { recursive: true });
  fs.symlinkSync(real, s.cacheDir());
  s.addCacheEntry(EMULATOR, { cacheDir: '/srv/realcache', ageSeconds: 600 });
  s.addModule(MODDIR, 'hw-usb-host.so');
  t.equal(prepare(s).code, 0);
  t.equal(fs.readdirSync(real).length, 1);
});

t.test('bad stdin XML: fail open with one logged line; fail = closed refuses', async (t) => {
  const cases: [string, string | Buffer, RegExp][] = [
    ['malformed', '<domain><name>x</name>', /domain XML|XML/],
    ['empty', '', /no domain XML on stdin/],
    [
      'entity bomb',
      '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b ' +
        '"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><domain><name>&b;</name></domain>',
      /DOCTYPE/,
    ],
    ['17 MiB', Buffer.alloc(17 * 1024 * 1024, 0x20), /larger than 16 MiB/],
  ];
  for (const [label, input, why] of cases) {
    const { s, entry } = settled(t);
    const log = fakeSyslog(s);
    s.addModule(MODDIR, 'hw-usb-host.so');
    const r = runHook(s, 'qemu', ['vm', 'prepare', 'begin', '-'], { input, env: log.env });
    t.equal(r.code, 0, `${label}: not blocking`);
    t.equal(r.stdout, '');
    t.equal(log.lines().length, 1, `${label}: logged once`);
    t.match(
      log.lines()[0],
      /-p daemon.err -- hook qemu prepare for domain 'vm' failed: .*not blocking \(fail = open\)/,
    );
    t.match(log.lines()[0], why, label);
    t.ok(fs.existsSync(path.join(s.cacheDir(), entry)), `${label}: nothing done on bad input`);
  }
  const { s } = settled(t, '[policy]\nfail = closed\n');
  const log = fakeSyslog(s);
  const r = runHook(s, 'qemu', ['vm', 'prepare', 'begin', '-'], { input: '<domain>', env: log.env });
  t.equal(r.code, 1);
  t.match(r.stderr, /^qemu-modwatch: malformed domain XML.*\n$/);
  t.match(log.lines()[0], /refusing \(fail = closed\)/);
});

t.test('corrupt state: the hook records a new baseline and says so', async (t) => {
  const { s } = settled(t);
  const log = fakeSyslog(s);
  fs.writeFileSync(s.statePath(), '{"schema":1,"baseline":');
  t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
  t.equal(state(s).schema, 1);
  t.match(log.lines()[0], /not valid JSON .*recording a new baseline/);
});

t.test('a bad config fails open and is logged', async (t) => {
  const { s } = settled(t);
  const log = fakeSyslog(s);
  s.writeConfig('[policy]\nwhatever = 1\n');
  s.addModule(MODDIR, 'hw-usb-host.so');
  t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
  t.match(log.lines()[0], /unknown key \[policy\] whatever; not blocking/);
});

t.test(
  'read-only state directory: fail open, logged',
  { skip: process.getuid?.() !== 0 ? 'needs root for a read-only bind mount' : false },
  async (t) => {
    const { s } = settled(t);
    const log = fakeSyslog(s);
    s.addModule(MODDIR, 'hw-usb-host.so');
    const stateDir = s.host('/var/lib/qemu-modwatch');
    const script = `mount --bind ${stateDir} ${stateDir} && mount -o remount,bind,ro ${stateDir} && exec "$@"`;
    const r = spawnSync(
      'unshare',
      [
        '-m',
        '--propagation',
        'private',
        'sh',
        '-c',
        script,
        'sh',
        EXE,
        '--root',
        s.root,
        'hook',
        'qemu',
        'g',
        'prepare',
        'begin',
        '-',
      ],
      {
        input: domainXml('g'),
        env: { ...BARE_ENV, ...log.env },
        encoding: 'utf8',
      },
    );
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stdout, '');
    t.match(log.lines().join('\n'), /EROFS|read-only/);
  },
);

t.test('journal: structured fields', async (t) => {
  const { s } = settled(t);
  const log = fakeSyslog(s, true);
  s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
  t.equal(prepare(s, 'evil\nname', EMULATOR, log.env).code, 0);
  const line = log.lines()[0]!;
  t.match(
    line,
    /^--journald MESSAGE=QEMU modules changed \(replaced hw-display-qxl.so\) before prepare of domain 'evil\\x0aname'/,
  );
  t.match(line, /\|SYSLOG_IDENTIFIER=qemu-modwatch\|PRIORITY=4\|/);
  t.match(line, new RegExp(`QEMU_MODWATCH_REPLACED=${MODDIR}/hw-display-qxl.so\\|`));
  t.match(line, /QEMU_MODWATCH_DOMAIN=evil\\x0aname\|/);
  t.match(line, new RegExp(`QEMU_MODWATCH_EMULATOR=${EMULATOR}\\|`));
});

t.test('50 hooks in parallel with one change: one set of deletions, valid state', async (t) => {
  const { s, entry } = settled(t);
  const log = fakeSyslog(s);
  s.addModule(MODDIR, 'hw-usb-host.so');
  const runs = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      runHookAsync(s, 'qemu', [`g${i}`, 'prepare', 'begin', '-'], domainXml(`g${i}`), log.env),
    ),
  );
  t.ok(
    runs.every((r) => r.code === 0 && r.stdout === ''),
    'all started',
  );
  t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)));
  const warnings = log.lines().filter((l) => /daemon.warning/.test(l));
  t.equal(warnings.length, 1, 'acted once');
  t.equal(state(s).lastAction.deleted.length, 1);
  t.equal(s.json().report.baseline.state, 'ok');
  t.equal(s.json().report.changes.length, 0);
});

t.test("the daemon hook records its run: which daemon, its PID (the hook's parent), when", async (t) => {
  const s = sysroot(t);
  const record = (d: string) => s.host(`/var/lib/qemu-modwatch/daemon-hook.${d}.json`);
  const before = Date.now();
  t.equal(runHook(s, 'daemon', ['-', 'start', '-', 'start'], { env: { QEMU_MODWATCH_DAEMON: 'libvirtd' } }).code, 0);
  const r = JSON.parse(fs.readFileSync(record('libvirtd'), 'utf8'));
  t.same([r.schema, r.daemon, r.pid], [1, 'libvirtd', process.pid], 'libvirtd, and our PID: we started the hook');
  t.ok(Date.parse(r.at) >= before - 1 && Date.parse(r.at) <= Date.now(), `when: ${r.at}`);
  t.equal(
    runHook(s, 'daemon', ['-', 'reload', 'begin', 'SIGHUP'], { env: { QEMU_MODWATCH_DAEMON: 'virtqemud' } }).code,
    0,
  );
  t.ok(fs.existsSync(record('virtqemud')), 'a reload records too, per daemon');
  t.equal(
    runHook(s, 'daemon', ['-', 'start', '-', 'start'], { env: { QEMU_MODWATCH_DAEMON: 'virtnetworkd' } }).code,
    0,
  );
  t.notOk(fs.existsSync(record('virtnetworkd')), 'a daemon without QEMU capabilities: nothing');
  t.equal(
    runHook(s, 'daemon', ['-', 'shutdown', '-', 'shutdown'], { env: { QEMU_MODWATCH_DAEMON: 'libvirtd' } }).code,
    0,
  );
  t.same(JSON.parse(fs.readFileSync(record('libvirtd'), 'utf8')), r, 'shutdown records nothing');

  fs.writeFileSync(record('libvirtd'), '{"schema":1,"daem');
  const check = s.json();
  t.same(
    check.report.findings.filter((f: any) => f.code === 'corrupt-state').map((f: any) => f.message),
    [
      '/var/lib/qemu-modwatch/daemon-hook.libvirtd.json is not a record of ' +
        "qemu-modwatch's daemon hook; treated as no record",
    ],
    'a damaged record: one line, and no record',
  );
  const status = s.run(['status', '--json']);
  t.equal(status.code, 0, 'status does not fail on it');
  t.equal(JSON.parse(status.stdout).problems.length, 1, 'status lists it');
  t.equal(runHook(s, 'daemon', ['-', 'start', '-', 'start'], { env: { QEMU_MODWATCH_DAEMON: 'libvirtd' } }).code, 0);
  t.equal(JSON.parse(fs.readFileSync(record('libvirtd'), 'utf8')).daemon, 'libvirtd', 'the next run replaces it');
});
