import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../os/atomic-file';
import { readCacheView } from '../host/cache-dir';
import { errCode, listDir, lstatOrNull, readlinkOrNull, sha256Hex, statOrNull } from '../os/file-info';
import {
  CHAINED_SUFFIX,
  CONFIG_FILE,
  HOOK_MARKER,
  HOOKS_DIR,
  MULTIARCH_RE,
  stateFiles,
  type Paths,
} from '../host/paths';
import { VERSION } from '../version';
import type { Driver } from '../core/daemons';
import { dispatcher, shellWord, shippedFile } from './shipped';
import { reloadCommand as daemonReload } from '../core/hooks-loaded';
import { anyHookOfOurs, daemonsOutsideRoot, reloadFacts, runningQemuDaemons } from '../host/daemons';
import { forgetHooksInstalledAfter, recordHooksInstalledAfter } from '../store/hooks-installed-after';
import { readManifest, type Manifest } from '../store/install-manifest';

// `install` / `uninstall`: places the executable, the hook dispatchers and
// the example config, and records what it placed in a manifest, so that
// uninstall removes exactly that. Idempotent: a second install changes
// nothing. Works under --root and with --dry-run.

export const DEFAULT_PREFIX = '/usr/libexec/qemu-modwatch';
export const SBIN_LINK = '/usr/sbin/qemu-modwatch';
/** libvirt runs <driver>.d/ drop-ins since 6.5.0; before, only the one file. */
const DROPIN_SINCE: Version = [6, 5, 0];

type Version = [number, number, number];
const DRIVERS: Driver[] = ['qemu', 'daemon'];

export interface InstallOptions {
  paths: Paths;
  prefix: string;
  dryRun: boolean;
  chain: boolean;
  /** The executable to install: this program's own file. */
  self: string;
}

export interface Outcome {
  stdout: string;
  exitCode: number;
}

export class InstallRefused extends Error {}

interface FileStep {
  path: string;
  content: Buffer;
  mode: number;
}

