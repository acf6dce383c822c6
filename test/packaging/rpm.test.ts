import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import t, { type Test } from 'tap';
import { inCI } from '../fixtures/ci';
import { cannotRun, OverlayHost, type RunResult } from './overlay-host';
import {
  DUMMY,
  EXE_FROM,
  fakeLibvirtd,
  EXE,
  KINDS,
  type Kind,
  NODE_FLOOR,
  missingBuild,
  neverInstalled,
  refusesPartialBuild,
  RepoSnapshot,
  shown,
  shq,
  STATE,
  STATE_DIR,
  top,
  version,
} from './package-kit';

// The RPMs: both kinds built from build/rpm/qemu-modwatch.spec by
// build/package-rpm.mjs, their files, scriptlets and file triggers read back
// with rpm -qp; then each installed with this host's rpm (Debian's) in a
// copy-on-write namespace (overlay-host.ts), its file trigger fired by a
// dummy module package, and erased, leaving nothing behind.

const snapshot = new RepoSnapshot();
const ARCH = (
  { x64: 'x86_64', arm64: 'aarch64', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>
)[process.arch];

interface Expect {
  mode: string;
  from?: string;
  link?: string;
  config?: boolean;
}

/** What the RPM of a kind installs: the same files, the executable its own. */
function expected(kind: Kind = 'self-contained'): Record<string, Expect> {
  return {
    [EXE]: { mode: '-rwxr-xr-x', from: EXE_FROM[kind] },
    '/usr/libexec/qemu-modwatch': { mode: 'drwxr-xr-x' },
    '/usr/sbin/qemu-modwatch': { mode: 'lrwxrwxrwx', link: EXE },
    '/etc/libvirt/hooks/qemu.d': { mode: 'drwxr-xr-x' },
    '/etc/libvirt/hooks/daemon.d': { mode: 'drwxr-xr-x' },
    '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch': {
      mode: '-rwxr-xr-x',
      from: 'hooks/qemu.d/50-qemu-modwatch',
      config: true,
    },
    '/etc/libvirt/hooks/daemon.d/50-qemu-modwatch': {
      mode: '-rwxr-xr-x',
      from: 'hooks/daemon.d/50-qemu-modwatch',
      config: true,
    },
    '/etc/qemu-modwatch.conf': { mode: '-rw-r--r--', from: 'hooks/qemu-modwatch.conf', config: true },
    '/etc/dnf/libdnf5-plugins/actions.d/qemu-modwatch.actions': {
      mode: '-rw-r--r--',
      from: 'hooks/dnf5/qemu-modwatch.actions',
      config: true,
    },
    '/usr/lib/systemd/system/qemu-modwatch.path': { mode: '-rw-r--r--', from: 'hooks/systemd/qemu-modwatch.path' },
    '/usr/lib/systemd/system/qemu-modwatch.service': {
      mode: '-rw-r--r--',
      from: 'hooks/systemd/qemu-modwatch.service',
    },
    '/usr/lib/systemd/system/qemu-modwatch-textfile.service': {
      mode: '-rw-r--r--',
      from: 'hooks/systemd/qemu-modwatch-textfile.service',
    },
    '/usr/lib/systemd/system/qemu-modwatch-textfile.timer': {
      mode: '-rw-r--r--',
      from: 'hooks/systemd/qemu-modwatch-textfile.timer',
    },
    '/usr/lib/systemd/system-preset/50-qemu-modwatch.preset': {
      mode: '-rw-r--r--',
      from: 'hooks/systemd/50-qemu-modwatch.preset',
    },
    '/usr/share/qemu-modwatch': { mode: 'drwxr-xr-x' },
    '/usr/share/qemu-modwatch/prometheus': { mode: 'drwxr-xr-x' },
    '/usr/share/qemu-modwatch/prometheus/qemu-modwatch.rules.yml': {
      mode: '-rw-r--r--',
      from: 'hooks/prometheus/qemu-modwatch.rules.yml',
    },
    '/usr/share/icinga2/include/plugins-contrib.d/qemu-modwatch.conf': {
      mode: '-rw-r--r--',
      from: 'hooks/icinga2/qemu-modwatch.conf',
    },
    '/usr/share/man/man8/qemu-modwatch.8.gz': { mode: '-rw-r--r--' },
    '/usr/share/bash-completion/completions/qemu-modwatch': {
      mode: '-rw-r--r--',
      from: 'dist/qemu-modwatch.bash-completion',
    },
    '/usr/share/licenses/qemu-modwatch': { mode: 'drwxr-xr-x' },
    '/usr/share/licenses/qemu-modwatch/copyright': { mode: '-rw-r--r--', from: 'build/deb/copyright' },
  };
}

function skipReason(): string | null {
  if (!ARCH) return `no RPM architecture for ${process.arch}`;
  for (const tool of ['rpm', 'rpmbuild']) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).status !== 0)
      return `${tool} not found (Debian package rpm)`;
  }
  return missingBuild();
}

