import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { EMULATOR, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';

// `qemu-modwatch --check` and `accept`, the built executable on fake trees.

const codes = (report: any) => report.findings.map((f: any) => f.code).sort();

t.test('a host without QEMU says so and exits 0', async (t) => {
  const s = sysroot(t, new Sysroot());
  const r = s.run(['--check']);
  t.equal(r.code, 0);
  t.match(r.stdout, /QEMU is not installed/);
  const j = s.json();
  t.equal(j.code, 0);
  t.same(j.report.moduleDirs, []);
  t.ok(codes(j.report).includes('no-qemu'));
});

t.test('first check: directories, counts, stamps; no baseline is not a warning', async (t) => {
  const s = sysroot(t);
  const { code, report } = s.json();
  t.equal(code, 0);
  t.equal(report.status, 'OK');
  t.equal(report.baseline.state, 'none');
  t.same(
    report.moduleDirs.map((d: any) => [d.path, d.moduleCount]),
    [[MODDIR, 3]],
  );
  t.ok(report.stampsChecked);
  t.ok(
    report.moduleDirs[0].modules.every(
      (m: any) => m.stamp === s.stamp && !m.refused && /^[0-9a-f]{40}$/.test(m.buildId),
    ),
  );
  const emu = report.emulators.find((e: any) => e.path === EMULATOR);
  t.equal(emu.stamp, s.stamp);
  t.same(emu.usesModuleDirs, [MODDIR]);
  t.ok(codes(report).includes('no-baseline'));
  t.notOk(fs.existsSync(s.statePath()), '--check writes no state');
  const text = s.run(['check']);
  t.equal(text.code, 0);
  t.match(text.stdout, /qemu-modwatch OK: 3 modules in 1 directory, no changes/);
  t.match(text.stdout, new RegExp(`${MODDIR}\\s+default\\s+3 modules`));
});

t.test('accept records a baseline; unchanged modules report nothing', async (t) => {
  const s = sysroot(t);
  const a = s.run(['accept']);
  t.equal(a.code, 0, a.stderr);
  t.match(a.stdout, /baseline recorded: 3 modules in 1 module directories/);
  const state = JSON.parse(fs.readFileSync(s.statePath(), 'utf8'));
  t.equal(state.schema, 1);
  const before = fs.statSync(s.statePath());
  const { code, report } = s.json();
  t.equal(code, 0);
  t.equal(report.baseline.state, 'ok');
  t.same(report.changes, []);
  t.equal(fs.statSync(s.statePath()).mtimeMs, before.mtimeMs, 'check leaves the state alone');
});

t.test('added, removed, replaced in place and metadata-only changes', async (t) => {
  const s = sysroot(t);
  s.run(['accept']);
  const oldQxl = JSON.parse(fs.readFileSync(s.statePath(), 'utf8')).baseline.dirs[0].modules.find(
    (m: any) => m.name === 'hw-display-qxl.so',
  ).buildId;
  s.addModule(MODDIR, 'hw-usb-smartcard.so');
  fs.rmSync(s.host(`${MODDIR}/block-rbd.so`));
  const newQxl = s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(s.host(`${MODDIR}/hw-usb-redirect.so`), later, later);
  const { code, report } = s.json();
  t.equal(code, 1, 'changes are a WARNING');
  t.equal(report.status, 'WARNING');
  const byName = Object.fromEntries(report.changes.map((c: any) => [c.module, c]));
  t.equal(byName['hw-usb-smartcard.so'].kind, 'added');
  t.equal(byName['block-rbd.so'].kind, 'removed');
  t.equal(byName['hw-display-qxl.so'].kind, 'replaced');
  t.equal(byName['hw-display-qxl.so'].buildIdBefore, oldQxl);
  t.equal(byName['hw-display-qxl.so'].buildIdAfter, newQxl);
  t.equal(byName['hw-usb-redirect.so'].kind, 'metadata');
  const text = s.run(['--check']);
  t.match(text.stdout, /qemu-modwatch WARNING: 3 modules changed/);
  t.match(
    text.stdout,
    new RegExp(`replaced\\s+${MODDIR}/hw-display-qxl.so\\s+build-id ${oldQxl.slice(0, 12)} -> ${newQxl!.slice(0, 12)}`),
  );
});

t.test('a metadata-only touch alone is not a warning', async (t) => {
  const s = sysroot(t);
  s.run(['accept']);
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(s.host(`${MODDIR}/hw-usb-redirect.so`), later, later);
  const { code, report } = s.json();
  t.equal(code, 0);
  t.same(
    report.changes.map((c: any) => c.kind),
    ['metadata'],
  );
});

t.test('a module without a build-id is told apart by its contents', async (t) => {
  const s = sysroot(t, Sysroot.qemuHost([]));
  s.addModule(MODDIR, 'ui-gtk.so', { buildId: null });
  s.run(['accept']);
  // Same bytes written again: new ctime, same content.
  const file = s.host(`${MODDIR}/ui-gtk.so`);
  fs.writeFileSync(file, fs.readFileSync(file));
  t.same(
    s.json().report.changes.map((c: any) => c.kind),
    ['metadata'],
  );
  s.replaceInPlace(MODDIR, 'ui-gtk.so', { buildId: null, stamp: s.stamp + '' });
  fs.appendFileSync(file, 'x');
  t.same(
    s.json().report.changes.map((c: any) => c.kind),
    ['replaced'],
  );
});

t.test('a module from another build is CRITICAL', async (t) => {
  const s = sysroot(t);
  s.addModule(MODDIR, 'hw-usb-host.so', { stamp: 'ab'.repeat(20) });
  s.addModule(MODDIR, 'ui-curses.so', { stamp: null });
  const { code, report } = s.json();
  t.equal(code, 2);
  t.equal(report.status, 'CRITICAL');
  const msgs = report.findings
    .filter((f: any) => f.code === 'stamp-mismatch')
    .map((f: any) => f.message)
    .sort();
  t.equal(msgs.length, 2);
  t.match(
    msgs[0],
    new RegExp(
      `QEMU will refuse to load hw-usb-host.so in ${MODDIR} \\(stamp abababababab, emulator has ` +
        `${s.stamp.slice(0, 12)}\\)`,
    ),
  );
  t.match(msgs[1], /ui-curses.so .*no build stamp/);
  t.match(s.run(['--check']).stdout, /CRITICAL\s+QEMU will refuse to load hw-usb-host.so/);
});

t.test('upgrade copies under /var/run/qemu are listed but not held to the new build', async (t) => {
  const s = sysroot(t);
  s.addModule('/var/run/qemu/1_7.2+dfsg-7', 'block-rbd.so', { stamp: 'cd'.repeat(20) });
  const { code, report } = s.json();
  t.equal(code, 0);
  t.same(
    report.moduleDirs.map((d: any) => d.source),
    ['default', 'upgrade'],
  );
});

t.test('corrupt, truncated and unknown-version state is a WARNING and is not overwritten', async (t) => {
  for (const [label, content] of [
    ['garbage', 'not json{'],
    ['empty', ''],
    ['truncated', '{"schema":1,"baseline":{"takenAtNs":"1'],
    ['unknown version', JSON.stringify({ schema: 99, baseline: {} })],
  ] as const) {
    const s = sysroot(t);
    s.write('/var/lib/qemu-modwatch/state.json', content);
    const { code, report } = s.json();
    t.equal(code, 1, label);
    t.equal(report.baseline.state, 'corrupt', label);
    t.ok(codes(report).includes('corrupt-state'), label);
    t.equal(fs.readFileSync(s.statePath(), 'utf8'), content, `${label}: left as it was`);
  }
});

t.test('hostile module files are findings, never crashes', async (t) => {
  const s = sysroot(t);
  s.write(`${MODDIR}/empty.so`, '');
  s.write(`${MODDIR}/text.so`, 'hello, not an ELF file\n');
  const elf = fs.readFileSync(s.host(`${MODDIR}/block-rbd.so`));
  s.write(`${MODDIR}/truncated.so`, elf.subarray(0, 70));
  const bad = Buffer.from(elf);
  bad.writeBigUInt64LE(0xffffffffffffn, 0x28); // e_shoff far past the end
  s.write(`${MODDIR}/bad-shoff.so`, bad);
  fs.mkdirSync(s.host(`${MODDIR}/dir.so`));
  const { code, report } = s.json();
  t.equal(code, 1);
  const unreadable = report.findings.filter((f: any) => f.code === 'unreadable-module').map((f: any) => f.message);
  for (const name of ['empty.so', 'text.so', 'truncated.so', 'bad-shoff.so', 'dir.so']) {
    t.ok(
      unreadable.some((m: string) => m.startsWith(`unreadable module ${MODDIR}/${name}: `)),
      name,
    );
  }
});

t.test(
  'a FIFO named like a module does not hang the check',
  { skip: process.getuid?.() !== 0 && 'mkfifo needs no root, but keep CI deterministic' },
  async (t) => {
    const s = sysroot(t);
    const fifo = s.host(`${MODDIR}/hw-fifo.so`);
    const r = require('node:child_process').spawnSync('mkfifo', [fifo]);
    t.equal(r.status, 0);
    const { code, report } = s.json();
    t.equal(code, 1);
    t.ok(
      report.findings.some(
        (f: any) => f.code === 'unreadable-module' && /hw-fifo.so: not a regular file/.test(f.message),
      ),
    );
  },
);

t.test('configured directories: found, and missing ones are a finding', async (t) => {
  const s = sysroot(t);
  s.addModule('/opt/qemu-extra/mods', 'hw-display-qxl.so');
  s.writeConfig('[modules]\ndirs = /opt/qemu-extra/mods, /opt/nowhere\n');
  const { code, report } = s.json();
  t.equal(code, 1);
  t.same(
    report.moduleDirs.map((d: any) => [d.path, d.source]),
    [
      [MODDIR, 'default'],
      ['/opt/qemu-extra/mods', 'config'],
    ],
  );
  t.same(report.missingDirs, ['/opt/nowhere']);
  t.ok(report.findings.some((f: any) => f.code === 'missing-dir' && f.message.includes('/opt/nowhere')));
});

t.test('QEMU_MODULE_DIR of the caller and multiarch directories are found', async (t) => {
  const s = sysroot(t);
  s.addModule('/usr/lib/aarch64-linux-gnu/qemu', 'hw-display-qxl.so');
  s.addModule('/srv/mods', 'ui-gtk.so');
  const { report } = s.json([], { env: { QEMU_MODULE_DIR: '/srv/mods' } });
  t.same(report.moduleDirs.map((d: any) => [d.path, d.source]).sort(), [
    ['/srv/mods', 'env'],
    ['/usr/lib/aarch64-linux-gnu/qemu', 'default'],
    [MODDIR, 'default'],
  ]);
});

t.test('a wrapper script is followed to the binary it execs', async (t) => {
  const s = sysroot(t);
  s.addEmulator('/usr/libexec/qemu-system-i386', { dirs: [MODDIR] });
  s.write('/usr/bin/qemu-system-i386', '#! /bin/sh\nexe=/usr/libexec/qemu-system-i386\nexec "$exe" "$@"\n', 0o755);
  s.write(
    '/usr/local/bin/qemu-system-custom',
    '#!/bin/sh\nQEMU_MODULE_DIR=/opt/mods exec /usr/bin/qemu-system-x86_64 "$@"\n',
    0o755,
  );
  s.addModule('/opt/mods', 'hw-usb-host.so');
  s.write('/usr/local/bin/qemu-system-weird', '#!/bin/sh\nexec $(which qemu) "$@"\n', 0o755);
  const { report } = s.json();
  const byPath = Object.fromEntries(report.emulators.map((e: any) => [e.path, e]));
  t.equal(byPath['/usr/bin/qemu-system-i386'].kind, 'wrapper');
  t.equal(byPath['/usr/bin/qemu-system-i386'].target, '/usr/libexec/qemu-system-i386');
  t.equal(byPath['/usr/libexec/qemu-system-i386'].stamp, s.stamp);
  t.equal(byPath['/usr/local/bin/qemu-system-custom'].moduleDir, '/opt/mods');
  t.same(byPath['/usr/local/bin/qemu-system-custom'].usesModuleDirs, ['/opt/mods', MODDIR]);
  t.equal(byPath['/usr/local/bin/qemu-system-weird'].target, null);
  t.ok(report.moduleDirs.some((d: any) => d.path === '/opt/mods' && d.source === 'wrapper'));
});

t.test('capabilities cache: fresh and stale entries', async (t) => {
  const s = sysroot(t);
  s.addEmulator('/usr/bin/qemu-system-aarch64', { dirs: ['/usr/lib/aarch64-linux-gnu/qemu'] });
  s.addModule('/usr/lib/aarch64-linux-gnu/qemu', 'hw-display-qxl.so');
  s.run(['accept']);
  const fresh = s.addCacheEntry(EMULATOR, { ageSeconds: -10 });
  const other = s.addCacheEntry('/usr/bin/qemu-system-aarch64', { ageSeconds: 100 });
  let { code, report } = s.json();
  t.equal(code, 1, 'the aarch64 entry is older than its modules');
  const entry = (f: string) => report.cache.entries.find((e: any) => e.file === f);
  t.equal(entry(fresh).stale, false);
  t.equal(entry(other).stale, true);
  t.match(entry(other).reasons[0], /changed after it was written/);

  // A module changed after the x86 entry was written, directory mtime put back.
  s.addCacheEntry('/usr/bin/qemu-system-aarch64', { ageSeconds: -10 });
  s.addCacheEntry(EMULATOR, { ageSeconds: 100 });
  s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
  ({ code, report } = s.json());
  t.equal(entry(fresh).stale, true);
  t.match(entry(fresh).reasons.join(' '), /hw-display-qxl.so changed after it was written/);
  t.equal(entry(other).stale, false, 'the aarch64 emulator does not use the x86 directory');

  // qemuctime that no longer matches the emulator.
  s.addCacheEntry(EMULATOR, { ageSeconds: -10, qemuctime: 12345 });
  ({ report } = s.json());
  t.match(entry(fresh).reasons.join(' '), /its emulator changed \(qemuctime 12345/);
  t.equal(entry(fresh).libvirtNotices, true);
});

t.test('an entry older than the baseline is stale when its modules changed since', async (t) => {
  const s = sysroot(t);
  // Written after the modules but before the baseline: the ctime rule says fresh.
  await new Promise((r) => setTimeout(r, 20));
  const name = s.addCacheEntry(EMULATOR);
  await new Promise((r) => setTimeout(r, 20));
  s.run(['accept']);
  t.equal(s.json().report.cache.entries[0].stale, false);
  // A module directory mounted from elsewhere keeps old ctimes: only the baseline tells.
  const state = JSON.parse(fs.readFileSync(s.statePath(), 'utf8'));
  const m = state.baseline.dirs[0].modules.find((x: any) => x.name === 'block-rbd.so');
  m.buildId = 'ff'.repeat(20);
  m.ctimeNs = '1';
  fs.writeFileSync(s.statePath(), JSON.stringify(state));
  const { report } = s.json();
  const entry = report.cache.entries.find((e: any) => e.file === name);
  t.equal(entry.stale, true);
  t.match(entry.reasons[0], /modules changed since the baseline: block-rbd.so/);
});

t.test('cache directory oddities are reported, not followed', async (t) => {
  const s = sysroot(t);
  const outside = s.write('/outside/secret.xml', '<qemuCaps><emulator>/x</emulator></qemuCaps>');
  fs.mkdirSync(s.cacheDir(), { recursive: true });
  fs.symlinkSync(outside, path.join(s.cacheDir(), 'a'.repeat(64) + '.xml'));
  s.write(`/var/cache/libvirt/qemu/capabilities/${'b'.repeat(64)}.xml`, '<notCaps/>');
  const { report } = s.json();
  const byFile = Object.fromEntries(report.cache.entries.map((e: any) => [e.file, e]));
  t.match(byFile['a'.repeat(64) + '.xml'].error, /symlink/);
  t.match(byFile['b'.repeat(64) + '.xml'].error, /qemuCaps/);
});

t.test('arguments and config errors exit 3 with one line', async (t) => {
  const s = sysroot(t);
  for (const args of [['--bogus'], ['frobnicate'], ['check', 'extra']]) {
    const r = s.run(args);
    t.equal(r.code, 3, args.join(' '));
    t.equal(r.stdout, '');
    t.match(r.stderr, /^qemu-modwatch: .+\n$/);
  }
  s.writeConfig('[policy]\non_chang = warn\n');
  let r = s.run(['--check']);
  t.equal(r.code, 3);
  t.match(r.stderr, /qemu-modwatch: .*qemu-modwatch.conf: unknown key \[policy\] on_chang\n$/);
  s.writeConfig('[policy]\non_change = sometimes\n');
  r = s.run(['--check']);
  t.match(r.stderr, /on_change = sometimes: expected one of invalidate, warn, refuse/);
  s.writeConfig('[modules]\ncontent_hash = yes\n', 0o666);
  r = s.run(['--check']);
  t.equal(r.code, 3);
  t.match(r.stderr, /refusing a config that others can change/);
  const alt = s.write('/alt.conf', '[modules]\ncontent_hash = yes\n');
  r = s.run(['--config', alt, '--check', '--json']);
  t.equal(r.code, 0, r.stderr);
  t.ok(JSON.parse(r.stdout).moduleDirs[0].modules.every((m: any) => /^[0-9a-f]{64}$/.test(m.sha256)));
});

t.test('--help and --version', async (t) => {
  const s = sysroot(t);
  const h = s.run(['--help']);
  t.equal(h.code, 0);
  t.match(h.stdout, /Usage: qemu-modwatch/);
  t.match(h.stdout, /--check/);
  const v = s.run(['--version']);
  t.match(v.stdout, /^qemu-modwatch \d+\.\d+\.\d+\n$/);
});
