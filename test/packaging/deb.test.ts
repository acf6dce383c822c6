import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { inCI } from '../fixtures/ci';
import { cannotRun, OverlayHost, type RunResult } from './overlay-host';
import {
  buildDeb,
  buildDummyDeb,
  DUMMY,
  EXE_FROM,
  fakeLibvirtd,
  dist,
  EXE,
  KINDS,
  type Kind,
  NODE_FLOOR,
  missingBuild,
  neverInstalled,
  refusesPartialBuild,
  RepoSnapshot,
  sha256,
  shown,
  shq,
  STATE,
  STATE_DIR,
  top,
  version,
} from './package-kit';

// The .debs, really installed: both kinds built from dist/ by
// build/package-deb.mjs, each installed with dpkg -i, its dpkg trigger
// fired by a dummy module package, then both purged, all inside a namespace
// whose /etc, /usr, /var and /run are copy-on-write overlays of the host's
// (overlay-host.ts); then one kind installed over the other. Before and
// after, the host's dpkg database and files are checked unchanged. The node
// kind under Debian 12's own Node.js: debian-node.test.ts.

const snapshot = new RepoSnapshot();
const SBIN = '/usr/sbin/qemu-modwatch';
const DISPATCHERS = ['/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', '/etc/libvirt/hooks/daemon.d/50-qemu-modwatch'];
/** Since when the hooks have been there (README, "State"). */
const INSTALLED_AFTER = `${STATE_DIR}/hooks-installed-after`;
const EMULATOR = '/usr/bin/qemu-system-x86_64';

const fileSha = (p: string) => sha256(fs.readFileSync(p));

interface Expect {
  mode: number;
  /** Content: a file in the repo or dist/ (the installed file gunzipped when it ends in .gz). */
  from?: string;
  link?: string;
  conffile?: boolean;
}

/** Every file the self-contained package installs; filesOf() for either kind. */
const FILES: Record<string, Expect> = {
  [EXE]: { mode: 0o755, from: EXE_FROM['self-contained'] },
  [SBIN]: { mode: 0o777, link: '../libexec/qemu-modwatch/qemu-modwatch' },
  '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch': { mode: 0o755, from: 'hooks/qemu.d/50-qemu-modwatch', conffile: true },
  '/etc/libvirt/hooks/daemon.d/50-qemu-modwatch': {
    mode: 0o755,
    from: 'hooks/daemon.d/50-qemu-modwatch',
    conffile: true,
  },
  '/etc/qemu-modwatch.conf': { mode: 0o644, from: 'hooks/qemu-modwatch.conf', conffile: true },
  '/etc/apt/apt.conf.d/80qemu-modwatch': { mode: 0o644, from: 'hooks/apt/80qemu-modwatch', conffile: true },
  '/usr/lib/systemd/system/qemu-modwatch.path': { mode: 0o644, from: 'hooks/systemd/qemu-modwatch.path' },
  '/usr/lib/systemd/system/qemu-modwatch.service': { mode: 0o644, from: 'hooks/systemd/qemu-modwatch.service' },
  '/usr/lib/systemd/system/qemu-modwatch-textfile.service': {
    mode: 0o644,
    from: 'hooks/systemd/qemu-modwatch-textfile.service',
  },
  '/usr/lib/systemd/system/qemu-modwatch-textfile.timer': {
    mode: 0o644,
    from: 'hooks/systemd/qemu-modwatch-textfile.timer',
  },
  '/usr/share/qemu-modwatch/prometheus/qemu-modwatch.rules.yml': {
    mode: 0o644,
    from: 'hooks/prometheus/qemu-modwatch.rules.yml',
  },
  '/usr/share/icinga2/include/plugins-contrib.d/qemu-modwatch.conf': {
    mode: 0o644,
    from: 'hooks/icinga2/qemu-modwatch.conf',
  },
  '/etc/nagios-plugins/config/qemu-modwatch.cfg': {
    mode: 0o644,
    from: 'hooks/nagios/qemu-modwatch.cfg',
    conffile: true,
  },
  '/usr/share/man/man8/qemu-modwatch.8.gz': { mode: 0o644, from: 'dist/qemu-modwatch.8' },
  '/usr/share/bash-completion/completions/qemu-modwatch': { mode: 0o644, from: 'dist/qemu-modwatch.bash-completion' },
  '/usr/share/doc/qemu-modwatch/copyright': { mode: 0o644, from: 'build/deb/copyright' },
};

/** The same files in either kind, the executable its own. */
const filesOf = (kind: Kind): Record<string, Expect> => ({ ...FILES, [EXE]: { mode: 0o755, from: EXE_FROM[kind] } });

/** Where deb-systemd-helper records the path unit's enablement. */
const ENABLEMENT = [
  '/etc/systemd/system/paths.target.wants/qemu-modwatch.path',
  '/var/lib/systemd/deb-systemd-helper-enabled/qemu-modwatch.path.dsh-also',
  '/var/lib/systemd/deb-systemd-helper-enabled/paths.target.wants/qemu-modwatch.path',
  '/var/lib/systemd/deb-systemd-helper-masked/qemu-modwatch.path',
  '/etc/systemd/system/qemu-modwatch.path',
];

/** What dpkg and man-db keep for themselves; anything else left after the purge is a leftover. */
const BOOKKEEPING = [
  /^\/var\/lib\/dpkg\//,
  /^\/var\/log\//,
  /^\/var\/cache\/(man|debconf|ldconfig)\//,
  /^\/run\/systemd\/systemd-units-load$/,
];

interface Stat {
  type: 'file' | 'symlink' | 'dir' | 'other';
  mode: number;
  uid: number;
  gid: number;
  target?: string;
  sha256?: string;
  mtimeMs: number;
  ctimeMs: number;
}