export function runInstall(o: InstallOptions): Outcome {
  const { paths } = o;
  const lines: string[] = [];
  const exe = path.posix.join(o.prefix, 'qemu-modwatch');
  const version = libvirtVersion(paths);
  const previous = readManifest(paths);
  // Once installed, the layout stays: the version may no longer be readable
  // (a cache emptied by invalidation), and a change of layout is an upgrade
  // of libvirt the admin handles with uninstall and install.
  const layout: Manifest['layout'] =
    previous?.layout ?? (version.version && older(version.version, DROPIN_SINCE) ? 'single' : 'dropin');
  const ours = new Set(previous?.files.map((f) => f.path) ?? []);
  const hadHook = Object.fromEntries(DRIVERS.map((d) => [d, driverHasHook(paths, d, ours)])) as Record<Driver, boolean>;

  const files: FileStep[] = [{ path: exe, content: fs.readFileSync(o.self), mode: 0o755 }];
  const renames: { from: string; to: string }[] = [];
  const chained: Manifest['chained'] = [...(previous?.chained ?? [])];
  for (const driver of DRIVERS) {
    if (layout === 'dropin') {
      files.push({
        path: `${HOOKS_DIR}/${driver}.d/50-qemu-modwatch`,
        content: Buffer.from(dispatcher(driver, exe)),
        mode: 0o755,
      });
      continue;
    }
    const hook = `${HOOKS_DIR}/${driver}`;
    const existing = lstatOrNull(paths.hostNoFollow(hook));
    const alreadyChained = chained.some((c) => c.hook === hook);
    if (existing && !ours.has(hook) && !alreadyChained) {
      if (!o.chain) {
        throw new InstallRefused(
          `${hook} exists and is not qemu-modwatch's; libvirt ${version.text} runs only that one file. ` +
            'Run install --chain to keep it and run it first, or move it away.',
        );
      }
      renames.push({ from: hook, to: hook + CHAINED_SUFFIX });
      // The move changes its ctime: keep the one that says since when it has been a hook (host/daemons.ts).
      chained.push({ hook, savedAs: hook + CHAINED_SUFFIX, ctimeMs: Number(existing.ctimeNs / 1_000_000n) });
    }
    if (chained.some((c) => c.hook === hook)) {
      const inner = path.posix.join(o.prefix, `hook-${driver}`);
      files.push({ path: inner, content: Buffer.from(dispatcher(driver, exe)), mode: 0o755 });
      files.push({ path: hook, content: Buffer.from(chainWrapper(hook + CHAINED_SUFFIX, inner)), mode: 0o755 });
    } else {
      files.push({ path: hook, content: Buffer.from(dispatcher(driver, exe)), mode: 0o755 });
    }
  }

  const configExists = lstatOrNull(paths.hostNoFollow(CONFIG_FILE)) !== null;
  const configCreated = previous?.configCreated ?? !configExists;
  const verb = o.dryRun ? 'would ' : '';
  for (const r of renames) lines.push(`${verb}move    ${r.from} -> ${r.to} (chained: it runs first)`);
  const written = files.map((f) => ({ step: f, changed: !sameFile(paths.host(f.path), f.content, f.mode) }));
  for (const { step, changed } of written) lines.push(`${changed ? `${verb}install ` : 'unchanged'} ${step.path}`);
  const linkChanged = readlinkOrNull(paths.hostNoFollow(SBIN_LINK)) !== exe;
  lines.push(`${linkChanged ? `${verb}link    ` : 'unchanged'} ${SBIN_LINK} -> ${exe}`);
  lines.push(
    configExists ? `kept      ${CONFIG_FILE} (exists)` : `${verb}install  ${CONFIG_FILE} (example, all defaults)`,
  );

  if (!o.dryRun) {
    // A time before ours arrive, written before they do, and only where none of ours is there: an upgrade keeps
    // the one from when they first came (core/hooks-loaded.ts).
    if (!anyHookOfOurs(paths)) recordHooksInstalledAfter(paths, Date.now());
    for (const r of renames) fs.renameSync(paths.hostNoFollow(r.from), paths.hostNoFollow(r.to));
    for (const { step, changed } of written)
      if (changed) placeFile(paths.hostNoFollow(step.path), step.content, step.mode);
    if (linkChanged) placeSymlink(paths.hostNoFollow(SBIN_LINK), exe);
    if (!configExists)
      placeFile(paths.hostNoFollow(CONFIG_FILE), Buffer.from(shippedFile('qemu-modwatch.conf')), 0o644);
    const manifest: Manifest = {
      schema: 1,
      version: VERSION,
      installedAt: new Date().toISOString(),
      layout,
      files: files.map((f) => ({ path: f.path, sha256: sha256Hex(f.content), mode: f.mode })),
      symlinks: [{ path: SBIN_LINK, target: exe }],
      chained,
      configCreated,
    };
    fs.mkdirSync(paths.host(paths.stateDir), { recursive: true, mode: 0o755 });
    writeFileAtomic(paths.hostNoFollow(stateFiles(paths).installManifest), JSON.stringify(manifest, null, 2) + '\n');
  }

  const nothing = renames.length === 0 && written.every((w) => !w.changed) && !linkChanged && configExists;
  if (nothing) lines.push('already installed; nothing changed');
  const where =
    layout === 'dropin'
      ? `drop-ins in ${HOOKS_DIR}/qemu.d and daemon.d`
      : `single hook files ${HOOKS_DIR}/qemu and daemon (no .d directories before 6.5)`;
  lines.push(previous ? `${where}, as installed before` : `libvirt ${version.text}: ${where}`);
  const firsts = DRIVERS.filter((d) => !hadHook[d]);
  if (firsts.length && !nothing) {
    lines.push(
      `libvirt reads which drivers have hooks when it starts or reloads; ${firsts.join(' and ')} had ` +
        `none, ${reloadAdvice(paths)}`,
    );
  }
  return { stdout: lines.join('\n') + '\n', exitCode: 0 };
}

export function runUninstall(paths: Paths, opts: { dryRun: boolean; purge: boolean }): Outcome {
  const manifest = readManifest(paths);
  const verb = opts.dryRun ? 'would ' : '';
  const lines: string[] = [];
  if (!manifest) {
    lines.push(`no install manifest in ${paths.stateDir}: nothing that install placed is known`);
  } else {
    for (const f of manifest.files) {
      const host = paths.host(f.path);
      const st = lstatOrNull(host);
      if (!st) continue;
      if (!st.isFile() || sha256Hex(fs.readFileSync(host)) !== f.sha256) {
        lines.push(`left      ${f.path} (changed since install)`);
        continue;
      }
      if (!opts.dryRun) fs.unlinkSync(host);
      lines.push(`${verb}remove  ${f.path}`);
    }
    for (const l of manifest.symlinks) {
      if (readlinkOrNull(paths.hostNoFollow(l.path)) !== l.target) continue;
      if (!opts.dryRun) fs.unlinkSync(paths.hostNoFollow(l.path));
      lines.push(`${verb}remove  ${l.path}`);
    }
    for (const c of manifest.chained) {
      if (!lstatOrNull(paths.hostNoFollow(c.savedAs)) || lstatOrNull(paths.hostNoFollow(c.hook))) continue;
      if (!opts.dryRun) fs.renameSync(paths.hostNoFollow(c.savedAs), paths.hostNoFollow(c.hook));
      lines.push(`${verb}restore ${c.hook} (the hook that was there before)`);
    }
    const prefixDirs = new Set(
      manifest.files.map((f) => path.posix.dirname(f.path)).filter((d) => d.startsWith('/usr/')),
    );
    if (!opts.dryRun) for (const d of prefixDirs) removeIfEmpty(paths.hostNoFollow(d));
    // A dispatcher left (changed since install) is still a hook of ours, there since after the record's time.
    if (!opts.dryRun && !anyHookOfOurs(paths)) forgetHooksInstalledAfter(paths);
  }
  if (opts.purge) {
    if (lstatOrNull(paths.hostNoFollow(CONFIG_FILE))) {
      if (!opts.dryRun) fs.unlinkSync(paths.hostNoFollow(CONFIG_FILE));
      lines.push(`${verb}remove  ${CONFIG_FILE}`);
    }
    if (lstatOrNull(paths.hostNoFollow(paths.stateDir))) {
      if (!opts.dryRun) fs.rmSync(paths.hostNoFollow(paths.stateDir), { recursive: true, force: true });
      lines.push(`${verb}remove  ${paths.stateDir}`);
    }
  } else {
    if (!opts.dryRun && manifest) fs.rmSync(paths.hostNoFollow(stateFiles(paths).installManifest), { force: true });
    lines.push(`kept      ${CONFIG_FILE} and ${paths.stateDir} (uninstall --purge removes them)`);
  }
  return { stdout: lines.join('\n') + '\n', exitCode: 0 };
}

