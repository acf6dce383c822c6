import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { inCI } from '../fixtures/ci';
import { EXE } from '../fixtures/sysroot';

// --check on this very host, against what binutils say about the real
// module directory. .ci/run installs qemu-system-x86, so under CI this runs.

const MODDIR = '/usr/lib/x86_64-linux-gnu/qemu';
const EMULATOR = '/usr/bin/qemu-system-x86_64';
const missing =
  !fs.existsSync(MODDIR) || !fs.existsSync(EMULATOR) ? 'QEMU (qemu-system-x86) is not installed on this host' : false;
if (missing && inCI()) t.fail(`${missing}, and CI must run this test`);

t.test('--check on the real host matches readelf and the emulator binary', { skip: missing }, async (t) => {
  const r = spawnSync(EXE, ['--check', '--json'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
  t.ok([0, 1, 2].includes(r.status ?? -1), `exit ${r.status}: ${r.stderr}`);
  const report = JSON.parse(r.stdout);
  const dir = report.moduleDirs.find((d: any) => d.path === MODDIR);
  t.ok(dir, `${MODDIR} found`);
  const files = fs
    .readdirSync(MODDIR)
    .filter((n) => n.endsWith('.so'))
    .sort();
  t.equal(dir.moduleCount, files.length, 'module count');
  t.same(
    dir.modules.map((m: any) => m.name),
    files,
  );

  // The emulator's stamp, as a string inside the binary.
  const binary = fs.readFileSync(EMULATOR).toString('latin1');
  const stamp = /qemu_stamp_([0-9a-f]{40})/.exec(binary)?.[1];
  t.ok(stamp, 'the emulator carries a build stamp');
  t.equal(report.emulators.find((e: any) => e.path === EMULATOR)?.stamp, stamp);

  for (const m of dir.modules) {
    const notes = spawnSync('readelf', ['-n', path.join(MODDIR, m.name)], { encoding: 'utf8' }).stdout;
    t.equal(m.buildId, /Build ID: ([0-9a-f]+)/.exec(notes)?.[1] ?? null, `${m.name} build-id`);
    t.equal(m.stamp, stamp, `${m.name} stamp equals the emulator's`);
    t.equal(m.refused, false);
  }
  t.notOk(
    report.findings.some((f: any) => f.code === 'stamp-mismatch'),
    'no module refused on a consistent install',
  );
});

t.test('the single executable runs with an empty environment, away from node_modules', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-exe-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const copy = path.join(dir, 'qemu-modwatch');
  fs.copyFileSync(EXE, copy);
  fs.chmodSync(copy, 0o755);
  const v = spawnSync(copy, ['--version'], { cwd: dir, env: {}, encoding: 'utf8' });
  t.equal(v.status, 0, v.stderr);
  t.match(v.stdout, /^qemu-modwatch \d+\.\d+\.\d+\n$/);
  t.equal(v.stderr, '', 'no warnings (SEA warning disabled)');
  // V8 rejects a code cache silently (the start is then slower, BENCHMARKS.md): the entry says so on request,
  // and the executable built from a startup snapshot says it started from it.
  const cache = spawnSync(copy, ['--version'], {
    cwd: dir,
    env: { QEMU_MODWATCH_DEBUG: 'code-cache' },
    encoding: 'utf8',
  });
  const kind = process.env.SEA_CODE_CACHE || 'snapshot';
  t.equal(
    cache.stderr,
    { snapshot: 'startup snapshot\n', full: 'code cache accepted\n' }[kind] ?? '',
    'the build-time snapshot or code cache is used',
  );
  const root = path.join(dir, 'root');
  fs.mkdirSync(root);
  const c = spawnSync(copy, ['--root', root, '--check'], { cwd: dir, env: {}, encoding: 'utf8' });
  t.equal(c.status, 0, c.stderr);
  t.match(c.stdout, /QEMU is not installed/);
  // The bundle for distros with their own Node.js.
  const cjs = path.join(dir, 'qemu-modwatch.cjs');
  fs.copyFileSync(EXE + '.cjs', cjs);
  const n = spawnSync(process.execPath, [cjs, '--root', root, '--check', '--json'], {
    cwd: dir,
    env: {},
    encoding: 'utf8',
  });
  t.equal(n.status, 0, n.stderr);
  t.equal(JSON.parse(n.stdout).status, 'OK');
  t.match(fs.readFileSync(cjs, 'utf8'), /^#!\/usr\/bin\/env node\n/);
});
