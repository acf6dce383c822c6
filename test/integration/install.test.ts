import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { inCI } from '../fixtures/ci';
import { BARE_ENV } from '../fixtures/hooks';
import { bindRealProc } from '../fixtures/guests';
import { EXE, Sysroot, sysroot, TOP } from '../fixtures/sysroot';

// `install` and `uninstall` into sysroots.

const PREFIX_EXE = '/usr/libexec/qemu-modwatch/qemu-modwatch';
const manifestOf = (s: Sysroot) =>
  JSON.parse(fs.readFileSync(s.host('/var/lib/qemu-modwatch/install-manifest.json'), 'utf8'));
const mode = (p: string) => fs.statSync(p).mode & 0o7777;

/** A cache entry written by a libvirt of this version (libvirt records it as selfvers). */
function libvirtVersion(s: Sysroot, selfvers: number): void {
  const name = s.addCacheEntry('/usr/bin/qemu-system-x86_64');
  const file = path.join(s.cacheDir(), name);
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/<selfvers>\d+</, `<selfvers>${selfvers}<`));
}

t.test('install on a libvirt with drop-in directories', async (t) => {
  const s = sysroot(t, new Sysroot());
  const r = s.run(['install']);
  t.equal(r.code, 0, r.stderr);
  t.ok(fs.readFileSync(s.host(PREFIX_EXE)).equals(fs.readFileSync(EXE)), 'the executable itself');
  t.equal(mode(s.host(PREFIX_EXE)), 0o755);
  for (const driver of ['qemu', 'daemon']) {
    const d = s.host(`/etc/libvirt/hooks/${driver}.d/50-qemu-modwatch`);
    t.equal(mode(d), 0o755, `${driver} dispatcher`);
    const text = fs.readFileSync(d, 'utf8');
    t.match(text, new RegExp(`^QEMU_MODWATCH=${PREFIX_EXE}$`, 'm'));
    t.equal(
      text,
      fs.readFileSync(path.join(TOP, `hooks/${driver}.d/50-qemu-modwatch`), 'utf8'),
      'as shipped (default prefix)',
    );
  }
  t.equal(fs.readlinkSync(s.host('/usr/sbin/qemu-modwatch')), PREFIX_EXE);
  t.equal(
    fs.readFileSync(s.host('/etc/qemu-modwatch.conf'), 'utf8'),
    fs.readFileSync(path.join(TOP, 'hooks/qemu-modwatch.conf'), 'utf8'),
  );
  const m = manifestOf(s);
  t.equal(m.layout, 'dropin');
  t.same(m.files.map((f: any) => f.path).sort(), [
    '/etc/libvirt/hooks/daemon.d/50-qemu-modwatch',
    '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch',
    PREFIX_EXE,
  ]);
  t.match(
    r.stdout,
    /qemu and daemon had none, so where the system under \S+ runs, reload it: systemctl reload libvirtd$/m,
  );

  // Idempotent.
  const before = fs.statSync(s.host(PREFIX_EXE)).mtimeMs;
  const again = s.run(['install']);
  t.equal(again.code, 0);
  t.match(again.stdout, /already installed; nothing changed/);
  t.notMatch(again.stdout, /reload/);
  t.equal(fs.statSync(s.host(PREFIX_EXE)).mtimeMs, before);
});

t.test('an existing config is never overwritten; modular daemons get their reload command', async (t) => {
  const s = sysroot(t, new Sysroot());
  s.writeConfig('[policy]\non_change = warn\n');
  s.write('/run/libvirt/virtqemud-sock', '');
  s.write('/etc/libvirt/hooks/qemu.d/10-admin', '#!/bin/sh\nexit 0\n', 0o755);
  const r = s.run(['install']);
  t.match(r.stdout, /kept {6}\/etc\/qemu-modwatch.conf \(exists\)/);
  t.equal(fs.readFileSync(s.host('/etc/qemu-modwatch.conf'), 'utf8'), '[policy]\non_change = warn\n');
  t.match(r.stdout, /daemon had none, so where the system under \S+ runs, reload it: systemctl reload virtqemud$/m);
  t.notMatch(r.stdout, /qemu and daemon had none/, 'qemu already had a hook');
});

