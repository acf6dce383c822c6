#!/usr/bin/env node
// `npm run package:deb`: the .debs of the prebuilt dist/ files (npm run
// build first): the self-contained one, for the architecture dpkg reports,
// and the one that runs on the distro's nodejs, Architecture: all
// (packaging.mjs, KINDS). Usage:
//   node build/package-deb.mjs [--out DIR] [--dist DIR] [--kind KIND] [--fast]
// --out: where the .debs go (default dist/); --dist: where the build's
// files are (default dist/); --kind: only that one; --fast: gzip -1 instead
// of xz -6 (tests: the contents are the same, the build takes seconds, not
// minutes). Prints the path of each .deb. Needs dpkg-deb and dpkg-shlibdeps
// (dpkg-dev).
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { die, nodeExecutable, nodeFloor, startPackaging, top } from './packaging.mjs';

const { opts, kinds, version, built } = startPackaging('package-deb');
const { out, fast } = opts;
const here = path.join(top, 'build/deb');
const hooks = path.join(top, 'hooks');

for (const tool of ['dpkg', 'dpkg-deb', 'dpkg-shlibdeps', 'dpkg-architecture']) {
  if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).status !== 0) {
    die(`${tool} not found: building a .deb needs dpkg and dpkg-dev`);
  }
}

if (!/^[0-9][A-Za-z0-9.+~-]*$/.test(version)) die(`package.json version ${version} is not a Debian version`);
const hostArch = sh('dpkg', ['--print-architecture']);
const multiarchOf = (a) => sh('dpkg-architecture', ['-qDEB_HOST_MULTIARCH', '-a', a]);
// Where QEMU's modules are on the architectures a package installs on: the
// trigger directories. An Architecture: all package installs wherever
// Debian builds nodejs and QEMU.
const NODE_ARCHES = ['amd64', 'arm64', 'armel', 'armhf', 'i386', 'loong64', 'mips64el', 'ppc64el', 'riscv64', 's390x'];

for (const kind of kinds) console.log(buildDeb(kind));

