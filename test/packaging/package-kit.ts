import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Test } from 'tap';
import { shq } from '../fixtures/shell';
import type { OverlayHost, RunResult } from './overlay-host';

export { shq };

// What the .deb and RPM tests share: where the build's files are, the
// installed paths both packages use, content hashes of the files a package
// is made from, and the refusal of a build with files missing.

export const top = path.resolve(__dirname, '../..');
export const dist = path.join(top, 'dist');
export const version = (JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8')) as { version: string })
  .version;

export const EXE = '/usr/libexec/qemu-modwatch/qemu-modwatch';

/**
 * The two kinds of package each build script makes from one dist/: the
 * single executable, or the bundle on the distro's Node.js. Both are named
 * qemu-modwatch and differ only in the executable, its dependencies and
 * the architecture.
 */
export const KINDS = ['self-contained', 'node'] as const;
export type Kind = (typeof KINDS)[number];
/** The oldest Node.js the node packages declare they need. */
export const NODE_FLOOR = (
  JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8')) as { config: { nodeFloor: string } }
).config.nodeFloor;
/** Where a package's executable comes from: a dist/ file, or (node:) the bundle under the distro's node. */
export const EXE_FROM: Record<Kind, string> = {
  'self-contained': 'dist/qemu-modwatch',
  node: 'node:dist/qemu-modwatch.cjs',
};

/** The bundle with /usr/bin/node, where Debian and Fedora install it, in place of its own #! line. */
export function asNodeExecutable(bundle: string): string {
  return `#!/usr/bin/node\n${bundle.startsWith('#!') ? bundle.slice(bundle.indexOf('\n') + 1) : bundle}`;
}
export const STATE_DIR = '/var/lib/qemu-modwatch';
export const STATE = `${STATE_DIR}/state.json`;
/** node_exporter's textfile directory on Debian (its package's --collector.textfile.directory default). */
export const TEXTFILE_DIR = '/var/lib/prometheus/node-exporter';
/** A module package the tests build, to fire the packages' triggers. */
export const DUMMY = 'qmw-test-dummy-module';

/**
 * Builds, in dir, the .deb of DUMMY: one file, hw-qmw-test-dummy.so with the
 * given bytes, in moduleDir (absolute, as installed), to fire the file
 * trigger. Returns dpkg-deb's result.
 */
export function buildDummyDeb(dir: string, moduleDir: string, bytes: Buffer | string, out: string) {
  const mod = path.join(dir, moduleDir);
  fs.mkdirSync(mod, { recursive: true });
  fs.mkdirSync(path.join(dir, 'DEBIAN'));
  fs.writeFileSync(path.join(mod, 'hw-qmw-test-dummy.so'), bytes);
  fs.writeFileSync(
    path.join(dir, 'DEBIAN/control'),
    [
      `Package: ${DUMMY}`,
      'Version: 1.0',
      'Architecture: all',
      'Maintainer: qemu-modwatch tests <test@qemu-modwatch.invalid>',
      'Description: test module for the qemu-modwatch trigger',
      '',
    ].join('\n'),
  );
  return spawnSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', dir, out], { encoding: 'utf8' });
}

/**
 * The line the packages' maintainer scripts print for a libvirt reload that failed (README, "Install";
 * build/deb/libvirt-reload.sh): the daemon (and its PID when signalled by PID), what failed, what that
 * means, and the command that reloads it, to the end of the line.
 */
export const RELOAD_FAILED = /^qemu-modwatch: could not reload (\S+(?: \(pid \d+\))?) \((.+)\): (.+); run: (.+)$/;

export const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * Content hashes of the repo files a package is made from, taken just
 * before it is built: a rebuild of dist/ while the test runs must not count.
 */
export class RepoSnapshot {
  private readonly hashes = new Map<string, string>();
  take(files: string[]): void {
    for (const f of files) this.hashes.set(f, RepoSnapshot.hash(f));
  }
  sha(file: string): string {
    return this.hashes.get(file) ?? RepoSnapshot.hash(file);
  }
  private static hash(file: string): string {
    if (!file.startsWith('node:')) return sha256(fs.readFileSync(path.join(top, file)));
    return sha256(asNodeExecutable(fs.readFileSync(path.join(top, file.slice('node:'.length)), 'utf8')));
  }
}

/**
 * For OverlayHost.prepare(): the world as a host that never had
 * qemu-modwatch, whatever this one has (the package installed, or its
 * state, files or directories left by anything): purged from dpkg's and
 * rpm's databases, inside the overlay only, and every path either package
 * or the tool itself makes removed.
 */
export function neverInstalled(paths: string[]): string {
  const all = [
    ...new Set([
      ...paths,
      STATE_DIR,
      '/usr/libexec/qemu-modwatch',
      '/usr/share/doc/qemu-modwatch',
      '/usr/share/licenses/qemu-modwatch',
    ]),
  ].sort();
  return `
if dpkg-query -W qemu-modwatch >/dev/null 2>&1; then dpkg --purge --force-all qemu-modwatch >/dev/null 2>&1; fi
if command -v rpm >/dev/null && rpm -q qemu-modwatch >/dev/null 2>&1; then
  rpm -e --nodeps --noscripts qemu-modwatch >/dev/null 2>&1
fi
rm -rf -- ${all.map(shq).join(' ')}
dpkg-query -W qemu-modwatch >/dev/null 2>&1 && echo "@@STILL dpkg"
command -v rpm >/dev/null && rpm -q qemu-modwatch >/dev/null 2>&1 && echo "@@STILL rpm"
for p in ${all.map(shq).join(' ')}; do { [ -e "$p" ] || [ -L "$p" ]; } && echo "@@STILL $p"; done
echo "@@PREPARED"
`;
}

/**
 * Runs build/package-deb.mjs (gzip -1: same contents, seconds, not minutes) for both kinds, or the one
 * asked for; it prints each .deb's path.
 */
export function buildDeb(out: string, kind?: Kind): SpawnSyncReturns<string> {
  const args = [path.join(top, 'build/package-deb.mjs'), '--out', out, '--fast', ...(kind ? ['--kind', kind] : [])];
  return spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 300_000 });
}