t.test('--dry-run changes nothing; --prefix moves the executable', async (t) => {
  const s = sysroot(t, new Sysroot());
  const dry = s.run(['install', '--dry-run']);
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /would install /);
  t.same(fs.readdirSync(s.root), [], 'nothing written');
  const r = s.run(['install', '--prefix', '/opt/qemu-modwatch']);
  t.equal(r.code, 0, r.stderr);
  t.ok(fs.existsSync(s.host('/opt/qemu-modwatch/qemu-modwatch')));
  t.match(
    fs.readFileSync(s.host('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch'), 'utf8'),
    /^QEMU_MODWATCH=\/opt\/qemu-modwatch\/qemu-modwatch$/m,
  );
});

t.test('libvirt before 6.5: the single hook files', async (t) => {
  const s = sysroot(t, new Sysroot());
  libvirtVersion(s, 6004000);
  const r = s.run(['install']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /libvirt 6\.4\.0 \(from its capabilities cache\): single hook files/);
  for (const driver of ['qemu', 'daemon']) {
    t.match(fs.readFileSync(s.host(`/etc/libvirt/hooks/${driver}`), 'utf8'), /^QEMU_MODWATCH=/m);
  }
  t.notOk(fs.existsSync(s.host('/etc/libvirt/hooks/qemu.d')));
  const again = s.run(['install']).stdout;
  t.match(again, /already installed/);
  t.match(again, /single hook files .* as installed before/);
});

t.test("an admin's own single hook: refused, then chained with --chain", async (t) => {
  const s = sysroot(t, new Sysroot());
  libvirtVersion(s, 6000000);
  const seen = s.host('/tmp/admin-hook-saw');
  s.mkdir('/tmp');
  const admin = `#!/bin/sh\necho "$*" >> ${seen}\ncat >> ${seen}\necho "admin stdout"\nexit \${ADMIN_EXIT:-0}\n`;
  s.write('/etc/libvirt/hooks/qemu', admin, 0o755);
  const refused = s.run(['install']);
  t.equal(refused.code, 1);
  t.match(
    refused.stderr,
    /^qemu-modwatch: \/etc\/libvirt\/hooks\/qemu exists and is not qemu-modwatch's; .*install --chain/,
  );
  t.equal(fs.readFileSync(s.host('/etc/libvirt/hooks/qemu'), 'utf8'), admin, 'untouched');
  t.notOk(fs.existsSync(s.host(PREFIX_EXE)));

  const r = s.run(['install', '--chain']);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.readFileSync(s.host('/etc/libvirt/hooks/qemu.before-qemu-modwatch'), 'utf8'), admin);
  const wrapper = s.host('/etc/libvirt/hooks/qemu');
  // The wrapper and our dispatcher name system paths; run copies that point into the sysroot.
  const ours = fs
    .readFileSync(s.host('/usr/libexec/qemu-modwatch/hook-qemu'), 'utf8')
    .replace(/^QEMU_MODWATCH=.*$/m, `QEMU_MODWATCH=${EXE}`)
    .replace(/^QEMU_MODWATCH_OPTS=.*$/m, `QEMU_MODWATCH_OPTS="--root ${s.root}"`);
  const oursLocal = s.write('/tmp/ours-under-test', ours, 0o755);
  const text = fs
    .readFileSync(wrapper, 'utf8')
    .replace(/^chained=\//m, `chained=${s.root}/`)
    .replace(/^ours=.*$/m, `ours=${oursLocal}`);
  const local = s.write('/tmp/wrapper-under-test', text, 0o755);
  const xml = '<domain><name>vm</name></domain>';
  const ok = spawnSync(local, ['vm', 'migrate', 'begin', '-'], {
    input: xml,
    encoding: 'utf8',
    env: { ...BARE_ENV, QEMU_MODWATCH_ROOT: s.root },
  });
  t.equal(ok.status, 0, ok.stderr);
  t.equal(ok.stdout, 'admin stdout\n', "the admin hook's stdout, unchanged, and nothing of ours");
  t.equal(fs.readFileSync(seen, 'utf8'), `vm migrate begin -\n${xml}`, 'same argv and stdin');
  t.ok(fs.existsSync(s.statePath()), 'then ours ran (it recorded a first baseline)');
  const failing = spawnSync(local, ['vm', 'prepare', 'begin', '-'], {
    input: xml,
    encoding: 'utf8',
    env: { ...BARE_ENV, ADMIN_EXIT: '7' },
  });
  t.equal(failing.status, 7, 'its exit status is kept');

  t.match(s.run(['install', '--chain']).stdout, /already installed/);

  const u = s.run(['uninstall']);
  t.equal(u.code, 0, u.stderr);
  t.equal(fs.readFileSync(s.host('/etc/libvirt/hooks/qemu'), 'utf8'), admin, 'restored');
  t.notOk(fs.existsSync(s.host('/etc/libvirt/hooks/qemu.before-qemu-modwatch')));
});

