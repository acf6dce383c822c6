import type { BinaryFacts } from './types';

// How QEMU itself finds and accepts a module (util/module.c, read for 7.2
// and 10.0, and measured on Debian's builds), as pure functions of what its
// binary says. Pure.

/**
 * The one upgrade-copy directory a build looks in: /var/run/qemu/ and its
 * QEMU_PKGVERSION with every character outside A-Za-z0-9+-.~ made `_`
 * ("Debian 1:7.2+dfsg-7+deb12u15" -> Debian_1_7.2+dfsg-7+deb12u15). null
 * when the build has no upgrade copies or its package version is unknown.
 */
export function upgradeDirOf(b: Pick<BinaryFacts, 'usesUpgradeDirs' | 'pkgVersion'>): string | null {
  if (!b.usesUpgradeDirs || b.pkgVersion === null) return null;
  return `/var/run/qemu/${b.pkgVersion.replace(/[^A-Za-z0-9+\-.~]/g, '_')}`;
}

/**
 * The target an emulator was built for, from its file name (qemu-system-x86_64: x86_64); null when the name
 * does not say.
 */
export function targetOf(emulatorPath: string | null): string | null {
  const base = emulatorPath?.slice(emulatorPath.lastIndexOf('/') + 1) ?? '';
  return base.startsWith('qemu-system-') && base.length > 'qemu-system-'.length
    ? base.slice('qemu-system-'.length)
    : null;
}

/**
 * Whether a build ever loads the module file `name` (hw-display-qxl.so):
 * QEMU asks only for modules in its table, and skips one whose target is
 * another than its own (accel-tcg-i386 for qemu-system-x86_64). null when
 * the binary's table could not be read: it may load anything.
 */
export function wouldLoad(b: Pick<BinaryFacts, 'modinfo'>, target: string | null, name: string): boolean | null {
  if (!b.modinfo) return null;
  const entry = b.modinfo.find((m) => `${m.name}.so` === name);
  if (!entry) return false;
  if (entry.arch === null) return true;
  return target === null ? null : entry.arch === target;
}

/**
 * Whether this QEMU aborts on the module load after one it refused: it
 * leaves the refused module's init entries queued, and the next load
 * asserts that the queue is empty (`module_load_dso: Assertion ...
 * failed`). Measured on 7.2; the code is the same in 10.0. null for
 * versions outside the range read.
 */
export function abortsAfterRefusal(version: string | null): boolean | null {
  const v = parseVersion(version);
  if (!v) return null;
  return (v[0] === 7 && v[1] >= 2) || (v[0] >= 8 && v[0] <= 10) ? true : null;
}

/**
 * The module directory a build uses when its binary runs from `exe`:
 * QEMU 7.2 relocates its compiled-in directory by where the binary is
 * (get_relocated_path: <exe dir>/../lib/<multiarch>/qemu for
 * /usr/lib/<multiarch>/qemu), so a copy under another prefix loads the
 * modules beside it. From 8.2 on relocation is a build option, and
 * Debian's 10.0 measured does not relocate: the compiled-in directory is
 * kept. null when the prefix of the compiled-in directory is not one we
 * know (then the compiled-in directory is all we can say).
 */
export function relocatedModuleDir(exe: string, moduleDir: string, version: string | null): string | null {
  const v = parseVersion(version);
  if (v && (v[0] > 8 || (v[0] === 8 && v[1] >= 2))) return moduleDir;
  const prefix = ['/usr/local/', '/usr/'].find((p) => moduleDir.startsWith(p));
  if (!prefix) return null;
  // bindir is <prefix>/bin: one level up from the binary is the prefix.
  const parts = `${exe.slice(0, exe.lastIndexOf('/'))}/../${moduleDir.slice(prefix.length)}`.split('/');
  const out: string[] = [];
  for (const p of parts) {
    if (p === '..') out.pop();
    else if (p !== '' && p !== '.') out.push(p);
  }
  return `/${out.join('/')}`;
}

function parseVersion(version: string | null): [number, number] | null {
  const m = /^(\d+)\.(\d+)/.exec(version ?? '');
  return m ? [Number(m[1]), Number(m[2])] : null;
}