/**
 * The wrapper for --chain: runs the admin's hook exactly as libvirt would
 * (same arguments, stdin and environment; its stdout and exit status are
 * what libvirt gets), then qemu-modwatch's dispatcher, which never prints.
 */
export function chainWrapper(chained: string, ours: string): string {
  return `#!/bin/sh
${HOOK_MARKER}
# Installed by qemu-modwatch install --chain. The hook that was here before
# is ${chained}: it runs first, exactly as libvirt would run it (same
# arguments, stdin and environment); its stdout and exit status are what
# libvirt gets. Then qemu-modwatch's dispatcher runs on the same stdin, told
# the daemon's PID (this shell's parent; the dispatcher's is this shell).
chained=${shellWord(chained)}
ours=${shellWord(ours)}
input=$(mktemp) || exec "$chained" "$@"
trap 'rm -f "$input"' EXIT
cat > "$input"
"$chained" "$@" < "$input"
status=$?
[ "$status" -eq 0 ] || exit "$status"
[ -x "$ours" ] || exit 0
QEMU_MODWATCH_DAEMON_PID=$PPID "$ours" "$@" < "$input" > /dev/null
`;
}

function libvirtVersion(paths: Paths): { version: Version | null; text: string } {
  if (paths.root === '/') {
    for (const daemon of ['/usr/sbin/virtqemud', '/usr/sbin/libvirtd']) {
      if (!fs.existsSync(daemon)) continue;
      const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
      const r = spawnSync(daemon, ['--version'], { encoding: 'utf8', timeout: 10_000 });
      const m = /(\d+)\.(\d+)\.(\d+)/.exec(r.stdout ?? '');
      if (m)
        return {
          version: [Number(m[1]), Number(m[2]), Number(m[3])],
          text: `${m[0]} (${path.basename(daemon)} --version)`,
        };
    }
  }
  // An image is never run: its package database, then its library's file name.
  const fromDpkg = dpkgVersion(paths, LIBVIRT_PACKAGES);
  if (fromDpkg)
    return {
      version: fromDpkg.version,
      text: `${fromDpkg.version.join('.')} (${fromDpkg.pkg} ${fromDpkg.raw} in its dpkg database)`,
    };
  const fromLibrary = libraryVersion(paths);
  if (fromLibrary)
    return { version: fromLibrary.version, text: `${fromLibrary.version.join('.')} (from ${fromLibrary.file})` };
  // libvirt records its own version in every capabilities cache entry.
  const selfvers = readCacheView(paths).entries.reduce((max, e) => Math.max(max, e.selfvers ?? 0), 0);
  if (selfvers > 0) {
    const v: Version = [Math.floor(selfvers / 1_000_000), Math.floor(selfvers / 1000) % 1000, selfvers % 1000];
    return { version: v, text: `${v.join('.')} (from its capabilities cache)` };
  }
  return { version: null, text: 'version unknown (assumed 6.5 or later)' };
}

/** The packages whose version is libvirt's daemon's, in the order Debian and Ubuntu split them. */
const LIBVIRT_PACKAGES = ['libvirt-daemon', 'libvirt-daemon-system', 'libvirt-daemon-driver-qemu', 'libvirt0'];
const MAX_STATUS_BYTES = 64 * 1024 * 1024;

