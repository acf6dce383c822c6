#!/usr/bin/env node
// `npm run package:rpm`: the binary RPMs of the prebuilt dist/ files (npm
// run build first), from build/rpm/qemu-modwatch.spec, with a private
// %_topdir (dist/rpmbuild): the self-contained one for the build host's
// architecture, and the noarch one that runs on the distro's nodejs
// (packaging.mjs, KINDS). Usage:
//   node build/package-rpm.mjs [--out DIR] [--dist DIR] [--topdir DIR] [--kind KIND] [--fast]
// --out: where the .rpms go (default dist/); --dist: where the build's
// files are (default dist/); --kind: only that one; --fast: gzip -1
// payload instead of xz (tests: the layout is the same). Prints the path
// of each .rpm.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { die, nodeExecutable, nodeFloor, startPackaging, top } from './packaging.mjs';

const { opts, kinds, version: npmVersion, built } = startPackaging('package-rpm', ['topdir']);
const { dist, out, fast } = opts;
const topdir = opts.topdir ?? path.join(dist, 'rpmbuild');
const hooks = path.join(top, 'hooks');
const spec = path.join(top, 'build/rpm/qemu-modwatch.spec');

// Source name in the spec -> the file staged under it; Source0, the
// executable, is the kind's own.
const sources = {
  'qemu-modwatch.8': built.man,
  'qemu-modwatch.bash-completion': built.completion,
  '50-qemu-modwatch.qemu': path.join(hooks, 'qemu.d/50-qemu-modwatch'),
  '50-qemu-modwatch.daemon': path.join(hooks, 'daemon.d/50-qemu-modwatch'),
  'qemu-modwatch.conf': path.join(hooks, 'qemu-modwatch.conf'),
  'qemu-modwatch.path': path.join(hooks, 'systemd/qemu-modwatch.path'),
  'qemu-modwatch.service': path.join(hooks, 'systemd/qemu-modwatch.service'),
  '50-qemu-modwatch.preset': path.join(hooks, 'systemd/50-qemu-modwatch.preset'),
  'qemu-modwatch-textfile.service': path.join(hooks, 'systemd/qemu-modwatch-textfile.service'),
  'qemu-modwatch-textfile.timer': path.join(hooks, 'systemd/qemu-modwatch-textfile.timer'),
  'qemu-modwatch.actions': path.join(hooks, 'dnf5/qemu-modwatch.actions'),
  'qemu-modwatch.rules.yml': path.join(hooks, 'prometheus/qemu-modwatch.rules.yml'),
  'qemu-modwatch.icinga2.conf': path.join(hooks, 'icinga2/qemu-modwatch.conf'),
  'libvirt-reload.sh': path.join(top, 'build/deb/libvirt-reload.sh'),
  'hooks-present.sh': path.join(top, 'build/deb/hooks-present.sh'),
  copyright: path.join(top, 'build/deb/copyright'),
};
for (const [name, file] of Object.entries(sources)) {
  if (!fs.existsSync(file)) die(`${file} is missing (Source ${name} of the spec)`);
}
if (spawnSync('rpmbuild', ['--version'], { stdio: 'ignore' }).status !== 0)
  die('rpmbuild not found (package rpm on Debian, rpm-build elsewhere)');

// RPM versions have no '-'; '~' sorts a pre-release before its release, as in npm.
const version = npmVersion.replace(/-/g, '~');
// The self-contained executable is a copy of the node that ran the build.
const hostArch = {
  x64: 'x86_64',
  arm64: 'aarch64',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  ia32: 'i686',
}[process.arch];
if (!hostArch && kinds.includes('self-contained')) die(`no RPM architecture known for node's ${process.arch}`);

for (const kind of kinds) console.log(buildRpm(kind));

/** Builds the RPM of one kind into out; returns its path. */
function buildRpm(kind) {
  const node = kind === 'node';
  fs.rmSync(topdir, { recursive: true, force: true });
  const sourcedir = path.join(topdir, 'SOURCES');
  fs.mkdirSync(sourcedir, { recursive: true });
  for (const [name, file] of Object.entries(sources)) fs.copyFileSync(file, path.join(sourcedir, name));
  const exe = path.join(sourcedir, 'qemu-modwatch');
  if (node) fs.writeFileSync(exe, nodeExecutable(built.bundle));
  else fs.copyFileSync(built.exe, exe);

  const rpmbuild = spawnSync(
    'rpmbuild',
    [
      '-bb',
      '--target',
      node ? 'noarch' : hostArch,
      '--define',
      `_topdir ${topdir}`,
      // A database of its own: rpmbuild opens one, and Debian's rpm keeps it
      // in the builder's home (~/.rpmdb), which a build has no business in.
      '--define',
      `_dbpath ${path.join(topdir, 'rpmdb')}`,
      '--define',
      `_sourcedir ${sourcedir}`,
      '--define',
      `pkg_version ${version}`,
      ...(node ? ['--define', `node_floor ${nodeFloor()}`] : []),
      // xz: every rpm since RHEL 6 reads it; the default differs between rpms.
      '--define',
      `_binary_payload ${fast ? 'w1.gzdio' : 'w6T.xzdio'}`,
      spec,
    ],
    { encoding: 'utf8', cwd: top },
  );
  if (rpmbuild.status !== 0) die(`rpmbuild failed (exit ${rpmbuild.status}):\n${rpmbuild.stderr}${rpmbuild.stdout}`);
  const written = [...rpmbuild.stdout.matchAll(/^Wrote: (.*\.rpm)$/gm)].map((m) => m[1]);
  if (written.length !== 1) die(`expected one rpm, rpmbuild wrote ${written.length}:\n${rpmbuild.stdout}`);
  fs.mkdirSync(out, { recursive: true });
  const rpm = path.join(out, path.basename(written[0]));
  fs.copyFileSync(written[0], rpm);
  return rpm;
}
