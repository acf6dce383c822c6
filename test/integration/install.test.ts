import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { inCI } from '../fixtures/ci';
import { BARE_ENV } from '../fixtures/hooks';
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
  t.match(r.stdout, /qemu and daemon had none, so reload it now: systemctl reload libvirtd/);

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
  t.match(r.stdout, /daemon had none, so reload it now: systemctl reload virtqemud/);
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
  t.match(s.run(['install']).stdout, /so reload it now: systemctl reload libvirtd$/m, 'with /bin/kill: its unit');
});