/**
 * The upstream version of the first of `packages` that dpkg's status file
 * says is installed: "1:6.0.0-0ubuntu8" -> 6.0.0.
 */
function dpkgVersion(paths: Paths, packages: string[]): { pkg: string; raw: string; version: Version } | null {
  let text: string;
  try {
    const file = paths.host('/var/lib/dpkg/status');
    if ((statOrNull(file)?.size ?? 0n) > BigInt(MAX_STATUS_BYTES)) return null;
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const installed = new Map<string, string>();
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (name: string) => new RegExp(`^${name}: *(.*)$`, 'mi').exec(stanza)?.[1]?.trim();
    const pkg = field('Package');
    const version = field('Version');
    if (pkg && version && packages.includes(pkg) && /^install ok installed$/.test(field('Status') ?? ''))
      installed.set(pkg, version);
  }
  for (const pkg of packages) {
    const raw = installed.get(pkg);
    const m = raw ? /^(?:\d+:)?(\d+)\.(\d+)\.(\d+)/.exec(raw) : null;
    if (raw && m) return { pkg, raw, version: [Number(m[1]), Number(m[2]), Number(m[3])] };
  }
  return null;
}

/**
 * libvirt names its library by its version: libvirt.so.0.6000.0 is 6.0.0, libvirt.so.0.11003.0 is 11.3.0 (rpm
 * images too).
 */
function libraryVersion(paths: Paths): { file: string; version: Version } | null {
  const dirs = [
    '/usr/lib64',
    '/usr/lib',
    ...listDir(paths.host('/usr/lib'))
      .filter((n) => MULTIARCH_RE.test(n))
      .map((n) => `/usr/lib/${n}`),
  ];
  for (const dir of dirs) {
    for (const name of listDir(paths.host(dir))) {
      const m = /^libvirt\.so\.0\.(\d+)\.(\d+)$/.exec(name);
      if (m)
        return {
          file: `${dir}/${name}`,
          version: [Math.floor(Number(m[1]) / 1000), Number(m[1]) % 1000, Number(m[2])],
        };
    }
  }
  return null;
}

function older(a: Version, b: Version): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! < b[i]!;
  return false;
}

/** Whether libvirt already runs some hook for this driver (other than ours). */
function driverHasHook(paths: Paths, driver: Driver, ours: Set<string>): boolean {
  const single = `${HOOKS_DIR}/${driver}`;
  if (!ours.has(single) && isExecutableFile(paths.host(single))) return true;
  const dir = `${HOOKS_DIR}/${driver}.d`;
  let names: string[] = [];
  try {
    names = fs.readdirSync(paths.host(dir));
  } catch {
    return false;
  }
  return names.some((n) => !ours.has(`${dir}/${n}`) && isExecutableFile(paths.host(`${dir}/${n}`)));
}

/** What reloads the daemons that read the hooks: a command to paste, or why none is needed. */
function reloadAdvice(paths: Paths): string {
  // The running daemons, by the rule check uses. A real procfs under --root holds this machine's daemons, not
  // the root's: they are not named; an image's or a test's /proc is the root's.
  const outside = daemonsOutsideRoot(paths);
  const running = outside ? [] : runningQemuDaemons(paths);
  if (running.length) {
    const reload = reloadFacts(paths);
    return `so reload it now: ${running.map((d) => daemonReload(d, reload)).join('; ')}`;
  }
  if (!outside && paths.root === '/') return 'no libvirt daemon runs now: the next one to start reads them';
  const unit = lstatOrNull(paths.hostNoFollow('/run/libvirt/virtqemud-sock')) !== null ? 'virtqemud' : 'libvirtd';
  return `so where the system under ${paths.root} runs, reload it: systemctl reload ${unit}`;
}

function placeFile(file: string, content: Buffer, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  writeFileAtomic(file, content, { mode });
  // The umask may have narrowed the mode of the new file.
  fs.chmodSync(file, mode);
}

function placeSymlink(link: string, target: string): void {
  fs.mkdirSync(path.dirname(link), { recursive: true, mode: 0o755 });
  const tmp = `${link}.qemu-modwatch.tmp`;
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(target, tmp);
  fs.renameSync(tmp, link);
}

function sameFile(file: string, content: Buffer, mode: number): boolean {
  try {
    const st = fs.lstatSync(file);
    return (
      st.isFile() && (st.mode & 0o7777) === mode && st.size === content.length && fs.readFileSync(file).equals(content)
    );
  } catch {
    return false;
  }
}

function isExecutableFile(file: string): boolean {
  try {
    const st = fs.statSync(file);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

function removeIfEmpty(dir: string): void {
  try {
    fs.rmdirSync(dir);
  } catch (e) {
    if (!['ENOTEMPTY', 'EEXIST', 'ENOENT'].includes(errCode(e))) throw e;
  }
}