const reason = skipReason();
if (reason) {
  if (inCI()) t.fail(`the RPM tests cannot run although CI is set: ${reason}`);
  else t.comment(`RPM tests skipped: ${reason}`);
}
// Installing needs the namespace; reading the package does not.
const nsReason = reason ?? cannotRun(['node']);
if (!reason && nsReason) {
  if (inCI()) t.fail(`the RPM install test cannot run although CI is set: ${nsReason}`);
  else t.comment(`RPM install test skipped: ${nsReason}`);
}

const ov = reason ? null : new OverlayHost('qemu-modwatch-rpm');
t.teardown(() => ov?.cleanup());
const rpmFiles: Record<Kind, string> = { 'self-contained': '', node: '' };
/** The module directory of this architecture, which both kinds' file triggers watch. */
let trigger = '';

// The host's own rpm calls (queries of a package file, an --eval, the dummy
// package's build) open a database too, by default Debian's ~/.rpmdb: give
// them one of their own, so that the host's stays as it was.
const HOST_DB = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-rpmdb-'));
t.teardown(() => fs.rmSync(HOST_DB, { recursive: true, force: true }));
const DBPATH = ['--dbpath', HOST_DB];

const q = (file: string, ...args: string[]) => {
  const r = spawnSync('rpm', [...DBPATH, '-qp', ...args, file], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`rpm -qp ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

t.test('no man page or completion from the build: a clear refusal', { skip: reason || false }, async (t) => {
  refusesPartialBuild(t, 'package-rpm.mjs');
});

t.test('build the RPMs', { skip: reason || false }, async (t) => {
  const o = ov!;
  const out = o.scratch('out');
  snapshot.take(KINDS.flatMap((k) => Object.values(expected(k)).flatMap((e) => (e.from ? [e.from] : []))));
  const r = spawnSync(
    process.execPath,
    [path.join(top, 'build/package-rpm.mjs'), '--out', out, '--topdir', o.scratch('topdir'), '--fast'],
    {
      encoding: 'utf8',
      timeout: 300_000,
    },
  );
  t.equal(r.status, 0, `package-rpm.mjs exits 0\n${r.stderr}`);
  const named = (arch: string) => path.join(out, `qemu-modwatch-${version.replace(/-/g, '~')}-1.${arch}.rpm`);
  rpmFiles['self-contained'] = named(ARCH!);
  rpmFiles.node = named('noarch');
  t.same(
    r.stdout.trim().split('\n'),
    KINDS.map((k) => rpmFiles[k]),
    'prints the path of each RPM, name-version-release.arch.rpm',
  );
  for (const kind of KINDS) t.ok(fs.existsSync(rpmFiles[kind]), `the ${kind} RPM exists`);
});

for (const kind of KINDS) {
  t.test(`what the ${kind} RPM holds`, { skip: reason || false }, async (t) => {
    await holds(t, kind);
  });
}

t.test('the kinds differ only in the executable and what follows from it', { skip: reason || false }, async (t) => {
  if (!KINDS.every((k) => fs.existsSync(rpmFiles[k]))) return t.fail('the build step failed');
  const listing = (file: string) =>
    q(file, '--qf', '[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEFLAGS:fflags}\t%{FILELINKTOS}\n]');
  t.equal(listing(rpmFiles.node), listing(rpmFiles['self-contained']), 'the same files, modes, flags and links');
  const scripts = (file: string) => q(file, '--scripts');
  t.equal(scripts(rpmFiles.node), scripts(rpmFiles['self-contained']), 'the same scriptlets');
  const own = (file: string) =>
    q(file, '--qf', '[%{FILENAMES} %{FILEDIGESTS}\n]')
      .split('\n')
      .filter((l) => l.startsWith(`${EXE} `));
  t.not(own(rpmFiles.node)[0], own(rpmFiles['self-contained'])[0], 'but not the same executable');
});

async function holds(t: Test, kind: Kind): Promise<void> {
  const rpmFile = rpmFiles[kind];
  if (!fs.existsSync(rpmFile)) return void t.fail('the build step failed');
  const arch = kind === 'node' ? 'noarch' : ARCH;
  t.equal(
    q(rpmFile, '--qf', '%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}'),
    `qemu-modwatch ${version} 1 ${arch} MIT`,
  );

  const rows = q(
    rpmFile,
    '--qf',
    '[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEFLAGS:fflags}\t' +
      '%{FILEUSERNAME}:%{FILEGROUPNAME}\t%{FILELINKTOS}\t%{FILEDIGESTS}\n]',
  )
    .trim()
    .split('\n')
    .map((l) => l.split('\t'));
  const files = Object.fromEntries(rows.map(([name, ...rest]) => [name!, rest]));
  const want = expected(kind);
  t.same(Object.keys(files).sort(), Object.keys(want).sort(), 'rpm -qlp lists exactly the expected files');
  t.same(q(rpmFile, '-l').trim().split('\n').sort(), Object.keys(want).sort(), 'rpm -qlp agrees');
  for (const [p, e] of Object.entries(want)) {
    const row = files[p];
    if (!row) continue;
    const [mode, flags, owner, link, digest] = row;
    t.equal(mode, e.mode, `${p} mode ${e.mode}`);
    t.equal(owner, 'root:root', `${p} owned by root`);
    if (e.config) t.equal(flags, 'cn', `${p} is %config(noreplace)`);
    else t.notMatch(flags ?? '', /c/, `${p} is not a config file`);
    if (e.link) t.equal(link, e.link, `${p} -> ${e.link}`);
    if (e.from) t.equal(digest, snapshot.sha(e.from), `${p} has the content of ${e.from}`);
  }

  const reqs = q(rpmFile, '-R');
  if (kind === 'self-contained') {
    t.match(reqs, /^libc\.so\.6\(GLIBC_[0-9.]+\)/m, 'requires generated from the executable: libc');
  } else {
    t.match(reqs, new RegExp(`^nodejs >= ${NODE_FLOOR.replace(/[.]/g, '\\.')}$`, 'm'), 'Requires: nodejs >= floor');
    t.match(reqs, /^\/usr\/bin\/node$/m, "the #! line's interpreter, generated by rpm");
    t.notMatch(reqs, /\.so\b/, 'no shared library: the distro node brings its own');
  }
  t.notMatch(reqs, /^systemd\b/m, 'no hard dependency on systemd: every scriptlet copes without it');

  const scripts = q(rpmFile, '--scripts', '--filetriggers');
  const sections = scripts
    .split(/^(?=\S.* scriptlet \(using \/bin\/sh\))/m)
    .filter((s) => /scriptlet/.test(s.split('\n')[0]!));
  const byName = Object.fromEntries(sections.map((s) => [s.split(' ')[0]!, s]));
  t.same(
    Object.keys(byName).sort(),
    ['postinstall', 'postuninstall', 'preinstall', 'preuninstall', 'transfiletriggerin', 'transfiletriggerpostun'],
    'scriptlets and file triggers',
  );
  const libdir = spawnSync('rpm', [...DBPATH, '--target', ARCH!, '--eval', '%{_libdir}'], {
    encoding: 'utf8',
  }).stdout.trim();
  // A noarch package installs on any architecture: lib64 on Fedora's 64-bit ones, lib on the others.
  const dirs = kind === 'node' ? ['/usr/lib64/qemu', '/usr/lib/qemu'] : [`${libdir}/qemu`];
  for (const tr of ['transfiletriggerin', 'transfiletriggerpostun']) {
    const mine = sections.filter((s) => s.startsWith(`${tr} `));
    t.same(
      mine.map((s) => s.split('\n')[0]),
      dirs.map((d) => `${tr} scriptlet (using /bin/sh) -- ${d}`),
      `${tr}: one on each of ${dirs.join(', ')}`,
    );
    for (const m of mine) t.match(m, /qemu-modwatch refresh/, `${tr} runs refresh`);
  }
  trigger = `${libdir}/qemu`;
  t.match(byName.postinstall ?? '', /qemu-modwatch refresh/, '%post runs refresh');
  t.match(byName.postinstall ?? '', /qemu_modwatch_reload_libvirt\(\) \{/, '%post has the libvirt reload');
  t.match(
    byName.postinstall ?? '',
    /systemctl --no-reload preset qemu-modwatch\.path/,
    '%post applies the preset on first install',
  );
  t.match(
    byName.preuninstall ?? '',
    /systemctl --no-reload disable qemu-modwatch\.path/,
    '%preun disables the path unit',
  );
  t.match(byName.postuninstall ?? '', /rm -rf \/var\/lib\/qemu-modwatch/, '%postun removes the state on erase');
  t.match(
    byName.preinstall ?? '',
    /^qemu_modwatch_hooks_installed_after$/m,
    '%pre records a time before the hooks arrive',
  );
  t.match(byName.preinstall ?? '', /date \+%s\.%N/, "rpm left the shell's date format as it is");
  const scratch = ov!.scratch(`scriptlets-${kind}`);
  for (const [name, text] of Object.entries(byName)) {
    const body = text.split('\n').slice(1).join('\n');
    t.notMatch(body, /^\s*set -e/m, `${name}: no set -e`);
    t.match(body.trimEnd(), /\nexit 0$/, `${name} ends with exit 0`);
    const file = path.join(scratch, name);
    fs.writeFileSync(file, body);
    t.equal(spawnSync('sh', ['-n', file]).status, 0, `${name} parses (sh -n)`);
  }
}

for (const kind of KINDS) {
  t.test(`${kind}: install, file trigger, erase`, { skip: nsReason || false }, async (t) => {
    const rpmFile = rpmFiles[kind];
    if (!fs.existsSync(rpmFile) || !trigger) return t.fail('the build step failed');
    const o = new OverlayHost(`qemu-modwatch-rpm-${kind}`);
    t.teardown(() => o.cleanup());

    // A package shipping one module into %{_libdir}/qemu, to fire the triggers.
    const dtop = o.scratch('dummy-top');
    const hostModDir = fs
      .readdirSync('/usr/lib')
      .map((d) => `/usr/lib/${d}/qemu`)
      .find((d) => fs.existsSync(d));
    const real = hostModDir && fs.readdirSync(hostModDir).find((n) => n.endsWith('.so'));
    const src = path.join(dtop, 'hw-qmw-test-dummy.so');
    fs.writeFileSync(src, real ? fs.readFileSync(path.join(hostModDir, real)) : 'not an ELF file\n');
    const spec = path.join(dtop, 'dummy.spec');
    fs.writeFileSync(
      spec,
      [
        `Name: ${DUMMY}`,
        'Version: 1',
        'Release: 1',
        'Summary: test module for the qemu-modwatch file trigger',
        'License: MIT',
        'AutoReqProv: no',
        '%global debug_package %{nil}',
        '%global __os_install_post %{nil}',
        '%description',
        'test',
        '%install',
        `install -D -m 0755 ${src} %{buildroot}${trigger}/hw-qmw-test-dummy.so`,
        '%files',
        `${trigger}/hw-qmw-test-dummy.so`,
        '',
      ].join('\n'),
    );
    const b = spawnSync(
      'rpmbuild',
      [
        // The macro: with --dbpath, rpmbuild still opened ~/.rpmdb here.
        '--define',
        `_dbpath ${HOST_DB}`,
        '-bb',
        '--target',
        ARCH!,
        '--define',
        `_topdir ${dtop}`,
        '--define',
        '_binary_payload w1.gzdio',
        spec,
      ],
      { encoding: 'utf8' },
    );
    t.equal(b.status, 0, `dummy rpm builds\n${b.stderr}`);
    const dummyRpm = /^Wrote: (.*\.rpm)$/m.exec(b.stdout)?.[1];
    if (!dummyRpm) return;

    const hostBefore = hostRpmView();
    const ours = Object.entries(expected(kind))
      .filter(([, e]) => !e.mode.startsWith('d'))
      .map(([p]) => p);
    const prep = o.prepare(neverInstalled([...ours, '/etc/systemd/system/paths.target.wants/qemu-modwatch.path']));
    t.match(prep.stdout, /^@@PREPARED$/m, 'the namespace starts as a host without qemu-modwatch', shown(prep));
    t.notMatch(prep.stdout, /^@@STILL/m, 'nothing of it is left there', shown(prep));
    // Debian's rpm installs only with --force-debian; --nodeps: its database
    // knows nothing of the libraries dpkg installed.
    const RPM_I = 'rpm -i --force-debian --nodeps';
    const withFake = fakeLibvirtd(o);

    const inst = o.run(
      withFake(`${RPM_I} ${shq(rpmFile)}`) +
        `
  rpm -q qemu-modwatch; echo "@@Q $?"
  rpm -V --nodeps qemu-modwatch; echo "@@V $?"
  [ -f ${STATE} ] && echo "@@STATE yes"
  readlink /usr/sbin/qemu-modwatch
  ls /etc/systemd/system/paths.target.wants/ 2>/dev/null | grep qemu-modwatch
  /usr/sbin/qemu-modwatch --version`,
    );
    t.match(inst.stdout, /^@@RC 0$/m, 'rpm -i succeeds', shown(inst));
    t.notMatch(inst.stderr, /scriptlet failed|warning: %post/i, 'no scriptlet failed', shown(inst));
    t.match(inst.stdout, /qemu-modwatch refresh: /, '%post ran refresh');
    t.match(inst.stdout, /^@@FAKE exit 129$/m, 'the running libvirtd got SIGHUP (first install)');
    t.notMatch(
      inst.stderr,
      /^qemu-modwatch: no run of/m,
      'it died of it: no daemon hook to wait for, nothing said',
      shown(inst),
    );
    t.match(inst.stdout, /^@@Q 0$/m, 'rpm knows the package');
    t.match(inst.stdout, /^@@V 0$/m, 'rpm -V: installed files match', shown(inst));
    t.match(inst.stdout, /^@@STATE yes$/m, 'a baseline was recorded');
    t.match(inst.stdout, new RegExp(`^${EXE}$`, 'm'), '/usr/sbin/qemu-modwatch -> the executable');
    t.match(inst.stdout, /^qemu-modwatch\.path$/m, 'the preset enabled the path unit');
    t.match(inst.stdout, new RegExp(`^qemu-modwatch ${version.replace(/[.]/g, '\\.')}$`, 'm'), 'the executable runs');

    const baselineHasDummy = (r: RunResult): boolean | null => {
      const line = r.stdout.split('\n').find((l) => l.startsWith('{"schema"'));
      if (!line) return null;
      const s = JSON.parse(line) as { baseline: { dirs: { path: string; modules: { name: string }[] }[] } };
      return (
        s.baseline.dirs.find((d) => d.path === trigger)?.modules.some((m) => m.name === 'hw-qmw-test-dummy.so') ?? false
      );
    };
    const trig = o.run(`${RPM_I} ${shq(dummyRpm)}; echo "@@RC $?"; cat ${STATE}; echo`);
    t.match(trig.stdout, /^@@RC 0$/m, 'dummy module rpm installs', shown(trig));
    t.match(trig.stdout, /qemu-modwatch refresh: /, '%transfiletriggerin ran refresh');
    t.equal(baselineHasDummy(trig), true, 'the baseline has the module the package added', shown(trig));
    const untrig = o.run(`rpm -e --nodeps ${DUMMY}; echo "@@RC $?"; cat ${STATE}; echo`);
    t.match(untrig.stdout, /^@@RC 0$/m, 'dummy module rpm erases');
    t.match(untrig.stdout, /qemu-modwatch refresh: /, '%transfiletriggerpostun ran refresh');
    t.equal(baselineHasDummy(untrig), false, 'the baseline no longer has it');

    // %pre of the first install wrote a time before the hooks arrived; an upgrade keeps it.
    const dispatchers = '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch /etc/libvirt/hooks/daemon.d/50-qemu-modwatch';
    const record = `${STATE_DIR}/hooks-installed-after`;
    const up = o.run(
      `echo "@@RECORD0 $(cat ${record})"; stat -c '@@BEFORE %.9Z' ${dispatchers}\n` +
        withFake(`rpm -U --replacepkgs --force-debian --nodeps ${shq(rpmFile)}`) +
        `\necho "@@RECORD $(cat ${record})"`,
    );
    t.match(up.stdout, /^@@RC 0$/m, 'reinstall (upgrade path) succeeds', shown(up));
    t.match(up.stdout, /^@@FAKE alive$/m, 'an upgrade does not reload libvirt');
    const first = /^@@RECORD0 (.*)$/m.exec(up.stdout)?.[1] ?? '';
    t.match(first, /^\d+(\.\d{9})?$/, `the first install's %pre wrote one, as date prints it: ${first}`, shown(up));
    const before = [...up.stdout.matchAll(/^@@BEFORE (\S+)$/gm)].map((m) => Number(m[1]));
    t.equal(before.length, 2, 'both dispatchers were there', shown(up));
    t.ok(
      before.every((c) => Number(first) <= c),
      `before the dispatchers arrived (their ctimes ${before.join(', ')})`,
    );
    t.equal(/^@@RECORD (.*)$/m.exec(up.stdout)?.[1], first, 'the upgrade kept it');

    const erase = o.run(
      withFake('rpm -e --nodeps qemu-modwatch') +
        `
  rpm -q qemu-modwatch >/dev/null 2>&1; echo "@@Q $?"
  for p in ${Object.keys(expected(kind)).join(' ')} ${STATE_DIR} \
    /etc/systemd/system/paths.target.wants/qemu-modwatch.path
  do
    [ -e "$p" ] || [ -L "$p" ] && echo "@@LEFT $p"
  done
  echo "@@DONE"`,
    );
    t.match(erase.stdout, /^@@RC 0$/m, 'rpm -e succeeds', shown(erase));
    t.notMatch(erase.stderr, /scriptlet failed/i, 'no scriptlet failed', shown(erase));
    t.match(erase.stdout, /^@@FAKE exit 129$/m, 'erase reloads the running libvirtd');
    t.match(erase.stdout, /^@@Q 1$/m, 'rpm no longer knows the package');
    t.match(erase.stdout, /^@@DONE$/m);
    t.same(erase.stdout.match(/^@@LEFT .*$/gm) ?? [], [], 'every file, the state and the enablement link are gone');
    const bookkeeping = [
      /^\/var\/lib\/rpm\//,
      // Debian's rpm: its database under HOME (/root, overlaid like the rest).
      /^\/root\/\.rpmdb\//,
      /^\/usr\/lib\/sysimage\/rpm\//,
      /^\/var\/log\//,
      /^\/var\/tmp\/$/,
      /^\/var\/cache\/(man|ldconfig)\//,
    ];
    // rpm leaves the parent directories it had to create and no package
    // owns here (on Fedora, libvirt, dnf5 and filesystem own them); ours
    // (/usr/libexec/qemu-modwatch, the hooks' .d directories) must go.
    const parents = new Set<string>();
    for (const f of [...Object.keys(expected(kind)), `${trigger}/hw-qmw-test-dummy.so`]) {
      for (let d = path.posix.dirname(f); d !== '/'; d = path.posix.dirname(d)) parents.add(`${d}/`);
    }
    for (const p of Object.keys(expected(kind))) parents.delete(`${p}/`);
    const left = o.created().filter((p) => !bookkeeping.some((re) => re.test(p)) && !parents.has(p));
    t.same(left, [], 'nothing else was left (overlay upper dirs)');
    t.same(hostRpmView(), hostBefore, 'the host rpm database and files are untouched');
  });
}

