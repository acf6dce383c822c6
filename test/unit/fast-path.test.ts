import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { DEFAULT_CONFIG } from '../../src/host/config';
import { makePaths, type Paths } from '../../src/host/paths';
import { SCAN_PLACES, takeFingerprint } from '../../src/host/scan';
import { watchList } from '../../src/store/fast-path';
import { Sysroot } from '../fixtures/sysroot';

// The dispatcher's fast path skips the full check when nothing it watches
// changed: a place the scan looks at and the watch list leaves out would be
// missed silently. Every path the scan asks --root to resolve (each stat,
// each listing) is recorded here and must be covered by the watch list.

function world(): Sysroot {
  const s = Sysroot.qemuHost(['a.so', 'b.so']);
  s.write('/usr/lib/x86_64-linux-gnu/qemu/c.so', 'x');
  fs.mkdirSync(s.host('/usr/lib/aarch64-linux-gnu'), { recursive: true });
  fs.mkdirSync(s.host('/usr/local/lib/arm-linux-gnueabihf/qemu'), { recursive: true });
  s.write('/usr/lib64/qemu/d.so', 'x');
  s.write('/var/run/qemu/9.0/e.so', 'x');
  s.write('/var/run/qemu/a-file', 'x');
  s.write('/var/run/qemu/.hidden/f.so', 'x');
  s.write('/opt/mods/g.so', 'x');
  s.write('/opt/env/h.so', 'x');
  s.write('/usr/libexec/qemu-kvm', '#!/bin/sh\n', 0o755);
  s.write(
    '/usr/local/bin/qemu-system-aarch64',
    '#!/bin/sh\nQEMU_MODULE_DIR=/opt/wrapped\nexec /opt/bin/real "$@"\n',
    0o755,
  );
  s.write(
    '/usr/local/bin/qemu-system-riscv64',
    '#!/bin/sh\nQEMU_MODULE_DIR=/opt/wrapped-gone\nexec /opt/real "$@"\n',
    0o755,
  );
  s.write('/opt/wrapped/i.so', 'x');
  return s;
}

const config = {
  ...DEFAULT_CONFIG,
  dirs: ['/opt/mods', '/opt/missing'],
  emulators: ['/opt/bin/qemu-configured', '/usr/bin/qemu-system-x86_64'],
};

/** Where system path p stands in the watch list, or null when nothing there would tell a change. */
function coveredBy(lines: Set<string>, paths: Paths, p: string): string | null {
  for (const kind of ['D', 'F', 'A']) if (lines.has(`${kind} ${paths.host(p)}`)) return kind;
  const parent = paths.host(path.posix.dirname(p));
  // A module file: the dispatcher looks at every entry of a D directory.
  if (lines.has(`D ${parent}`)) return 'in D';
  // An entry that comes or goes changes its directory's ctime.
  if (lines.has(`F ${parent}`) || lines.has(`A ${parent}`)) return 'entry of F';
  return null;
}

function scanRecorded(s: Sysroot, env: NodeJS.ProcessEnv) {
  const paths = makePaths({ root: s.root, uid: 0, env: {} });
  const asked: string[] = [];
  const recording: Paths = {
    ...paths,
    host: (p) => {
      asked.push(p);
      return paths.host(p);
    },
  };
  const extraEmulators = [{ path: '/opt/domain/qemu', source: 'domain' as const }];
  const fp = takeFingerprint({ paths: recording, config, env, extraEmulators, baseline: null });
  return { paths, fp, asked: [...new Set(asked)], lines: new Set(watchList(paths, config, fp)) };
}

t.test('every place the scan looks at is watched, when absent too', async (t) => {
  const s = Sysroot.qemuHost([]);
  t.teardown(() => s.cleanup());
  const { paths, asked, lines } = scanRecorded(s, {});
  for (const p of asked) t.ok(coveredBy(lines, paths, p), `${p} is watched`);
  t.ok(lines.has(`A ${paths.host('/usr/libexec/qemu-kvm')}`), 'an absent fixed emulator');
});

t.test('every place the scan looks at is watched', async (t) => {
  const s = world();
  t.teardown(() => s.cleanup());
  const { paths, fp, asked, lines } = scanRecorded(s, { QEMU_MODULE_DIR: '/opt/env' });
  t.ok(asked.length > 30, `${asked.length} places asked for`);
  for (const p of asked) t.ok(coveredBy(lines, paths, p), `${p} is watched`);
  // The world has each kind of place, so none of the above passed for want of it.
  const sources = new Set(fp.dirs.map((d) => d.source));
  t.same([...sources].sort(), ['config', 'default', 'env', 'upgrade', 'wrapper']);
  t.ok(fp.missingDirs.includes('/opt/wrapped-gone'), 'a wrapper names a missing directory');
  for (const d of SCAN_PLACES.moduleDirs) t.ok(coveredBy(lines, paths, d), `${d} (compiled in)`);
  for (const l of [...SCAN_PLACES.moduleDirParents, ...SCAN_PLACES.emulatorDirs])
    t.ok(lines.has(`F ${paths.host(l.dir)}`), `${l.dir} (listed)`);
  for (const e of SCAN_PLACES.emulators) t.ok(coveredBy(lines, paths, e), `${e} (fixed emulator)`);
});

t.test('known gap: a QEMU_MODULE_DIR that does not exist is not watched', async (t) => {
  // The watch list is written without the caller's environment; an absent
  // directory named there appears in neither the fingerprint nor the list.
  const s = world();
  t.teardown(() => s.cleanup());
  const { paths, asked, lines } = scanRecorded(s, { QEMU_MODULE_DIR: '/opt/no-env' });
  const missed = asked.filter((p) => !coveredBy(lines, paths, p));
  t.same(missed, ['/opt/no-env']);
});