t.test('uninstall removes exactly what install placed; --purge also config and state', async (t) => {
  const s = sysroot(t, new Sysroot());
  s.write('/etc/libvirt/hooks/qemu.d/10-admin', '#!/bin/sh\n', 0o755);
  s.run(['install']);
  s.run(['accept']);
  fs.appendFileSync(s.host('/etc/libvirt/hooks/daemon.d/50-qemu-modwatch'), '# local change\n');
  const u = s.run(['uninstall']);
  t.equal(u.code, 0, u.stderr);
  t.match(u.stdout, /left {6}\/etc\/libvirt\/hooks\/daemon.d\/50-qemu-modwatch \(changed since install\)/);
  t.notOk(fs.existsSync(s.host(PREFIX_EXE)));
  t.notOk(fs.existsSync(s.host('/usr/libexec/qemu-modwatch')), 'its directory too, once empty');
  t.notOk(fs.existsSync(s.host('/usr/sbin/qemu-modwatch')));
  t.notOk(fs.existsSync(s.host('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch')));
  t.ok(fs.existsSync(s.host('/etc/libvirt/hooks/qemu.d/10-admin')), "the admin's own drop-in stays");
  t.ok(fs.existsSync(s.host('/etc/qemu-modwatch.conf')), 'config kept');
  t.ok(fs.existsSync(s.statePath()), 'state kept');
  s.run(['install']);
  const p = s.run(['uninstall', '--purge']);
  t.equal(p.code, 0, p.stderr);
  t.notOk(fs.existsSync(s.host('/etc/qemu-modwatch.conf')));
  t.notOk(fs.existsSync(s.host('/var/lib/qemu-modwatch')));
});

t.test("an image's libvirt version comes from its dpkg database: 6.0 gets the single hook files", async (t) => {
  const s = sysroot(t, new Sysroot());
  // As Ubuntu 20.04 has it (its libvirt runs no .d drop-ins); an older, removed libvirt0 does not count.
  s.write(
    '/var/lib/dpkg/status',
    [
      'Package: libvirt0\nStatus: deinstall ok config-files\nVersion: 9.0.0-4\n',
      'Package: libvirt-daemon\nStatus: install ok installed\nArchitecture: amd64\nVersion: 6.0.0-0ubuntu8\n',
      'Package: qemu-system-x86\nStatus: install ok installed\nVersion: 1:4.2-3ubuntu6\n',
    ].join('\n'),
  );
  const admin = '#!/bin/sh\nexit 0\n';
  s.write('/etc/libvirt/hooks/qemu', admin, 0o755);
  const refused = s.run(['install']);
  t.equal(refused.code, 1, 'its own single hook is not replaced without --chain');
  const r = s.run(['install', '--chain']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /libvirt 6\.0\.0 \(libvirt-daemon 6\.0\.0-0ubuntu8 in its dpkg database\): single hook files/);
  t.notOk(fs.existsSync(s.host('/etc/libvirt/hooks/qemu.d')), 'no drop-in directory libvirt 6.0 would never run');
  t.equal(
    fs.readFileSync(s.host('/etc/libvirt/hooks/qemu.before-qemu-modwatch'), 'utf8'),
    admin,
    "the admin's hook kept, and run first",
  );
});