t.test('either kind replaces the other in place (rpm -U)', { skip: nsReason || false }, async (t) => {
  if (!KINDS.every((k) => fs.existsSync(rpmFiles[k]))) return t.fail('the build step failed');
  const o = new OverlayHost('qemu-modwatch-rpm-crossgrade');
  t.teardown(() => o.cleanup());
  const prep = o.prepare(neverInstalled(Object.keys(expected())));
  t.notMatch(prep.stdout, /^@@STILL/m, 'the namespace starts as a host without qemu-modwatch', shown(prep));
  const RPM = 'rpm --force-debian --nodeps';
  const r = o.run(`
${RPM} -i ${shq(rpmFiles['self-contained'])}; echo "@@RC1 $?"
echo '# an admin was here' >> /etc/qemu-modwatch.conf
${RPM} -U ${shq(rpmFiles.node)}; echo "@@RC2 $?"
echo "@@IS2 $(rpm -q qemu-modwatch) $(head -c 15 ${EXE})"
echo "@@CONF $(tail -n 1 /etc/qemu-modwatch.conf)"
ls /etc/qemu-modwatch.conf.rpm* 2>/dev/null
[ -f ${STATE} ] && echo "@@STATE"
${RPM} -U ${shq(rpmFiles['self-contained'])}; echo "@@RC3 $?"
echo "@@IS3 $(rpm -q qemu-modwatch)"
rpm -e --nodeps qemu-modwatch; echo "@@RC4 $?"`);
  t.match(r.stdout, /^@@RC1 0$/m, 'the self-contained RPM installs', shown(r));
  t.match(r.stdout, /^@@RC2 0$/m, 'rpm -U of the noarch one replaces it', shown(r));
  t.match(r.stdout, /^@@IS2 qemu-modwatch-\S+\.noarch #!\/usr\/bin\/node$/m, 'rpm has the noarch kind, the bundle');
  t.match(r.stdout, /^@@CONF # an admin was here$/m, "the admin's config edit is kept in place");
  t.notMatch(r.stdout, /\.rpm(new|save)$/m, 'no .rpmnew or .rpmsave');
  t.match(r.stdout, /^@@STATE$/m, 'the state stays');
  t.match(r.stdout, /^@@RC3 0$/m, 'and back', shown(r));
  t.match(r.stdout, new RegExp(`^@@IS3 qemu-modwatch-\\S+\\.${ARCH}$`, 'm'), `rpm has the ${ARCH} kind again`);
  t.match(r.stdout, /^@@RC4 0$/m, 'erase', shown(r));
});

function hostRpmView() {
  const listing = (d: string) =>
    fs.existsSync(d) ? fs.readdirSync(d).map((f) => `${f}:${fs.statSync(path.join(d, f)).mtimeMs}`) : null;
  return {
    // Listed, not queried: a query of Debian's ~/.rpmdb rewrites its shared-memory file.
    db: listing('/var/lib/rpm'),
    home: listing('/root/.rpmdb'),
    exe: fs.existsSync(EXE),
  };
}