/** Prints one JSON line, marked, with lstat data (and content hashes) of paths, from inside the namespace. */
function statScript(paths: string[], marker = '@@STAT'): string {
  const js = `
const fs = require('fs'), crypto = require('crypto'), zlib = require('zlib');
const out = {};
for (const p of JSON.parse(process.argv[1])) {
  let st;
  try { st = fs.lstatSync(p); } catch { out[p] = null; continue; }
  const e = { type: st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isDirectory() ? 'dir' : 'other',
    mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  if (e.type === 'symlink') e.target = fs.readlinkSync(p);
  if (e.type === 'file') {
    let b = fs.readFileSync(p);
    if (p.endsWith('.gz')) b = zlib.gunzipSync(b);
    e.sha256 = crypto.createHash('sha256').update(b).digest('hex');
  }
  out[p] = e;
}
console.log(${JSON.stringify(marker)} + ' ' + JSON.stringify(out));`;
  return `node -e ${shq(js)} ${shq(JSON.stringify(paths))}`;
}

function marked<T>(r: RunResult, marker: string): T {
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${marker} `));
  if (!line) throw new Error(`no ${marker} line in the output:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(line.slice(marker.length + 1)) as T;
}

/** What the host's own dpkg and file system say, to compare before and after. */
function hostView() {
  const status = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'qemu-modwatch'], { encoding: 'utf8' });
  const dummy = spawnSync('dpkg-query', ['-W', '-f=${Status}', DUMMY], { encoding: 'utf8' });
  const exists = (p: string) => fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;
  return {
    installed: status.status === 0 && /install ok installed/.test(status.stdout),
    dummyKnown: dummy.status === 0,
    dpkgStatus: fileSha('/var/lib/dpkg/status'),
    present: [...Object.keys(FILES), ...ENABLEMENT].filter(exists),
    stateDir: exists(STATE_DIR),
  };
}

function skipReason(): string | null {
  const r = cannotRun(['dpkg', 'dpkg-deb', 'dpkg-query', 'dpkg-shlibdeps', 'dpkg-architecture', 'node']);
  if (r) return r;
  return missingBuild();
}

const reason = skipReason();
if (reason) {
  if (inCI()) t.fail(`the .deb tests cannot run although CI is set: ${reason}`);
  else t.comment(`.deb tests skipped: ${reason}`);
}
/** Installing the node kind here needs the host's node to be dpkg's nodejs, new enough: the Depends is real. */
function nodeReason(): string | null {
  const v = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'nodejs'], { encoding: 'utf8' });
  if (v.status !== 0 || !v.stdout) return 'no nodejs package in dpkg (the node .deb depends on it)';
  if (spawnSync('dpkg', ['--compare-versions', v.stdout, 'ge', NODE_FLOOR]).status !== 0)
    return `the nodejs package is ${v.stdout}, older than ${NODE_FLOOR}`;
  if (!fs.existsSync('/usr/bin/node')) return 'no /usr/bin/node';
  return null;
}
const installReason: Record<Kind, string | null> = {
  'self-contained': reason,
  node: reason ?? nodeReason(),
};
if (!reason && installReason.node) {
  if (inCI()) t.fail(`the node .deb install test cannot run although CI is set: ${installReason.node}`);
  else t.comment(`node .deb install test skipped: ${installReason.node}`);
}

// Whatever the host has of qemu-modwatch (installed, or left over) stays as
// it is; the namespace starts as a host that never had it (neverInstalled).
const before = reason ? null : hostView();

const debFiles: Record<Kind, string> = { 'self-contained': '', node: '' };
let dummyDeb = '';
let multiarch = '';
let arch = '';
/** For the build's scratch directories (not installed into). */
let ov: OverlayHost | undefined;
t.teardown(() => ov?.cleanup());

t.test('no man page or completion from the build: a clear refusal', { skip: reason || false }, async (t) => {
  refusesPartialBuild(t, 'package-deb.mjs');
});

