import * as fs from 'node:fs';
import t from 'tap';
import { addGuest } from '../fixtures/guests';
import { checkAllFormats, value } from '../fixtures/outputs';
import { EMULATOR, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';

// Running guests, read from a faked /proc and libvirt's pid files under
// --root: which ones are found, and which later module loads will fail.

const NEW = 'ef'.repeat(20);
const UPGRADE = '/var/run/qemu/1_7.2+dfsg-7';
const byPid = (report: any) => Object.fromEntries(report.guests.map((g: any) => [g.pid, g]));

/** The upgrade: the emulator and the listed modules now come from build NEW. */
function upgrade(s: Sysroot, modules = ['hw-display-qxl.so', 'hw-usb-redirect.so', 'block-rbd.so']): void {
  s.addEmulator(EMULATOR, { stamp: NEW });
  for (const m of modules) s.addModule(MODDIR, m, { stamp: NEW });
}

t.test('no /proc under the root: guests are not checked, and text says so', async (t) => {
  const s = sysroot(t);
  const { report, text } = checkAllFormats(s);
  t.equal(report.guestsChecked, false);
  t.same(report.guests, []);
  t.match(text, /Running guests\n {2}not checked \(no \/proc to read\)/);
});

t.test('found through pid files and /proc; stale pid files and other processes are not guests', async (t) => {
  const s = sysroot(t);
  addGuest(s, { pid: 100, domain: 'web01' });
  addGuest(s, { pid: 200, domain: 'byhand', pidFile: false });
  addGuest(s, { pid: 300, domain: null });
  s.write('/run/libvirt/qemu/gone.pid', '999\n');
  s.write('/proc/400/cmdline', '/usr/sbin/sshd\0-D\0');
  s.write('/proc/self/cmdline', 'x\0');
  const { report, text } = checkAllFormats(s);
  t.equal(report.guestsChecked, true);
  const g = byPid(report);
  t.same(Object.keys(g).map(Number), [100, 200, 300]);
  t.same(g[100].sources, ['libvirt', 'proc']);
  t.equal(g[100].domain, 'web01');
  t.same(g[200].sources, ['proc']);
  t.equal(g[200].domain, 'byhand', 'named by -name guest=');
  t.equal(g[300].domain, null);
  for (const x of Object.values(g) as any[]) {
    t.equal(x.emulator, EMULATOR, 'path from argv[0] when exe is a plain file');
    t.equal(x.emulatorState, 'current');
    t.equal(x.atRisk, false);
    t.same(x.searchDirs, [MODDIR]);
  }
  t.equal(report.status, 'OK');
  t.match(text, /web01\s+pid 100\s+\/usr\/bin\/qemu-system-x86_64\s+emulator current\s+later module loads work/);
  t.match(text, /-\s+pid 300/);
});

t.test('after an upgrade: guests on the old build are at risk and run a replaced emulator', async (t) => {
  const s = sysroot(t);
  addGuest(s, {
    pid: 100,
    domain: 'web01',
    mapped: [`${MODDIR}/hw-usb-redirect.so`, '/usr/lib/x86_64-linux-gnu/libc.so.6'],
  });
  upgrade(s);
  const { report, code, text, nagios, prom, nagiosRaw } = checkAllFormats(s);
  t.equal(code, 1, 'WARNING');
  const g = byPid(report)[100];
  t.equal(g.emulatorState, 'replaced');
  t.equal(g.stamp, s.stamp);
  t.equal(g.stampOnDisk, NEW);
  t.equal(g.atRisk, true);
  t.same(g.loadedModules, ['hw-usb-redirect.so'], 'a module it mapped already is not loaded again');
  t.same(
    g.modulesAtRisk.map((m: any) => m.name),
    ['block-rbd.so', 'hw-display-qxl.so'],
  );
  t.same(g.modulesAtRisk[0], { name: 'block-rbd.so', file: `${MODDIR}/block-rbd.so`, stamp: NEW, shadowedCopy: null });
  t.same(report.counts.guestsAtRisk, 1);
  t.same(report.counts.guestsEmulatorReplaced, 1);
  t.match(text, /web01\s+pid 100\s+\S+\s+EMULATOR REPLACED\s+AT RISK: block-rbd.so, hw-display-qxl.so would fail/);
  t.match(report.advice.join('\n'), /Restart or migrate this guest to run the installed QEMU build: web01\./);
  t.equal(nagios.perf.guests_at_risk!.value, 1);
  t.equal(nagios.perf.guests_emulator_replaced!.value, 1);
  // Its QEMU (7.2) aborts on the load after a refused module: every format says so.
  t.equal(g.refusalAborts, true, 'json');
  t.match(text, /would fail; a hot-plug can kill it/, 'text');
  t.match(nagiosRaw, /a hot-plug can kill the guest/, 'nagios');
  t.equal(value(prom.samples, 'qemu_modwatch_guests_at_risk_of_abort'), 1, 'prometheus');
});

t.test("upgrade copies under /var/run/qemu serve a guest's build, unless shadowed", async (t) => {
  const s = sysroot(t);
  addGuest(s, { pid: 100, domain: 'web01' });
  // Debian's upgrade keeps the old modules for running guests.
  for (const m of ['hw-display-qxl.so', 'block-rbd.so']) s.addModule(UPGRADE, m);
  upgrade(s, ['hw-display-qxl.so', 'hw-usb-redirect.so']);
  fs.rmSync(s.host(`${MODDIR}/block-rbd.so`));
  const { report } = checkAllFormats(s);
  const g = byPid(report)[100];
  t.same(g.searchDirs, [MODDIR, UPGRADE]);
  t.same(
    g.servedByUpgradeCopy,
    [{ name: 'block-rbd.so', file: `${UPGRADE}/block-rbd.so` }],
    'gone from the module directory, served by the copy',
  );
  const qxl = g.modulesAtRisk.find((m: any) => m.name === 'hw-display-qxl.so');
  t.equal(qxl.shadowedCopy, `${UPGRADE}/hw-display-qxl.so`, 'QEMU 7.2+ stops at the new file in the module directory');
  t.ok(g.modulesAtRisk.some((m: any) => m.name === 'hw-usb-redirect.so' && m.shadowedCopy === null));
});

t.test('QEMU_MODULE_DIR in the guest environment is searched first', async (t) => {
  const s = sysroot(t);
  s.addModule('/opt/mods', 'hw-display-qxl.so');
  s.writeConfig('[modules]\ndirs = /opt/mods\n');
  addGuest(s, { pid: 100, domain: 'custom', env: { QEMU_MODULE_DIR: '/opt/mods/' } });
  upgrade(s);
  const g = byPid(checkAllFormats(s).report)[100];
  t.same(g.searchDirs, ['/opt/mods', MODDIR]);
  t.same(
    g.modulesAtRisk.map((m: any) => m.name),
    ['block-rbd.so', 'hw-usb-redirect.so'],
    'qxl is found first in its own directory, with its stamp',
  );
});

t.test('exe as a link: relative links resolve inside the root; " (deleted)" and missing binaries', async (t) => {
  const s = sysroot(t);
  addGuest(s, { pid: 100, domain: 'linked', exe: { link: '../../usr/bin/qemu-system-x86_64' } });
  addGuest(s, { pid: 200, domain: 'removed', argv: ['/usr/bin/qemu-system-gone', '-S'] });
  addGuest(s, { pid: 300, domain: 'deleted', exe: { link: '/usr/bin/qemu-system-x86_64 (deleted)' } });
  const { report, text } = checkAllFormats(s);
  const g = byPid(report);
  t.equal(g[100].emulator, EMULATOR);
  t.equal(g[100].emulatorState, 'current');
  t.equal(g[100].stamp, s.stamp, 'the binary read through the link');
  t.equal(g[200].emulatorState, 'deleted', 'nothing at argv[0] any more');
  t.equal(g[300].emulator, EMULATOR);
  t.equal(g[300].emulatorState, 'replaced', 'the kernel says deleted and a file is at the path');
  t.equal(g[300].atRisk, null, 'its binary cannot be read in a fake tree');
  t.match(text, /removed\s+pid 200\s+\/usr\/bin\/qemu-system-gone\s+EMULATOR REMOVED/);
  t.ok(
    report.findings.some(
      (f: any) =>
        f.code === 'guest-emulator-replaced' &&
        /'removed' \(pid 200\).*which was removed since it started/.test(f.message),
    ),
  );
});

t.test('a hundred guests on one binary: read once, fast', async (t) => {
  const s = sysroot(t);
  for (let i = 0; i < 100; i++) addGuest(s, { pid: 1000 + i, domain: `g${i}` });
  const started = Date.now();
  const r = s.json();
  t.equal(r.report.guests.length, 100);
  t.ok(Date.now() - started < 10_000);
});