/** Builds the .deb of one kind into out; returns its path. */
function buildDeb(kind) {
  const node = kind === 'node';
  const arch = node ? 'all' : hostArch;
  if (!node) {
    // The executable is a copy of the node that ran the build: it must be
    // for the architecture the package claims.
    const nodeArch = {
      x64: 'amd64',
      arm64: 'arm64',
      ia32: 'i386',
      arm: 'armhf',
      ppc64: 'ppc64el',
      s390x: 's390x',
      riscv64: 'riscv64',
      loong64: 'loong64',
    }[process.arch];
    if (nodeArch && nodeArch !== arch)
      die(`dpkg says ${arch} but the executable is a ${process.arch} node: build on a native ${arch} host`);
  }
  const multiarchs = [...new Set((node ? NODE_ARCHES : [arch]).map(multiarchOf))];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qemu-modwatch-deb-'));
  try {
    const root = path.join(work, 'debian/qemu-modwatch');
    const put = (rel, mode, content) => {
      const file = path.join(root, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
      fs.chmodSync(file, mode); // not the umask's or the checkout's mode
    };
    const read = (file) => fs.readFileSync(file);

    put('usr/libexec/qemu-modwatch/qemu-modwatch', 0o755, node ? nodeExecutable(built.bundle) : read(built.exe));
    fs.mkdirSync(path.join(root, 'usr/sbin'), { recursive: true });
    fs.symlinkSync('../libexec/qemu-modwatch/qemu-modwatch', path.join(root, 'usr/sbin/qemu-modwatch'));
    put('etc/libvirt/hooks/qemu.d/50-qemu-modwatch', 0o755, read(path.join(hooks, 'qemu.d/50-qemu-modwatch')));
    put('etc/libvirt/hooks/daemon.d/50-qemu-modwatch', 0o755, read(path.join(hooks, 'daemon.d/50-qemu-modwatch')));
    put('etc/qemu-modwatch.conf', 0o644, read(path.join(hooks, 'qemu-modwatch.conf')));
    put('etc/apt/apt.conf.d/80qemu-modwatch', 0o644, read(path.join(hooks, 'apt/80qemu-modwatch')));
    // /usr/lib, not /lib: the same on merged-/usr systems, searched by systemd
    // everywhere, and no /lib aliasing for dpkg to get wrong.
    for (const unit of [
      'qemu-modwatch.path',
      'qemu-modwatch.service',
      'qemu-modwatch-textfile.service',
      'qemu-modwatch-textfile.timer',
    ]) {
      put(`usr/lib/systemd/system/${unit}`, 0o644, read(path.join(hooks, 'systemd', unit)));
    }
    // For the monitoring the admin runs: Prometheus' alerting rules, to be listed in rule_files;
    // Icinga 2's CheckCommands, which Debian's icinga2.conf includes with <plugins-contrib>;
    // Nagios' commands, in the directory Debian's nagios4 reads them from.
    put(
      'usr/share/qemu-modwatch/prometheus/qemu-modwatch.rules.yml',
      0o644,
      read(path.join(hooks, 'prometheus/qemu-modwatch.rules.yml')),
    );
    put(
      'usr/share/icinga2/include/plugins-contrib.d/qemu-modwatch.conf',
      0o644,
      read(path.join(hooks, 'icinga2/qemu-modwatch.conf')),
    );
    put('etc/nagios-plugins/config/qemu-modwatch.cfg', 0o644, read(path.join(hooks, 'nagios/qemu-modwatch.cfg')));
    put('usr/share/man/man8/qemu-modwatch.8.gz', 0o644, zlib.gzipSync(read(built.man), { level: 9 }));
    put('usr/share/bash-completion/completions/qemu-modwatch', 0o644, read(built.completion));
    put('usr/share/doc/qemu-modwatch/copyright', 0o644, read(path.join(here, 'copyright')));

    // Self-contained: Depends from the executable's ELF dependencies
    // (libc6, libstdc++6, ...); dpkg-shlibdeps wants a source package around
    // the binary package's tree. Node: the distro's nodejs, new enough.
    const depends = node ? `nodejs (>= ${nodeFloor()})` : shlibDepends(work, root);

    const files = walk(root);
    const etc = files.filter((f) => f.startsWith('etc/') && fs.lstatSync(path.join(root, f)).isFile());
    const debian = path.join(root, 'DEBIAN');
    fs.mkdirSync(debian);
    // The shell shared with the RPM's scriptlets, in place of its placeholder.
    const shared = {
      '#LIBVIRT_RELOAD#': fs.readFileSync(path.join(here, 'libvirt-reload.sh'), 'utf8').trimEnd(),
      '#HOOKS_PRESENT#': fs.readFileSync(path.join(here, 'hooks-present.sh'), 'utf8').trimEnd(),
    };
    for (const script of ['preinst', 'postinst', 'prerm', 'postrm']) {
      let text = fs.readFileSync(path.join(here, script), 'utf8');
      for (const [mark, code] of Object.entries(shared)) text = text.replace(mark, () => code);
      if (/^#[A-Z_]+#$/m.test(text)) die(`${script}: placeholder left`);
      put(`DEBIAN/${script}`, 0o755, text);
    }
    // Every /etc file is a conffile: an admin's edits survive upgrades, and
    // dpkg removes them only on purge.
    put('DEBIAN/conffiles', 0o644, etc.map((f) => `/${f}\n`).join(''));
    // Any file installed or removed in the module directories (qemu-system-*
    // and the module packages) runs `postinst triggered`, once, at the end of
    // the dpkg run; noawait: the triggering packages need not wait for it.
    put(
      'DEBIAN/triggers',
      0o644,
      [...multiarchs.map((m) => `/usr/lib/${m}/qemu`), '/usr/lib/qemu'].map((d) => `interest-noawait ${d}\n`).join(''),
    );
    put(
      'DEBIAN/md5sums',
      0o644,
      files
        .filter((f) => !f.startsWith('etc/') && fs.lstatSync(path.join(root, f)).isFile())
        .map(
          (f) =>
            `${crypto
              .createHash('md5')
              .update(fs.readFileSync(path.join(root, f)))
              .digest('hex')}  ${f}\n`,
        )
        .join(''),
    );
    // Installed-Size as dpkg-gencontrol counts it: KiB per file, 1 per directory or symlink.
    let kib = 0;
    for (const f of files) {
      const st = fs.lstatSync(path.join(root, f));
      kib += st.isFile() ? Math.ceil(st.size / 1024) : 1;
    }
    const control = fs
      .readFileSync(path.join(here, 'control.in'), 'utf8')
      .replace('@VERSION@', version)
      .replace('@ARCH@', arch)
      .replace('@INSTALLED_SIZE@', String(kib))
      .replace('@DEPENDS@', depends);
    if (/@[A-Z_]+@/.test(control)) die('control.in: a placeholder is left');
    put('DEBIAN/control', 0o644, control);
    for (const d of walk(root, true)) fs.chmodSync(path.join(root, d), 0o755);

    fs.mkdirSync(out, { recursive: true });
    const deb = path.join(out, `qemu-modwatch_${version}_${arch}.deb`);
    execFileSync(
      'dpkg-deb',
      ['--root-owner-group', ...(fast ? ['-Zgzip', '-z1'] : ['-Zxz', '-z6']), '--build', root, deb],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    return deb;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Paths relative to root, sorted; directories only when dirs is true. DEBIAN/ is left out. */
function walk(root, dirs = false) {
  const found = [];
  const visit = (rel) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (r === 'DEBIAN' && !dirs) continue;
      if (e.isDirectory()) {
        if (dirs) found.push(r);
        visit(r);
      } else if (!dirs) found.push(r);
    }
  };
  visit('');
  if (dirs) found.push('.');
  return found.sort();
}

function shlibDepends(work, root) {
  fs.writeFileSync(
    path.join(work, 'debian/control'),
    'Source: qemu-modwatch\n\nPackage: qemu-modwatch\nArchitecture: any\n',
  );
  const shlibs = spawnSync('dpkg-shlibdeps', ['-O', '-e', path.join(root, 'usr/libexec/qemu-modwatch/qemu-modwatch')], {
    cwd: work,
    encoding: 'utf8',
  });
  const depends = /^shlibs:Depends=(.*)$/m.exec(shlibs.stdout ?? '')?.[1]?.trim();
  if (shlibs.status !== 0 || !depends) die(`dpkg-shlibdeps failed:\n${shlibs.stderr}`);
  return depends;
}

function sh(cmd, argv) {
  return execFileSync(cmd, argv, { encoding: 'utf8' }).trim();
}
