// --root IMAGE: the image as distros lay it out, resolved as if it were `/`.
// Each case is built so that following a link out of the image would read
// a file this machine really has, and the report would show it.
import * as fs from 'node:fs';
import t from 'tap';
import { EMULATOR, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';

/** A file this machine has for sure, outside any image: the test's own runtime. */
const HOST_FILE = process.execPath;

t.test("/var/run -> /run (absolute, as on Debian): the image's own upgrade copies are found", async (t) => {
  const s = sysroot(t);
  s.addModule('/run/qemu/Debian_1_7.2+dfsg-7+deb12u15', 'block-rbd.so');
  fs.mkdirSync(s.host('/var'), { recursive: true });
  fs.symlinkSync('/run', s.host('/var/run'));
  const { report } = s.json();
  const copies = report.moduleDirs.filter((d: any) => d.source === 'upgrade');
  t.same(
    copies.map((d: any) => d.path),
    ['/var/run/qemu/Debian_1_7.2+dfsg-7+deb12u15'],
    "the copy is read through the image's /var/run",
  );
  t.same(
    copies[0]?.modules.map((m: any) => m.name),
    ['block-rbd.so'],
  );
});

t.test('a module that is an absolute symlink to a file of this machine is not read', async (t) => {
  const s = sysroot(t);
  fs.symlinkSync(HOST_FILE, s.host(`${MODDIR}/hw-escape.so`));
  const { report } = s.json();
  const dir = report.moduleDirs.find((d: any) => d.path === MODDIR);
  const m = dir.modules.find((x: any) => x.name === 'hw-escape.so');
  t.notOk(
    m && m.size === fs.statSync(HOST_FILE).size,
    `the host's ${HOST_FILE} was not read as a module: ${JSON.stringify(m)}`,
  );
});

t.test("an emulator that is an absolute symlink resolves to the image's emulator", async (t) => {
  const s = sysroot(t);
  fs.mkdirSync(s.host('/usr/libexec'), { recursive: true });
  fs.symlinkSync(EMULATOR, s.host('/usr/libexec/qemu-kvm'));
  const { report } = s.json();
  const kvm = report.emulators.find((e: any) => e.path === '/usr/libexec/qemu-kvm');
  t.equal(
    kvm?.stamp,
    s.stamp,
    `/usr/libexec/qemu-kvm -> ${EMULATOR} is the image's emulator (its stamp), not this machine's`,
  );
});

t.test('merged /usr with /lib -> usr/lib and /usr/lib64 -> lib: one module directory, read once', async (t) => {
  const s = new Sysroot();
  t.teardown(() => s.cleanup());
  s.addEmulator(EMULATOR, { stamp: s.stamp, dirs: ['/usr/lib64/qemu'] });
  s.addModule('/usr/lib/qemu', 'hw-display-qxl.so');
  fs.symlinkSync('usr/lib', s.host('/lib'));
  fs.symlinkSync('lib', s.host('/usr/lib64'));
  const { report } = s.json();
  t.same(
    report.moduleDirs.map((d: any) => d.path),
    ['/usr/lib64/qemu'],
    'the directory once, by the first name QEMU would use',
  );
  t.same(
    report.moduleDirs[0]?.modules.map((m: any) => m.name),
    ['hw-display-qxl.so'],
  );
});

t.test('a RHEL image: /usr/libexec/qemu-kvm and /usr/lib64/qemu, /bin -> usr/bin', async (t) => {
  const s = new Sysroot();
  t.teardown(() => s.cleanup());
  s.addEmulator('/usr/libexec/qemu-kvm', { stamp: s.stamp, dirs: ['/usr/lib64/qemu'] });
  s.addModule('/usr/lib64/qemu', 'hw-display-virtio-gpu.so');
  s.addModule('/usr/lib64/qemu', 'hw-usb-host.so', { stamp: 'ab'.repeat(20) });
  s.mkdir('/usr/bin');
  fs.symlinkSync('usr/bin', s.host('/bin'));
  const { report } = s.json();
  const kvm = report.emulators.find((e: any) => e.path === '/usr/libexec/qemu-kvm');
  t.same(kvm?.usesModuleDirs, ['/usr/lib64/qemu'], 'its own module directory');
  t.same(
    report.findings.filter((f: any) => f.code === 'stamp-mismatch').map((f: any) => f.message),
    [
      `QEMU will refuse to load hw-usb-host.so in /usr/lib64/qemu (stamp abababababab, emulator has ` +
        `${s.stamp.slice(0, 12)})`,
    ],
  );
});