t.test('build the .debs', { skip: reason || false }, async (t) => {
  ov = new OverlayHost('qemu-modwatch-deb');
  const out = ov.scratch('out');
  snapshot.take(KINDS.flatMap((k) => Object.values(filesOf(k)).flatMap((e) => (e.from ? [e.from] : []))));
  const r = buildDeb(out);
  t.equal(r.status, 0, `package-deb.mjs exits 0\n${r.stderr}`);
  arch = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim();
  multiarch = spawnSync('dpkg-architecture', ['-qDEB_HOST_MULTIARCH', '-a', arch], { encoding: 'utf8' }).stdout.trim();
  debFiles['self-contained'] = path.join(out, `qemu-modwatch_${version}_${arch}.deb`);
  debFiles.node = path.join(out, `qemu-modwatch_${version}_all.deb`);
  t.same(
    r.stdout.trim().split('\n'),
    KINDS.map((k) => debFiles[k]),
    'prints the path of each .deb, named name_version_arch.deb',
  );
  for (const kind of KINDS) t.ok(fs.existsSync(debFiles[kind]), `the ${kind} .deb exists`);

  const one = buildDeb(ov.scratch('one'), 'node');
  t.equal(one.status, 0, `--kind node exits 0\n${one.stderr}`);
  t.same(fs.readdirSync(ov.scratch('one')), [`qemu-modwatch_${version}_all.deb`], '--kind builds that kind only');

  const control: Partial<Record<Kind, string>> = {};
  for (const kind of KINDS) {
    const debFile = debFiles[kind];
    const field = (f: string) => spawnSync('dpkg-deb', ['-f', debFile, f], { encoding: 'utf8' }).stdout.trim();
    t.equal(field('Package'), 'qemu-modwatch', `${kind}: one package name for both kinds`);
    t.equal(field('Version'), version, `${kind}: version from package.json`);
    const size = Number(field('Installed-Size'));
    if (kind === 'self-contained') {
      t.equal(field('Architecture'), arch, 'self-contained: architecture from dpkg --print-architecture');
      t.match(field('Depends'), /\blibc6 \(>= [0-9.]+\)/, 'self-contained: Depends from the executable: libc6');
      t.match(field('Depends'), /\blibstdc\+\+6\b/, 'self-contained: Depends from the executable: libstdc++6');
      t.ok(size > fs.statSync(path.join(dist, 'qemu-modwatch')).size / 1024, 'Installed-Size counts the executable');
    } else {
      t.equal(field('Architecture'), 'all', 'node: Architecture: all');
      t.equal(field('Depends'), `nodejs (>= ${NODE_FLOOR})`, 'node: Depends on nodejs, nothing else');
      t.ok(size > fs.statSync(path.join(dist, 'qemu-modwatch.cjs')).size / 1024, 'Installed-Size counts the bundle');
      t.ok(size < 1024, `node: Installed-Size ${size} KiB, under 1 MiB`);
    }

    const ctl = ov.scratch(`control-${kind}`);
    control[kind] = ctl;
    t.equal(spawnSync('dpkg-deb', ['-e', debFile, ctl]).status, 0, `${kind}: control archive extracts`);
    const triggers = fs.readFileSync(path.join(ctl, 'triggers'), 'utf8').trim().split('\n');
    const native = [`interest-noawait /usr/lib/${multiarch}/qemu`, 'interest-noawait /usr/lib/qemu'];
    if (kind === 'self-contained') t.same(triggers, native, 'file triggers on the module directories, noawait');
    else {
      t.same(
        triggers.filter((l) => native.includes(l)),
        native,
        "node: file triggers on this architecture's module directories",
      );
      t.ok(
        triggers.includes('interest-noawait /usr/lib/aarch64-linux-gnu/qemu') &&
          triggers.includes('interest-noawait /usr/lib/x86_64-linux-gnu/qemu'),
        "node: and on other architectures' (it installs on any)",
        { triggers },
      );
      t.same(
        triggers.filter((l) => !/^interest-noawait \/usr\/lib\/([a-z0-9_]+-linux-[a-z0-9]+\/)?qemu$/.test(l)),
        [],
        'node: every trigger is a QEMU module directory, noawait',
      );
    }
    t.same(
      fs.readFileSync(path.join(ctl, 'conffiles'), 'utf8').trim().split('\n').sort(),
      Object.entries(FILES)
        .filter(([, e]) => e.conffile)
        .map(([p]) => p)
        .sort(),
      `${kind}: every /etc file is a conffile`,
    );
    for (const s of ['preinst', 'postinst', 'prerm', 'postrm']) {
      const file = path.join(ctl, s);
      t.equal(fs.statSync(file).mode & 0o777, 0o755, `${kind}: ${s} is executable`);
      const text = fs.readFileSync(file, 'utf8');
      t.match(text, /^#!\/bin\/sh\n/, `${kind}: ${s} is a POSIX sh script`);
      t.notMatch(text, /^#[A-Z_]+#$/m, `${kind}: ${s}: placeholders replaced`);
      t.notMatch(text, /^\s*set -e/m, `${kind}: ${s} does not stop at the first failing command`);
      t.match(text, /\nexit 0\n$/, `${kind}: ${s} ends with exit 0`);
      t.equal(spawnSync('sh', ['-n', file]).status, 0, `${kind}: ${s} parses (sh -n)`);
      const dash = spawnSync('sh', ['-c', 'command -v dash']);
      if (dash.status === 0) t.equal(spawnSync('dash', ['-n', file]).status, 0, `${kind}: ${s} parses with dash`);
    }
    const md5 = fs.readFileSync(path.join(ctl, 'md5sums'), 'utf8');
    t.match(
      md5,
      /^[0-9a-f]{32}  usr\/libexec\/qemu-modwatch\/qemu-modwatch$/m,
      `${kind}: md5sums lists the executable`,
    );
    t.notMatch(md5, / etc\//, `${kind}: md5sums leaves conffiles to dpkg`);

    const list = spawnSync('dpkg-deb', ['-c', debFile], { encoding: 'utf8', maxBuffer: 1 << 24 }).stdout;
    for (const line of list.trim().split('\n')) {
      t.match(line, /^\S+ root\/root /, `${kind}: owned by root: ${line.replace(/\s+/g, ' ')}`);
    }
  }

  // The kinds share everything but the executable and what follows from it.
  const listing = (deb: string) =>
    spawnSync('dpkg-deb', ['-c', deb], { encoding: 'utf8', maxBuffer: 1 << 24 })
      .stdout.trim()
      .split('\n')
      .map((l) => l.replace(/^(\S+) \S+ +\d+ \S+ \S+ /, '$1 '));
  t.same(listing(debFiles.node), listing(debFiles['self-contained']), 'the same files, modes and links in both');
  const [sc, nd] = [control['self-contained']!, control.node!];
  for (const f of ['postinst', 'prerm', 'postrm', 'conffiles']) {
    t.equal(fs.readFileSync(path.join(nd, f), 'utf8'), fs.readFileSync(path.join(sc, f), 'utf8'), `the same ${f}`);
  }
  const others = (ctl: string, file: string, drop: RegExp) =>
    fs
      .readFileSync(path.join(ctl, file), 'utf8')
      .split('\n')
      .filter((l) => !drop.test(l));
  const exeLine = /  usr\/libexec\/qemu-modwatch\/qemu-modwatch$/;
  t.same(others(nd, 'md5sums', exeLine), others(sc, 'md5sums', exeLine), 'the same md5sums but for the executable');
  const ownFields = /^(Architecture|Depends|Installed-Size):/;
  t.same(
    others(nd, 'control', ownFields),
    others(sc, 'control', ownFields),
    'the same control fields but Architecture, Depends, size',
  );
  const exe = spawnSync('dpkg-deb', ['--fsys-tarfile', debFiles.node], { maxBuffer: 1 << 26 });
  t.equal(exe.status, 0);
  const bundled = spawnSync('tar', ['-xO', `.${EXE}`], { input: exe.stdout, maxBuffer: 1 << 26 }).stdout;
  t.equal(sha256(bundled), snapshot.sha(EXE_FROM.node), "node: the executable is the bundle under /usr/bin/node's #!");
  t.match(bundled.subarray(0, 16).toString(), /^#!\/usr\/bin\/node\n/, 'node: #!/usr/bin/node, no PATH search');
  // A package that ships one file into the module directory, to fire the trigger.
  const root = ov.scratch('dummy-root');
  // A real module's bytes under a new name when QEMU is installed: a valid
  // module of this host's build, so the refresh sees an added module, not
  // a broken one.
  const hostModDir = `/usr/lib/${multiarch}/qemu`;
  const real = fs.existsSync(hostModDir) ? fs.readdirSync(hostModDir).find((n) => n.endsWith('.so')) : undefined;
  dummyDeb = path.join(out, `${DUMMY}_1.0_all.deb`);
  const b = buildDummyDeb(
    root,
    hostModDir,
    real ? fs.readFileSync(path.join(hostModDir, real)) : 'not an ELF file\n',
    dummyDeb,
  );
  t.equal(b.status, 0, `dummy package builds\n${b.stderr}`);
});

for (const kind of KINDS) {
  t.test(`${kind}: install, trigger, reinstall, purge`, { skip: installReason[kind] || false }, async (t) => {
    const debFile = debFiles[kind];
    if (!fs.existsSync(debFile) || !fs.existsSync(dummyDeb)) return t.fail('the build step failed');
    const o = new OverlayHost(`qemu-modwatch-deb-${kind}`);
    t.teardown(() => o.cleanup());
    const FILES = filesOf(kind);
    const prep = o.prepare(neverInstalled([...Object.keys(FILES), ...ENABLEMENT]));
    t.match(prep.stdout, /^@@PREPARED$/m, 'the namespace starts as a host without qemu-modwatch', shown(prep));
    t.notMatch(prep.stdout, /^@@STILL/m, 'nothing of it is left there', shown(prep));

    // 1. Install, with a stand-in "libvirtd" running: the first install must reload it.
    const fakeDaemon = fakeLibvirtd(o);
    const install = o.run(
      fakeDaemon(`dpkg -i ${shq(debFile)}`) + '\n' + statScript([...Object.keys(FILES), STATE, ...ENABLEMENT]),
    );
    t.match(install.stdout, /^@@RC 0$/m, 'dpkg -i succeeds');
    t.match(install.stdout, /^Setting up qemu-modwatch /m, 'configured');
    t.match(install.stdout, /qemu-modwatch refresh: /, 'postinst ran refresh');
    t.match(
      install.stdout,
      /^@@FAKE exit 129$/m,
      'the running libvirtd got SIGHUP (first install: libvirt must see the new hooks)',
    );
    t.notMatch(
      install.stderr,
      /^qemu-modwatch: no run of/m,
      'it died of it: no daemon hook to wait for, nothing said',
      shown(install),
    );
    const st = marked<Record<string, Stat | null>>(install, '@@STAT');
    for (const [p, e] of Object.entries(FILES)) {
      const s = st[p];
      if (!t.ok(s, `${p} installed`) || !s) continue;
      t.equal(s.uid, 0, `${p} owned by root`);
      t.equal(s.gid, 0, `${p} group root`);
      if (e.link) {
        t.equal(s.type, 'symlink', `${p} is a symlink`);
        t.equal(s.target, e.link, `${p} -> ${e.link}`);
        continue;
      }
      t.equal(s.type, 'file', `${p} is a file`);
      t.equal(s.mode.toString(8), e.mode.toString(8), `${p} mode ${e.mode.toString(8)}`);
      if (e.from) t.equal(s.sha256, snapshot.sha(e.from), `${p} has the content of ${e.from}`);
    }
    t.ok(st[STATE], 'postinst refresh recorded a baseline');
    t.equal(
      st[ENABLEMENT[0]!]?.type,
      'symlink',
      'the path unit is enabled (deb-systemd-helper), systemd running or not',
    );

    // 2. What dpkg now knows, and that the installed files work.
    const q = o.run(
      [
        `dpkg-query -W -f='@@CONFFILES ${'${Conffiles}'}\\n' qemu-modwatch | tr '\\n' ' '; echo`,
        'dpkg --verify qemu-modwatch; echo "@@VERIFY $?"',
        `${SBIN} --version; echo "@@VERSION $?"`,
        `env -i ${SBIN} refresh; echo "@@REFRESH $?"`,
        'systemd-analyze --version >/dev/null 2>&1 && { systemd-analyze verify --man=no ' +
          `${Object.keys(FILES)
            .filter((f) => f.startsWith('/usr/lib/systemd/system/'))
            .join(' ')} 2>&1; ` +
          'echo "@@ANALYZE $?"; }',
        'apt-config dump 2>/dev/null | grep -F qemu-modwatch',
        'sh -n /etc/libvirt/hooks/qemu.d/50-qemu-modwatch; echo "@@DISPATCHER $?"',
      ].join('\n'),
    );
    const conffiles = /@@CONFFILES (.*)/.exec(q.stdout)?.[1] ?? '';
    for (const [p, e] of Object.entries(FILES)) {
      if (e.conffile)
        t.match(conffiles, new RegExp(`${p.replace(/[.]/g, '\\.')} [0-9a-f]{32}`), `dpkg records ${p} as a conffile`);
    }
    t.match(q.stdout, /^@@VERIFY 0$/m, 'dpkg --verify: files match the md5sums', shown(q));
    t.match(
      q.stdout,
      new RegExp(`^qemu-modwatch ${version.replace(/[.]/g, '\\.')}$`, 'm'),
      '/usr/sbin/qemu-modwatch --version',
    );
    t.match(q.stdout, /^@@REFRESH 0$/m, 'refresh runs with an empty environment');
    if (/@@ANALYZE/.test(q.stdout))
      t.match(q.stdout, /^@@ANALYZE 0$/m, 'systemd-analyze verify accepts the units, no warnings', shown(q));
    if (/@@ANALYZE/.test(q.stdout))
      t.notMatch(
        q.stdout.replace(/^@@.*$/gm, ''),
        /qemu-modwatch(-textfile)?\.(path|service|timer)|Unknown|warning/i,
        'systemd-analyze verify says nothing about them',
      );
    t.match(
      q.stdout,
      /DPkg::Post-Invoke:: "if \[ -x \/usr\/sbin\/qemu-modwatch \]; then \/usr\/sbin\/qemu-modwatch refresh/,
      'apt reads the Post-Invoke snippet',
    );
    t.match(q.stdout, /^@@DISPATCHER 0$/m);

    // 3. The trigger: a package ships a module; dpkg runs postinst triggered.
    const stateBefore = o.run(`cat ${STATE}`).stdout;
    const takenBefore = BigInt((JSON.parse(stateBefore) as { baseline: { takenAtNs: string } }).baseline.takenAtNs);
    const trig = o.run(`dpkg -i ${shq(dummyDeb)}; echo "@@RC $?"; cat ${STATE}; echo`);
    t.match(trig.stdout, /^@@RC 0$/m, 'dummy module package installs');
    t.match(trig.stdout, /^Processing triggers for qemu-modwatch /m, 'the file trigger fires', shown(trig));
    t.match(trig.stdout, /qemu-modwatch refresh: /, 'postinst triggered ran refresh');
    const baselineHasDummy = (r: RunResult): boolean | null => {
      const line = r.stdout.split('\n').find((l) => l.startsWith('{"schema"'));
      if (!line) return null;
      const s = JSON.parse(line) as {
        baseline: { takenAtNs: string; dirs: { path: string; modules: { name: string }[] }[] };
      };
      t.ok(BigInt(s.baseline.takenAtNs) > takenBefore, 'a new baseline was recorded');
      const dir = s.baseline.dirs.find((d) => d.path === `/usr/lib/${multiarch}/qemu`);
      return dir?.modules.some((m) => m.name === 'hw-qmw-test-dummy.so') ?? false;
    };
    t.equal(baselineHasDummy(trig), true, 'the baseline has the module the package added');
    const untrig = o.run(`dpkg --purge ${DUMMY}; echo "@@RC $?"; cat ${STATE}; echo`);
    t.match(untrig.stdout, /^@@RC 0$/m, 'dummy module package purges');
    t.match(untrig.stdout, /^Processing triggers for qemu-modwatch /m, 'removing a module fires the trigger too');
    t.equal(baselineHasDummy(untrig), false, 'the baseline no longer has the removed module');

    // 4. The systemd unit's sandbox, as systemd would build it: refresh must
    // still delete the cache entry and nudge the emulator (chmod: its ctime).
    await sandboxChecks(t, o);

    // 5. Reinstall (an upgrade to the same version): no libvirt reload, the
    // conffiles kept, nothing fails; the first install's preinst wrote a time before the hooks arrived, and
    // this one keeps it.
    const ctimes = `stat -c '@@CTIME %n %.9Z' ${DISPATCHERS.join(' ')}`;
    const re = o.run(
      `${ctimes} | sed 's/@@CTIME/@@BEFORE/'\necho "@@RECORD0 $(cat ${INSTALLED_AFTER})"\n` +
        fakeDaemon(`dpkg -i ${shq(debFile)}`) +
        `\necho "@@RECORD $(cat ${INSTALLED_AFTER})"`,
    );
    t.match(re.stdout, /^@@RC 0$/m, 'reinstall succeeds');
    t.match(re.stdout, /^@@FAKE alive$/m, 'an upgrade does not reload libvirt');
    const times = (r: RunResult, tag: string) =>
      [...r.stdout.matchAll(new RegExp(`^${tag} \\S+ (\\S+)$`, 'gm'))].map((m) => m[1]!);
    const first = times(re, '@@BEFORE');
    t.equal(first.length, 2, 'both dispatchers were there before', shown(re));
    // stat's %.9Z: the same number of digits in each, so without the point they compare as integers.
    const ns = (c: string) => BigInt(c.replace('.', ''));
    const written = /^@@RECORD0 (.*)$/m.exec(re.stdout)?.[1] ?? '';
    t.match(written, /^\d+\.\d{9}$/, `the first install's preinst wrote it, to the ns: ${written}`, shown(re));
    t.ok(
      first.every((c) => Number(written) <= Number(c)),
      `before the dispatchers arrived (${first.join(', ')})`,
    );
    const recorded = (tag = '@@RECORD') => new RegExp(`^${tag} ${written.replace('.', '\\.')}$`, 'm');
    t.match(re.stdout, recorded(), 'the reinstall kept it');

    // 5a. An upgrade that changes the dispatchers: dpkg replaces them (new
    // files, new ctime). A libvirtd started between the first install and the
    // upgrade loaded the hooks then: check must not say hooks-not-loaded. This
    // stand-in runs no daemon hook (a real one does at its start, which makes
    // it loaded): from the files alone, whether it did cannot be told.
    const up = upgradeDeb(o, debFile, `${version}+up1`);
    const upgraded = o.run(
      fakeDaemon(
        `dpkg -i ${shq(up)}; rc=$?\n${ctimes}\necho "@@RECORD $(cat ${INSTALLED_AFTER})"\n` +
          `${SBIN} --check --json > /run/qmw-check.json; ${SBIN} status --json > /run/qmw-status.json\n(exit $rc)`,
      ) +
        // One line each: their JSON is printed over several.
        `\necho "@@CHECK $(tr -d '\\n' < /run/qmw-check.json)"` +
        `\necho "@@STATUS $(tr -d '\\n' < /run/qmw-status.json)"` +
        '\nrm -f /run/qmw-check.json /run/qmw-status.json',
    );
    t.match(upgraded.stdout, /^@@RC 0$/m, `upgrade to ${version}+up1 succeeds`, shown(upgraded));
    const now = times(upgraded, '@@CTIME');
    t.ok(
      now.length === 2 && now.every((c, i) => ns(c) > ns(first[i]!)),
      `dpkg replaced the dispatchers (their ctime ${first.join(', ')} -> ${now.join(', ')})`,
    );
    t.match(upgraded.stdout, recorded(), 'the record still holds the time before the first install');
    const check = JSON.parse(/^@@CHECK (.*)$/m.exec(upgraded.stdout)?.[1] ?? '{}') as { findings?: { code: string }[] };
    t.ok(check.findings, 'check ran', shown(upgraded));
    t.same(
      check.findings?.filter((f) => f.code === 'hooks-not-loaded'),
      [],
      'check: no hooks-not-loaded for the libvirtd started before the upgrade',
    );
    const status = JSON.parse(/^@@STATUS (.*)$/m.exec(upgraded.stdout)?.[1] ?? '{}') as {
      daemons?: { hooks: string; why: string }[];
    };
    t.same(
      status.daemons?.map((d) => d.hooks),
      ['cannot-tell'],
      `status: started between the record and the dispatchers' ctime (${status.daemons?.[0]?.why})`,
    );

    // 5b. Remove: the dispatchers are conffiles and stay, and so does the
    // record; installed again over them (a downgrade
    // here), the time stays the first one's.
    const rm = o.run(
      `dpkg -r qemu-modwatch; echo "@@RC $?"; ${ctimes}; echo "@@RECORD $(cat ${INSTALLED_AFTER} 2>&1)"\n` +
        `dpkg -i ${shq(debFile)} >/dev/null; echo "@@RC2 $?"; echo "@@RECORD2 $(cat ${INSTALLED_AFTER} 2>&1)"`,
    );
    t.match(rm.stdout, /^@@RC 0$/m, 'dpkg -r succeeds', shown(rm));
    t.equal([...rm.stdout.matchAll(/^@@CTIME /gm)].length, 2, 'the dispatchers stay (conffiles)', shown(rm));
    t.match(rm.stdout, recorded(), 'and the record with them');
    t.match(rm.stdout, /^@@RC2 0$/m, 'installed again', shown(rm));
    t.match(rm.stdout, recorded('@@RECORD2'), 'the record is kept');

    // 6. Purge: everything goes, libvirt is reloaded to forget the hooks.
    const purge = o.run(
      fakeDaemon('dpkg --purge qemu-modwatch') +
        `
  dpkg-query -W qemu-modwatch >/dev/null 2>&1; echo "@@QUERY $?"
  dpkg -L qemu-modwatch >/dev/null 2>&1; echo "@@LIST $?"
  ls /var/lib/dpkg/info/ | grep -c qemu-modwatch
  grep -rc qemu-modwatch /var/lib/dpkg/triggers/ /var/lib/dpkg/status | grep -v ':0$'
  ` +
        statScript([
          ...Object.keys(FILES),
          STATE_DIR,
          INSTALLED_AFTER,
          ...ENABLEMENT,
          '/usr/libexec/qemu-modwatch',
          '/usr/share/doc/qemu-modwatch',
        ]),
    );
    t.match(purge.stdout, /^@@RC 0$/m, 'dpkg --purge succeeds', shown(purge));
    t.match(purge.stdout, /^@@FAKE exit 129$/m, 'purge reloads the running libvirtd');
    t.match(purge.stdout, /^@@QUERY 1$/m, 'dpkg no longer knows the package');
    t.match(purge.stdout, /^@@LIST 1$/m, 'dpkg -L has nothing');
    t.match(purge.stdout, /^0$/m, 'no /var/lib/dpkg/info/qemu-modwatch.* left');
    t.notMatch(purge.stdout, /^\/var\/lib\/dpkg\/\S+:[1-9]/m, 'neither status nor triggers mention qemu-modwatch');
    const gone = marked<Record<string, Stat | null>>(purge, '@@STAT');
    for (const [p, s] of Object.entries(gone)) t.equal(s, null, `${p} is gone`);
    const left = o.created().filter((p) => !BOOKKEEPING.some((re) => re.test(p)));
    t.same(left, [], 'nothing the package or its scripts made is left (overlay upper dirs)');
    const touched = o.modified().filter((p) => !BOOKKEEPING.some((re) => re.test(p)));
    for (const p of touched) {
      const u = o.upperPath(p);
      if (u && fs.statSync(u).isFile() && fs.statSync(u).size < 4 << 20)
        t.notMatch(fs.readFileSync(u, 'latin1'), /qemu-modwatch|qmw-test/, `${p} does not mention the package`);
    }
  });
}

t.test('either kind replaces the other in place', { skip: installReason.node || false }, async (t) => {
  if (!KINDS.every((k) => fs.existsSync(debFiles[k]))) return t.fail('the build step failed');
  const o = new OverlayHost('qemu-modwatch-deb-crossgrade');
  t.teardown(() => o.cleanup());
  const prep = o.prepare(neverInstalled([...Object.keys(FILES), ...ENABLEMENT]));
  t.notMatch(prep.stdout, /^@@STILL/m, 'the namespace starts as a host without qemu-modwatch', shown(prep));
  const which = (n: number) =>
    `dpkg-query -W -f='@@IS${n} \${Architecture} \${Status}\\n' qemu-modwatch; echo "@@EXE${n} $(head -c 15 ${EXE})"`;
  const r = o.run(`
dpkg -i ${shq(debFiles['self-contained'])}; echo "@@RC1 $?"
echo '# an admin was here' >> /etc/qemu-modwatch.conf
dpkg -i ${shq(debFiles.node)} </dev/null; echo "@@RC2 $?"
${which(2)}
echo "@@CONF $(tail -n 1 /etc/qemu-modwatch.conf)"
[ -L ${ENABLEMENT[0]} ] && echo "@@ENABLED"
[ -f ${STATE} ] && echo "@@STATE"
${SBIN} --version
dpkg -i ${shq(debFiles['self-contained'])} </dev/null; echo "@@RC3 $?"
${which(3)}
dpkg --purge qemu-modwatch; echo "@@RC4 $?"`);
  t.match(r.stdout, /^@@RC1 0$/m, 'the self-contained .deb installs', shown(r));
  t.match(r.stdout, /^Preparing to unpack .*_all\.deb \.\.\.$/m, 'dpkg unpacks the node one over it');
  t.match(r.stdout, /^@@RC2 0$/m, 'the node .deb replaces it', shown(r));
  t.match(r.stdout, /^@@IS2 all install ok installed$/m, 'dpkg has the node kind now, Architecture: all');
  t.match(r.stdout, /^@@EXE2 #!\/usr\/bin\/node$/m, 'the executable is the bundle');
  t.match(r.stdout, /^@@CONF # an admin was here$/m, "the admin's conffile edit is kept, no prompt");
  t.match(r.stdout, /^@@ENABLED$/m, 'the path unit stays enabled');
  t.match(r.stdout, /^@@STATE$/m, 'the state stays');
  t.match(r.stdout, new RegExp(`^qemu-modwatch ${version.replace(/[.]/g, '\\.')}$`, 'm'), 'and it runs');
  t.match(r.stdout, /^@@RC3 0$/m, 'and back', shown(r));
  t.match(r.stdout, new RegExp(`^@@IS3 ${arch} install ok installed$`, 'm'), `dpkg has the ${arch} kind again`);
  t.notMatch(r.stdout, /^@@EXE3 #!/m, 'the executable is the single executable again');
  t.match(r.stdout, /^@@RC4 0$/m, 'purge', shown(r));
  t.same(
    o.created().filter((p) => !BOOKKEEPING.some((re) => re.test(p))),
    [],
    'nothing left after the crossgrades and the purge',
  );
});

/**
 * The .deb repacked as version `v` with both dispatchers changed (a line
 * more), as an upgrade that changes them: dpkg replaces a conffile the
 * admin left alone when the package's version of it changed.
 */
function upgradeDeb(o: OverlayHost, deb: string, v: string): string {
  const dir = o.scratch(`repack-${v}`);
  fs.rmSync(dir, { recursive: true, force: true });
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  };
  run('dpkg-deb', ['-R', deb, dir]);
  const control = path.join(dir, 'DEBIAN/control');
  fs.writeFileSync(control, fs.readFileSync(control, 'utf8').replace(/^Version: .*$/m, `Version: ${v}`));
  for (const d of DISPATCHERS) fs.appendFileSync(path.join(dir, d), `# ${v}\n`);
  const out = path.join(path.dirname(dir), `qemu-modwatch_${v}.deb`);
  run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', dir, out]);
  return out;
}

/**
 * Runs the service's ExecStart in a namespace set up from the unit's own
 * ProtectSystem=strict, ReadWritePaths=, StateDirectory= and PrivateTmp=,
 * after a module change that makes the cache entry of the emulator stale.
 * Also once without /usr/bin writable, to show the check would notice.
 */
async function sandboxChecks(t: Test, o: OverlayHost): Promise<void> {
  const unit = fs.readFileSync(path.join(top, 'hooks/systemd/qemu-modwatch.service'), 'utf8');
  const values = (key: string) =>
    [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].flatMap((m) => m[1]!.trim().split(/\s+/)).filter(Boolean);
  t.same(values('ProtectSystem'), ['strict'], 'ProtectSystem=strict');
  const exec = values('ExecStart');
  t.same(exec, ['/usr/sbin/qemu-modwatch', 'refresh'], 'ExecStart runs refresh');
  const rw = [...values('ReadWritePaths'), ...values('StateDirectory').map((d) => `/var/lib/${d}`)];
  t.ok(rw.includes('-/usr/bin'), 'the emulators in /usr/bin stay writable for the chmod nudge');
  if (!fs.existsSync(EMULATOR)) {
    t.comment(`sandbox check skipped: no ${EMULATOR} to nudge`);
    return;
  }
  const emuHash = sha256(EMULATOR);
  /** The PATH systemd gives a system service. */
  const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  const sandbox = (paths: string[]) => {
    // Read-only every mount, then the listed paths writable again; "-" = may be missing.
    const lines = [
      `for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do case $m in /proc*|/sys*|/dev*) ;; *) ` +
        `mount -o remount,bind,ro "$m" 2>/dev/null;; esac; done`,
      'mount -t tmpfs tmpfs /tmp',
    ];
    for (const p of paths) {
      const opt = p.startsWith('-');
      const d = p.replace(/^-/, '');
      lines.push(
        `${opt ? `[ -e ${shq(d)} ] && ` : ''}{ mkdir -p ${shq(d)} 2>/dev/null; mount --bind ${shq(d)} ` +
          `${shq(d)} && mount -o remount,bind,rw ${shq(d)}; }`,
      );
    }
    lines.push(`touch /usr/qmw-probe 2>/dev/null && echo "@@USR writable" || echo "@@USR read-only"`);
    // systemd starts ExecStart with its own environment, not the test runner's (whose NODE_OPTIONS
    // would make the distro kind's node load the runner's modules, hidden under the private /tmp).
    lines.push(`env -i PATH=${SYSTEMD_PATH} ${exec.join(' ')}; echo "@@EXEC $?"`);
    return `unshare --mount --propagation private sh -c ${shq(lines.join('\n'))}`;
  };
  const scenario = (paths: string[]) => {
    // A module appears after the cache entry was written: the entry is stale.
    const r = o.run(`
set -e
made=
c=/var/cache/libvirt
for d in $c $c/qemu $c/qemu/capabilities; do [ -d "$d" ] || made="$d $made"; done
mkdir -p /var/cache/libvirt/qemu/capabilities
f=/var/cache/libvirt/qemu/capabilities/${emuHash}.xml
{
  printf '<qemuCaps>\\n  <emulator>${EMULATOR}</emulator>\\n  <qemuctime>%s</qemuctime>\\n' "$(stat -c %Z ${EMULATOR})"
  printf '  <selfctime>1700000000</selfctime>\\n  <selfvers>9000000</selfvers>\\n</qemuCaps>\\n'
} > "$f"
chmod 600 "$f"; touch -d '-1 minute' "$f"
${SBIN} accept >/dev/null
src=$(ls /usr/lib/${multiarch}/qemu/*.so | head -n 1)
cp "$src" /usr/lib/${multiarch}/qemu/hw-qmw-sandbox-$$.so
before=$(stat -c %z ${EMULATOR})
set +e
${sandbox(paths)}
echo "@@ENTRY $([ -e "$f" ] && echo kept || echo deleted)"
echo "@@NUDGED $([ "$(stat -c %z ${EMULATOR})" = "$before" ] && echo no || echo yes)"
rm -f /usr/lib/${multiarch}/qemu/hw-qmw-sandbox-*.so "$f"
for d in $made; do rmdir "$d"; done
${SBIN} accept >/dev/null
`);
    return r;
  };
  const ok = scenario(rw);
  t.match(ok.stdout, /^@@USR read-only$/m, 'the simulated sandbox makes /usr read-only', shown(ok));
  t.match(ok.stdout, /^@@EXEC 0$/m, 'refresh exits 0 in the sandbox', shown(ok));
  t.match(ok.stdout, /^@@ENTRY deleted$/m, 'the stale cache entry is deleted in the sandbox', shown(ok));
  t.match(ok.stdout, /^@@NUDGED yes$/m, 'the emulator is nudged (chmod) in the sandbox', shown(ok));
  const without = scenario(rw.filter((p) => p !== '-/usr/bin'));
  t.match(without.stdout, /^@@EXEC 0$/m, 'without /usr/bin writable refresh still exits 0');
  t.match(
    without.stdout,
    /^@@NUDGED no$/m,
    'without /usr/bin writable the nudge fails (EROFS): the check can tell',
    shown(without),
  );
}

t.test(
  'systemd running: units started and stopped, libvirt reloaded through systemctl',
  { skip: reason || false },
  async (t) => {
    if (!fs.existsSync(debFiles['self-contained'])) return t.fail('the build step failed');
    const o = new OverlayHost('qemu-modwatch-deb-systemd');
    t.teardown(() => o.cleanup());
    const prep = o.prepare(neverInstalled([...Object.keys(FILES), ...ENABLEMENT]));
    t.notMatch(prep.stdout, /^@@STILL/m, 'the namespace starts as a host without qemu-modwatch', shown(prep));
    // A systemctl that logs its arguments: only virtqemud is active;
    // is-enabled answers from the enablement links.
    const stub = o.scratch('stub');
    const log = path.join(stub, 'systemctl.log');
    fs.writeFileSync(
      path.join(stub, 'systemctl'),
      `#!/bin/sh
echo "$*" >> ${shq(log)}
# deb-systemd-helper enables through an offline preset: the real one does that.
case " $* " in *" --root="*) exec /usr/bin/systemctl "$@" ;; esac
for a in "$@"; do last=$a; done
case " $* " in
  *" is-active "*) [ "$last" = virtqemud.service ] && exit 0; exit 3 ;;
  *" is-enabled "*)
    if [ -e /etc/systemd/system/paths.target.wants/$last ]; then echo enabled; exit 0; fi
    echo disabled; exit 1 ;;
esac
exit 0
`,
      { mode: 0o755 },
    );
    const env = {
      PATH: `${stub}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      LC_ALL: 'C',
      HOME: '/root',
      TMPDIR: '/tmp',
    };
    // policy-rc.d (a container's "start nothing") would keep the start from happening.
    const r = o.run(
      'mkdir -p /run/systemd/system; rm -f /usr/sbin/policy-rc.d; ' +
        `dpkg -i ${shq(debFiles['self-contained'])}; echo "@@RC $?"`,
      { env },
    );
    t.match(r.stdout, /^@@RC 0$/m, 'installs', shown(r));
    const calls = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : []);
    const installCalls = calls();
    t.ok(installCalls.includes('--system daemon-reload'), 'daemon-reload after the units arrived', {
      calls: installCalls,
    });
    t.ok(
      installCalls.some((c) => /\brestart qemu-modwatch\.path$/.test(c)),
      'the enabled path unit is (re)started',
      { calls: installCalls },
    );
    t.ok(
      installCalls.includes('reload virtqemud.service'),
      'the active virtqemud is reloaded, awaited (bounded by timeout) so that a failure shows',
      { calls: installCalls },
    );
    t.notOk(
      installCalls.some((c) => /reload libvirtd\.service/.test(c)),
      'the inactive libvirtd is not',
      { calls: installCalls },
    );
    fs.writeFileSync(log, '');
    const p = o.run(
      `dpkg --purge qemu-modwatch; echo "@@RC $?"; ls /etc/systemd/system/paths.target.wants/ 2>/dev/null | ` +
        `grep -c qemu-modwatch`,
      { env },
    );
    t.match(p.stdout, /^@@RC 0$/m, 'purges', shown(p));
    t.match(p.stdout, /^0$/m, 'the enablement link is gone');
    const purgeCalls = calls();
    t.ok(
      purgeCalls.some((c) =>
        c.endsWith(
          'stop qemu-modwatch.path qemu-modwatch.service qemu-modwatch-textfile.timer qemu-modwatch-textfile.service',
        ),
      ),
      'prerm stops all four units',
      { calls: purgeCalls },
    );
    t.ok(purgeCalls.includes('reload virtqemud.service'), 'purge reloads virtqemud', { calls: purgeCalls });
  },
);

t.test('the host is untouched', { skip: reason || false }, async (t) => {
  const now = hostView();
  t.same(now, before, "the host's dpkg status, package files and state exactly as before");
});
