import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { readEmulator } from '../../src/formats/emulator-reader';
import { bindRealProc, emulatorBinary } from '../fixtures/guests';
import { randomHex } from '../fixtures/elf';
import { EMULATOR, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';

// A real running QEMU, seen through --root: the sysroot's /proc is the
// real one, bound there in a private mount namespace, libvirt's pid file is written by the test, and the
// module directory and emulator the checker compares with are the
// sysroot's, so the test can swap them freely.

const REAL = '/usr/bin/qemu-system-x86_64';
const skip = !fs.existsSync(REAL)
  ? `${REAL} is not installed`
  : process.getuid?.() !== 0
    ? 'not root: binding /proc needs a mount namespace'
    : false;

function realStamp(): string {
  const fd = fs.openSync(REAL, 'r');
  try {
    const stamp = readEmulator(fd, fs.fstatSync(fd).size).stamp;
    if (!stamp) throw new Error(`${REAL} has no build stamp`);
    return stamp;
  } finally {
    fs.closeSync(fd);
  }
}

/** Starts QEMU as libvirt would name it; killed when the test ends. */
async function startQemu(t: Test, binary: string, name: string): Promise<ChildProcess> {
  const child = spawn(binary, ['-M', 'none', '-display', 'none', '-S', '-name', `guest=${name},debug-threads=on`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.on('exit', () => resolve());
        child.kill('SIGKILL');
      }),
  );
  // Up once it has mapped its accelerator module (or at least its binary).
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`QEMU exited ${child.exitCode}: ${stderr}`);
    try {
      if (/accel-tcg/.test(fs.readFileSync(`/proc/${child.pid}/maps`, 'utf8'))) return child;
    } catch {
      // Not there yet.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`QEMU did not come up: ${stderr}`);
}

function guestOf(s: Sysroot, pid: number): any {
  const r = s.json();
  const g = r.report.guests.find((x: any) => x.pid === pid);
  if (!g) throw new Error(`pid ${pid} not reported: ${JSON.stringify(r.report.guests.map((x: any) => x.pid))}`);
  return { g, report: r.report, code: r.code };
}

t.test('the installed QEMU, running: at risk once the modules are swapped for another build', { skip }, async (t) => {
  const stamp = realStamp();
  const s = sysroot(t, new Sysroot());
  bindRealProc(s);
  // What the sysroot says is installed: the emulator and modules of the running build.
  s.write(EMULATOR, emulatorBinary(stamp), 0o755);
  for (const m of ['hw-display-qxl.so', 'hw-usb-redirect.so', 'accel-tcg-x86_64.so']) s.addModule(MODDIR, m, { stamp });
  const name = `rt-${randomHex(4)}`;
  const qemu = await startQemu(t, REAL, name);
  s.write(`/run/libvirt/qemu/${name}.pid`, `${qemu.pid}\n`);

  let { g, report } = guestOf(s, qemu.pid!);
  t.equal(report.guestsChecked, true);
  t.equal(g.domain, name);
  t.same(g.sources, ['libvirt', 'proc']);
  t.equal(g.emulator, REAL);
  t.equal(g.stamp, stamp, 'stamp read through /proc/PID/exe');
  t.equal(g.emulatorState, 'current');
  t.ok(g.loadedModules.includes('accel-tcg-x86_64.so'), `loaded: ${g.loadedModules.join(', ')}`);
  t.same(g.searchDirs, [MODDIR]);
  t.equal(g.atRisk, false);

  // Another build's modules: qxl and usb-redirect would fail; the
  // accelerator is loaded already and never loaded again.
  const other = randomHex(20);
  for (const m of ['hw-display-qxl.so', 'hw-usb-redirect.so', 'accel-tcg-x86_64.so'])
    s.addModule(MODDIR, m, { stamp: other });
  ({ g, report } = guestOf(s, qemu.pid!));
  t.equal(g.atRisk, true);
  t.same(
    g.modulesAtRisk.map((m: any) => [m.name, m.stamp]),
    [
      ['hw-display-qxl.so', other],
      ['hw-usb-redirect.so', other],
    ],
  );
  t.ok(
    report.findings.some(
      (f: any) =>
        f.code === 'guest-at-risk' &&
        f.message.startsWith(
          `guest '${name}' (pid ${qemu.pid}) will fail to load hw-display-qxl.so, hw-usb-redirect.so`,
        ),
    ),
  );
  const nagios = s.run(['--check', '--format', 'nagios']);
  t.match(nagios.stdout, /'guests_at_risk'=[1-9]/);

  // And an emulator from that other build at the guest's path: replaced.
  s.write(EMULATOR, emulatorBinary(other), 0o755);
  ({ g } = guestOf(s, qemu.pid!));
  t.equal(g.emulatorState, 'replaced');
  t.equal(g.stampOnDisk, other);
});

t.test(
  'a running binary replaced and then removed: the kernel says " (deleted)", its stamp still reads',
  { skip },
  async (t) => {
    const stamp = realStamp();
    const s = sysroot(t, new Sysroot());
    bindRealProc(s);
    // QEMU finds its modules relative to its own binary: give the copy the real ones.
    s.mkdir(MODDIR);
    // Copies: --root never follows a link out of the root.
    for (const name of fs.readdirSync(MODDIR).filter((n) => n.endsWith('.so')))
      fs.copyFileSync(path.join(MODDIR, name), path.join(s.host(MODDIR), name));
    fs.mkdirSync(path.dirname(s.host(EMULATOR)), { recursive: true });
    fs.copyFileSync(REAL, s.host(EMULATOR));
    fs.chmodSync(s.host(EMULATOR), 0o755);
    const name = `rt-${randomHex(4)}`;
    const qemu = await startQemu(t, s.host(EMULATOR), name);
    s.write(`/run/libvirt/qemu/${name}.pid`, `${qemu.pid}\n`);

    let { g } = guestOf(s, qemu.pid!);
    t.equal(g.emulator, EMULATOR, 'the link names the file inside the root');
    t.equal(g.emulatorState, 'current');
    t.equal(g.atRisk, false);

    // A package manager writes the new file and renames it over the old one.
    const other = randomHex(20);
    const tmp = s.write('/usr/bin/.qemu-new', emulatorBinary(other), 0o755);
    fs.renameSync(tmp, s.host(EMULATOR));
    t.match(fs.readlinkSync(`/proc/${qemu.pid}/exe`), / \(deleted\)$/);
    ({ g } = guestOf(s, qemu.pid!));
    t.equal(g.emulatorState, 'replaced');
    t.equal(g.stamp, stamp, 'the old binary is still read through /proc/PID/exe');
    t.equal(g.stampOnDisk, other);

    fs.rmSync(s.host(EMULATOR));
    ({ g } = guestOf(s, qemu.pid!));
    t.equal(g.emulatorState, 'deleted');
    t.equal(g.stamp, stamp);
  },
);