t.test(
  "an image without a dpkg database: the version from libvirt's library, here a real libvirt0 package",
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-libvirt0-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const dl = spawnSync('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', 'libvirt0'], {
      cwd: dir,
      encoding: 'utf8',
    });
    const deb = fs.readdirSync(dir).find((n) => n.endsWith('.deb'));
    if (dl.status !== 0 || !deb) {
      if (inCI()) t.fail(`apt-get download libvirt0 failed under CI: ${dl.stderr}`);
      else t.comment(`skipped: apt-get download libvirt0: ${dl.stderr.trim()}`);
      return;
    }
    const s = sysroot(t, new Sysroot());
    t.equal(spawnSync('dpkg-deb', ['-x', path.join(dir, deb), s.root]).status, 0, 'unpacked, not installed');
    const upstream = /^(?:\d+:)?(\d+\.\d+\.\d+)/.exec(
      spawnSync('dpkg-deb', ['-f', path.join(dir, deb), 'Version'], { encoding: 'utf8' }).stdout.trim(),
    )?.[1];
    const r = s.run(['install', '--dry-run']);
    t.equal(r.code, 0, r.stderr);
    t.match(
      r.stdout,
      new RegExp(
        `libvirt ${upstream!.replace(/\./g, '\\.')} \\(from ` +
          `/usr/lib/x86_64-linux-gnu/libvirt\\.so\\.0\\.\\d+\\.\\d+\\): drop-ins`,
      ),
      `the package says ${upstream}`,
    );
  },
);

t.test('install with a libvirtd running: the reload command that works here, by its PID', async (t) => {
  const s = sysroot(t, new Sysroot());
  s.write('/proc/uptime', '1000.00 1900.00\n');
  s.write('/proc/5150/stat', `5150 (libvirtd) S 1 5150 5150 0 -1 4194560 ${'0 '.repeat(12)}100 0\n`);
  // In systemd's libvirtd.service, but no /bin/kill for its reload: the unit's reload would fail.
  s.write('/proc/5150/cgroup', '0::/system.slice/libvirtd.service\n');
  s.mkdir('/run/systemd/system');
  const r = s.run(['install']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /qemu and daemon had none, so reload it now: kill -HUP 5150$/m);
  s.write('/bin/kill', '#!/bin/sh\n', 0o755);
  s.run(['uninstall']);
  t.match(
    s.run(['install']).stdout,
    /so reload it now: systemctl reload libvirtd\.service$/m,
    'with /bin/kill: its unit',
  );
});

/** A root libvirtd, PID 5150, that started `agoMs` before the check that reads it (/proc under --root). */
function libvirtdStarted(s: Sysroot, agoMs: number): void {
  s.write('/proc/uptime', '100000.00 1.00\n');
  const ticks = Math.round((100_000_000 - agoMs) / 10);
  s.write('/proc/5150/stat', `5150 (libvirtd) S 1 5150 5150 0 -1 4194560 ${'0 '.repeat(12)}${ticks} 0\n`);
}
const daemonVerdict = (s: Sysroot) =>
  (JSON.parse(s.run(['status', '--json']).stdout).daemons as { pid: number; hooks: string; why: string }[]).find(
    (d) => d.pid === 5150,
  );
const notLoaded = (s: Sysroot) =>
  s.json().report.findings.filter((f: { code: string }) => f.code === 'hooks-not-loaded') as { message: string }[];
