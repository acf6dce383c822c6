// What the test run must leave as it found it: every host path the project
// installs into, reads as libvirt's or QEMU's, or mounts over in its private
// worlds. test/run.mjs takes a snapshot before and after the whole run and
// fails the run with the differences. Plain JavaScript: the runner loads it
// before any TypeScript loader is there.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Below which a test's own temp dir lives; names of ours start like this. */
export const TEMP_PREFIXES = ['qemu-modwatch', 'qmw-', 'modwatch-', 'mw-'];

/**
 * The host paths, whole trees. `match` narrows a directory to the entries
 * whose names it matches (the emulators among /usr/bin).
 */
export function hostPaths() {
  const multiarchDirs = listDirs('/usr/lib')
    .filter((d) => /-linux-gnu\w*$/.test(d))
    .map((d) => `${d}/qemu`);
  return [
    '/etc/libvirt',
    '/etc/qemu-modwatch.conf',
    '/var/lib/qemu-modwatch',
    '/var/cache/libvirt',
    '/var/lib/libvirt',
    '/var/log/libvirt',
    '/run/libvirt',
    '/run/qemu',
    '/usr/libexec/qemu-modwatch',
    '/usr/sbin/qemu-modwatch',
    '/usr/share/man/man8/qemu-modwatch.8.gz',
    '/usr/share/bash-completion/completions/qemu-modwatch',
    '/usr/share/doc/qemu-modwatch',
    // QEMU: module directories and emulators.
    ...multiarchDirs,
    '/usr/lib/qemu',
    '/usr/lib64/qemu',
    '/usr/local/lib/qemu',
    { dir: '/usr/bin', match: /^qemu/ },
    { dir: '/usr/libexec', match: /^qemu/ },
    // systemd, apt, dnf and pacman drop-in directories.
    '/etc/systemd/system',
    '/usr/lib/systemd/system',
    '/usr/lib/systemd/system-preset',
    '/run/systemd/system',
    { dir: '/run/systemd', match: /^nspawn/ },
    '/etc/apt/apt.conf.d',
    '/etc/dnf',
    '/etc/pacman.d/hooks',
    '/usr/share/libalpm/hooks',
    // Package databases.
    '/var/lib/dpkg',
    '/var/lib/rpm',
    '/usr/lib/sysimage/rpm',
    // Debian's rpm: its database is ~/.rpmdb.
    '/root/.rpmdb',
    // Users and groups (the worlds add libvirt-qemu privately).
    '/etc/passwd',
    '/etc/group',
  ];
}

function listDirs(dir) {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => path.join(dir, e.name));
  } catch {
    return [];
  }
}

/** One line per path: type, mode, owner, size, mtime and ctime (ns), a link's target. */
function describe(p) {
  const st = fs.lstatSync(p, { bigint: true, throwIfNoEntry: false });
  if (!st) return null;
  const type = st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  const link = type === 'link' ? ` -> ${fs.readlinkSync(p)}` : '';
  const size = type === 'file' ? ` size=${st.size}` : '';
  return (
    `${type} ${(Number(st.mode) & 0o7777).toString(8)} ${st.uid}:${st.gid}${size} mtime=${st.mtimeNs} ` +
    `ctime=${st.ctimeNs}${link}`
  );
}

function walk(p, out, match) {
  const d = describe(p);
  if (d === null) return;
  out.set(p, d);
  if (!d.startsWith('dir ')) return;
  let names;
  try {
    names = fs.readdirSync(p);
  } catch (e) {
    out.set(p, `${d} (unreadable: ${e.code})`);
    return;
  }
  for (const n of names.sort()) if (!match || match.test(n)) walk(path.join(p, n), out, undefined);
}

/**
 * A snapshot: path -> description, for the given paths (default
 * hostPaths()), plus the names of our temp dirs in the temp directory.
 */
export function snapshot(paths = hostPaths(), tmp = os.tmpdir()) {
  const out = new Map();
  for (const p of paths) {
    if (typeof p === 'string') walk(p, out, undefined);
    else {
      const d = describe(p.dir);
      if (d?.startsWith('dir '))
        for (const n of fs.readdirSync(p.dir).sort()) if (p.match.test(n)) walk(path.join(p.dir, n), out, undefined);
    }
  }
  try {
    for (const n of fs.readdirSync(tmp).sort()) {
      if (TEMP_PREFIXES.some((pre) => n.startsWith(pre))) out.set(path.join(tmp, n), 'a test temp dir');
    }
  } catch {
    /* no temp dir: nothing of ours in it */
  }
  return out;
}

/** What differs between two snapshots, one line a path: "+ p", "- p" or "~ p: before => after". */
export function differences(before, after) {
  const lines = [];
  for (const [p, d] of before) {
    const a = after.get(p);
    if (a === undefined) lines.push(`- ${p} (was: ${d})`);
    else if (a !== d) lines.push(`~ ${p}: ${d} => ${a}`);
  }
  for (const [p, a] of after) if (!before.has(p)) lines.push(`+ ${p} (${a})`);
  return lines.sort((x, y) => (x.slice(2) < y.slice(2) ? -1 : 1));
}