/** What a run printed, for a failed assertion's diagnostics. */
export const shown = (r: RunResult) => ({ code: r.code, stdout: r.stdout.slice(-4000), stderr: r.stderr.slice(-4000) });

/** Why the build's files are not there to package, or null. */
export function missingBuild(): string | null {
  for (const f of ['qemu-modwatch', 'qemu-modwatch.8', 'qemu-modwatch.bash-completion', 'qemu-modwatch.cjs']) {
    if (!fs.existsSync(path.join(dist, f))) return `dist/${f} is missing: run npm run build`;
  }
  return null;
}

/** A build/ packaging script given a dist/ with only the executable refuses, says why, and writes nothing. */
export function refusesPartialBuild(t: Test, script: string): void {
  const partial = fs.mkdtempSync(path.join(os.tmpdir(), 'qemu-modwatch-partial-dist-'));
  t.teardown(() => fs.rmSync(partial, { recursive: true, force: true }));
  fs.symlinkSync(path.join(dist, 'qemu-modwatch'), path.join(partial, 'qemu-modwatch'));
  const r = spawnSync(process.execPath, [path.join(top, 'build', script), '--dist', partial, '--out', partial], {
    encoding: 'utf8',
  });
  t.equal(r.status, 1, 'exits 1');
  t.match(
    r.stderr,
    /qemu-modwatch\.8 is missing \(the man page\): run 'npm run build' first/,
    'says what is missing and what to do',
  );
  t.equal(fs.readdirSync(partial).length, 1, 'writes no package');
}

/**
 * A stand-in "libvirtd" for maintainer scripts to find: a copy of sleep
 * under that name, which SIGHUP (a reload) kills with exit 129. The
 * returned function wraps a shell command so that the stand-in runs
 * around it; the output says "@@RC <the command's status>" and then
 * "@@FAKE alive" or "@@FAKE exit <status>".
 */
export function fakeLibvirtd(o: OverlayHost): (cmd: string) => string {
  const fake = o.scratch('fake');
  fs.copyFileSync('/bin/sleep', path.join(fake, 'libvirtd'));
  fs.chmodSync(path.join(fake, 'libvirtd'), 0o755);
  return (cmd) => `
${shq(path.join(fake, 'libvirtd'))} 600 & fake=$!
sleep 0.2
${cmd}
echo "@@RC $?"
sleep 0.3
if kill -0 "$fake" 2>/dev/null; then echo "@@FAKE alive"; kill "$fake"; else wait "$fake"; echo "@@FAKE exit $?"; fi`;
}