const RECORD = '/var/lib/qemu-modwatch/hooks-installed-after';
const DISPATCHER = '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch';
const recordMs = (s: Sysroot) => Number(fs.readFileSync(s.host(RECORD), 'utf8')) * 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const runOfOurDaemonHook = (s: Sysroot, atMs: number) =>
  s.write(
    '/var/lib/qemu-modwatch/daemon-hook.libvirtd.json',
    JSON.stringify({ schema: 1, daemon: 'libvirtd', pid: 5150, at: new Date(atMs).toISOString() }) + '\n',
  );

t.test('install where none of ours is: a time before they arrive, kept by upgrades, gone with them', async (t) => {
  const s = sysroot(t, new Sysroot());
  libvirtdStarted(s, 600_000);
  const before = Date.now();
  t.equal(s.run(['install']).code, 0);
  t.ok(recordMs(s) >= before - 1 && recordMs(s) <= Date.now(), `written at the install: ${recordMs(s)}`);
  const text = fs.readFileSync(s.host(RECORD), 'utf8');
  t.equal(notLoaded(s).length, 1, 'started before it, no run of our daemon hook: said');
  await sleep(20);
  t.equal(s.run(['install', '--prefix', '/usr/libexec/qmw-2']).code, 0, 'an upgrade (other dispatchers)');
  t.equal(fs.readFileSync(s.host(RECORD), 'utf8'), text, 'ours were there: the record stays as it was');

  // It reloads (our daemon hook runs in it), then an admin edits and chmods the dispatcher (a conffile).
  runOfOurDaemonHook(s, Date.now());
  await sleep(20);
  fs.appendFileSync(s.host(DISPATCHER), '# local change\n');
  fs.chmodSync(s.host(DISPATCHER), 0o750);
  t.same(notLoaded(s), [], 'the edit after the reload changes nothing: not said');
  t.equal(daemonVerdict(s)?.hooks, 'loaded', `status: ${daemonVerdict(s)?.why}`);

  fs.writeFileSync(s.host(RECORD), 'yesterday\n');
  t.same(
    s
      .json()
      .report.findings.filter((f: { code: string }) => f.code === 'corrupt-state')
      .map((f: any) => f.message),
    [
      `${RECORD} is not a record of when qemu-modwatch's hooks were installed; treated as no record: a daemon that ` +
        'started before the hooks last changed is cannot-tell until it reloads (remove the file and reload libvirt)',
    ],
    'a damaged record: one line, naming the file and what to do',
  );
  t.equal(daemonVerdict(s)?.hooks, 'loaded', 'no record, and a run of this version in this PID: loaded');
  fs.rmSync(s.host('/var/lib/qemu-modwatch/daemon-hook.libvirtd.json'));
  t.equal(daemonVerdict(s)?.hooks, 'cannot-tell', 'no record, no run: cannot tell, not a guess');
});

t.test('an upgrade from a version that kept no record: cannot tell, not a guess', async (t) => {
  const s = sysroot(t, new Sysroot());
  t.equal(s.run(['install']).code, 0);
  fs.rmSync(s.host(RECORD));
  libvirtdStarted(s, 600_000);
  t.equal(s.run(['install', '--prefix', '/usr/libexec/qmw-2']).code, 0);
  t.notOk(fs.existsSync(s.host(RECORD)), 'ours were there: none is made up');
  t.same(notLoaded(s), []);
  t.match(daemonVerdict(s)?.why ?? '', /no usable record says when the hooks were installed/);
});

t.test('uninstall, then install again: an old run of the daemon hook in the same PID does not count', async (t) => {
  const s = sysroot(t, new Sysroot());
  libvirtdStarted(s, 600_000);
  t.equal(s.run(['install']).code, 0);
  t.equal(notLoaded(s).length, 1, 'started before the install: said');
  runOfOurDaemonHook(s, Date.now());
  t.same(notLoaded(s), [], 'after its reload: not said');
  t.equal(s.run(['uninstall']).code, 0);
  t.notOk(fs.existsSync(s.host(RECORD)), 'uninstall: the hooks are gone, and the record with them');
  t.ok(fs.existsSync(s.host('/var/lib/qemu-modwatch/daemon-hook.libvirtd.json')), 'the state stays');
  await sleep(20);
  t.equal(s.run(['install']).code, 0, 'installed again');
  const again = notLoaded(s);
  t.equal(again.length, 1, `--check says it again: ${again[0]?.message}`);
  t.equal(daemonVerdict(s)?.hooks, 'not-loaded', 'status too');
});

t.test('uninstall leaves a changed dispatcher: the hooks are still there, the record stays', async (t) => {
  const s = sysroot(t, new Sysroot());
  t.equal(s.run(['install', '--prefix', '/usr/libexec/qmw-1']).code, 0);
  const first = fs.readFileSync(s.host(RECORD), 'utf8');
  fs.appendFileSync(s.host(DISPATCHER), '# local change\n');
  t.match(s.run(['uninstall']).stdout, /left {6}\/etc\/libvirt\/hooks\/qemu\.d\/50-qemu-modwatch/);
  t.equal(fs.readFileSync(s.host(RECORD), 'utf8'), first, 'kept');
  fs.rmSync(s.host(DISPATCHER));
  await sleep(20);
  t.equal(s.run(['install']).code, 0);
  t.not(fs.readFileSync(s.host(RECORD), 'utf8'), first, 'none of ours there when install ran: a new time');
});

t.test("ours is the marker line: an admin's hook that runs qemu-modwatch, a copy of ours, are others'", async (t) => {
  const s = sysroot(t, new Sysroot());
  s.write('/etc/libvirt/hooks/qemu.d/10-admin', '#!/bin/sh\n/usr/sbin/qemu-modwatch refresh\n', 0o755);
  await sleep(2500);
  libvirtdStarted(s, 100);
  t.equal(s.run(['install']).code, 0);
  t.ok(fs.existsSync(s.host(RECORD)), 'none of ours was there: install wrote the record');
  const v = daemonVerdict(s);
  t.equal(v?.hooks, 'loaded', `another qemu hook before its start: ${v?.why}`);
  t.match(v?.why ?? '', /another qemu hook was there when it started/, "the admin's, not ours");
  // Only copies of ours left (an upgrade's .dpkg-old): none of ours is there, nothing is judged.
  fs.renameSync(s.host(DISPATCHER), s.host(`${DISPATCHER}.dpkg-old`));
  t.equal(daemonVerdict(s), undefined, 'no qemu hook of ours: no verdict');
  t.equal(s.run(['uninstall']).code, 0);
});

t.test("install --chain: the admin's hook counts from its ctime before the move", async (t) => {
  const s = sysroot(t, new Sysroot());
  libvirtVersion(s, 6000000);
  s.write('/etc/libvirt/hooks/qemu', '#!/bin/sh\nexit 0\n', 0o755);
  const placed = fs.statSync(s.host('/etc/libvirt/hooks/qemu')).ctimeMs;
  await sleep(2500);
  libvirtdStarted(s, 100);
  t.equal(s.run(['install', '--chain']).code, 0);
  const chained = manifestOf(s).chained as { hook: string; ctimeMs?: number }[];
  t.equal(Math.floor(chained[0]?.ctimeMs ?? 0), Math.floor(placed), 'the manifest keeps its ctime from before');
  const v = daemonVerdict(s);
  t.equal(v?.hooks, 'loaded', `the admin's hook was there at its start: ${v?.why}`);
  // A manifest of before: only the ctime of the move is known, after the start: no claim either way.
  const m = manifestOf(s);
  delete m.chained[0].ctimeMs;
  fs.writeFileSync(s.host('/var/lib/qemu-modwatch/install-manifest.json'), JSON.stringify(m));
  t.equal(daemonVerdict(s)?.hooks, 'cannot-tell');
});

t.test('install --chain: the wrapper tells the daemon hook the PID of the daemon that ran it', async (t) => {
  const s = sysroot(t, new Sysroot());
  libvirtVersion(s, 6000000);
  for (const d of ['qemu', 'daemon']) s.write(`/etc/libvirt/hooks/${d}`, '#!/bin/sh\nexit 0\n', 0o755);
  t.equal(s.run(['install', '--chain']).code, 0);
  // Copies of the wrapper and dispatcher that point into the sysroot; a shell named libvirtd runs the wrapper.
  const ours = fs
    .readFileSync(s.host('/usr/libexec/qemu-modwatch/hook-daemon'), 'utf8')
    .replace(/^QEMU_MODWATCH=.*$/m, `QEMU_MODWATCH=${EXE}`)
    .replace(/^QEMU_MODWATCH_OPTS=.*$/m, `QEMU_MODWATCH_OPTS="--root ${s.root}"`);
  const oursLocal = s.write('/tmp/ours-under-test', ours, 0o755);
  const wrapper = fs
    .readFileSync(s.host('/etc/libvirt/hooks/daemon'), 'utf8')
    .replace(/^chained=\//m, `chained=${s.root}/`)
    .replace(/^ours=.*$/m, `ours=${oursLocal}`);
  const local = s.write('/tmp/wrapper-under-test', wrapper, 0o755);
  const daemon = s.host('/tmp/bin/libvirtd');
  fs.mkdirSync(path.dirname(daemon), { recursive: true });
  fs.copyFileSync('/bin/sh', daemon);
  fs.chmodSync(daemon, 0o755);
  // Not the last command: the shell does not exec the wrapper, and stays its parent.
  const r = spawnSync(daemon, ['-c', `echo $$; "$0" - reload begin SIGHUP </dev/null; exit $?`, local], {
    encoding: 'utf8',
    env: BARE_ENV,
  });
  t.equal(r.status, 0, r.stderr);
  const rec = JSON.parse(fs.readFileSync(s.host('/var/lib/qemu-modwatch/daemon-hook.libvirtd.json'), 'utf8'));
  t.same([rec.daemon, rec.pid], ['libvirtd', Number(r.stdout.trim())], "the record names the daemon's PID");
});

t.test(
  "--root over a real procfs: the daemons are this machine's, cannot tell, and install names none of them",
  {
    skip:
      process.getuid?.() !== 0 || spawnSync('unshare', ['-m', 'true']).status !== 0
        ? 'needs root and unshare -m'
        : false,
  },
  async (t) => {
    const s = sysroot(t, new Sysroot());
    bindRealProc(s);
    // A stand-in root libvirtd of this machine (sleep, named libvirtd), started before anything of the root.
    const fake = s.host('/tmp/bin/libvirtd');
    fs.mkdirSync(path.dirname(fake), { recursive: true });
    fs.copyFileSync('/bin/sleep', fake);
    fs.chmodSync(fake, 0o755);
    const daemon = spawn(fake, ['60'], { stdio: 'ignore' });
    t.teardown(() => void daemon.kill('SIGKILL'));
    await sleep(2500);
    const r = s.run(['install']);
    t.equal(r.code, 0, r.stderr);
    t.notMatch(r.stdout, new RegExp(`\\b${daemon.pid}\\b`), 'install names no process of this machine');
    t.match(r.stdout, /so where the system under \S+ runs, reload it: systemctl reload libvirtd$/m);
    const v = (JSON.parse(s.run(['status', '--json']).stdout).daemons as any[]).find((d) => d.pid === daemon.pid);
    t.same(
      [v?.hooks, v?.why],
      ['cannot-tell', 'it is a process of this machine, and under --root it cannot be seen which hooks it reads'],
    );
    t.same(notLoaded(s), [], 'no hooks-not-loaded from another system');
  },
);
