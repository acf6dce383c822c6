// QEMU 10.0, Debian's build from the backports suite, unpacked (never
// installed): its module rules differ from 7.2's, and the tool's verdicts
// are held to what this QEMU itself does. It does not relocate its module
// directory; it looks for upgrade copies in the one directory its package
// version names; after refusing a module of another build it aborts on the
// next module load, as 7.2 does; and it has no accel-tcg modules.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { downloadBackports } from '../fixtures/backports';
import { inCI } from '../fixtures/ci';
import { bindRealProc } from '../fixtures/guests';
import {
  MODULE_SUBDIR,
  minimalEnv,
  readModinfo,
  startQmp,
  stampOf,
  twoBuilds,
  type BuildTree,
} from '../fixtures/qemu-builds';
import { EXE, Sysroot } from '../fixtures/sysroot';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-qemu10-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
const MODDIR = `/${MODULE_SUBDIR}`;

function prepare(): string | { tree: string } {
  if (process.getuid?.() !== 0) return 'not root (private mount namespaces)';
  if (!fs.existsSync(MODDIR)) return `${MODDIR} does not exist here to mount over (QEMU is not installed)`;
  try {
    const debs = downloadBackports(['qemu-system-x86', 'qemu-system-common'], tmp);
    const tree = path.join(tmp, 'tree');
    for (const deb of Object.values(debs)) {
      const r = spawnSync('dpkg-deb', ['-x', deb, tree], { encoding: 'utf8' });
      if (r.status !== 0) return `dpkg-deb -x ${deb}: ${r.stderr}`;
    }
    return { tree };
  } catch (e) {
    return `cannot download QEMU from the backports suite: ${(e as Error).message}`;
  }
}

const got = prepare();
const skip = typeof got === 'string' ? got : false;
if (skip) {
  if (inCI()) t.fail(`QEMU 10.0 from the backports suite is needed under CI: ${skip}`);
  else t.comment(`QEMU 10.0 tests skipped: ${skip}`);
}
const tree = typeof got === 'string' ? '' : got.tree;
const emulator = () => path.join(tree, 'usr/bin/qemu-system-x86_64');

/** Runs a shell script with a private mount namespace: `mounts` first, then `script`. */
function inPrivateMounts(mounts: string, script: string): string {
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mounts} && ${script}`], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 60_000,
  });
  return (r.stdout ?? '') + (r.stderr ?? '');
}

/** Which module files QEMU opened, from the dynamic loader's log of a -device help run. */
const opened = (log: string) =>
  [...log.matchAll(/file=(\S+\.so) \[\d+\];\s+dynamically loaded by \S*libgmodule/g)].map((m) => m[1]!);

function copyTree(name: string): string {
  const r = path.join(tmp, name);
  const cp = spawnSync('cp', ['-al', tree, r]);
  if (cp.status !== 0) throw new Error('cp -al failed');
  return r;
}

t.test('what the binary says, as QEMU says it', { skip }, async (t) => {
  const report = JSON.parse(spawnSync(EXE, ['--root', tree, '--check', '--json'], { encoding: 'utf8' }).stdout);
  const said = spawnSync(emulator(), ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  t.comment(said);
  const emu = report.emulators.find((e: any) => e.path === '/usr/bin/qemu-system-x86_64');
  t.equal(`QEMU emulator version ${emu.version} (${emu.packageVersion})`, said);
  t.match(emu.version, /^10\./);
  t.equal(emu.stamp, stampOf(emulator()));
  t.equal(emu.moduleTableEntries, readModinfo(emulator()).length, 'its module table, read another way');
  t.same(
    report.findings.filter((f: any) => ['stamp-mismatch', 'leftover-module'].includes(f.code)),
    [],
    'one build: nothing refused, nothing left over',
  );
  const amd64 = report.emulators.find((e: any) => e.path === '/usr/bin/qemu-system-amd64');
  t.same(amd64?.usesModuleDirs, emu.usesModuleDirs, 'qemu-system-amd64, a link to it, is the same emulator');
  t.notOk(
    fs.readdirSync(path.join(tree, MODDIR)).some((n) => n.startsWith('accel-tcg-')),
    'TCG is no module in 10.0',
  );
});

t.test(
  'it does not relocate: modules beside a copy of the binary are not loaded, the compiled-in directory is',
  { skip },
  async (t) => {
    const root = copyTree('reloc');
    fs.mkdirSync(path.join(root, 'opt/q/bin'), { recursive: true });
    fs.copyFileSync(emulator(), path.join(root, 'opt/q/bin/qemu-system-x86_64'));
    fs.chmodSync(path.join(root, 'opt/q/bin/qemu-system-x86_64'), 0o755);
    fs.mkdirSync(path.join(root, 'opt/q/lib/x86_64-linux-gnu'), { recursive: true });
    spawnSync('cp', ['-a', path.join(tree, MODDIR), path.join(root, 'opt/q/lib/x86_64-linux-gnu/qemu')]);
    const run =
      `LD_DEBUG=files '${root}/opt/q/bin/qemu-system-x86_64' -M none -display none -S ` +
      `-nodefaults -device help 2>&1`;
    const beside = opened(inPrivateMounts(`mount -t tmpfs tmpfs ${MODDIR}`, run));
    t.same(beside, [], 'with the compiled-in directory empty, nothing is loaded from beside the binary');
    const compiled = opened(
      inPrivateMounts(
        `mount -t tmpfs tmpfs ${MODDIR} && cp '${root}/opt/q/lib/x86_64-linux-gnu/qemu/hw-usb-redirect.so' ${MODDIR}/`,
        run,
      ),
    );
    t.same(compiled, [`${MODDIR}/hw-usb-redirect.so`], 'a module in the compiled-in directory is');
  },
);

t.test('the upgrade-copy directory its package version names', { skip }, async (t) => {
  const report = JSON.parse(spawnSync(EXE, ['--root', tree, '--check', '--json'], { encoding: 'utf8' }).stdout);
  const dir = report.emulators.find((e: any) => e.path === '/usr/bin/qemu-system-x86_64').upgradeCopyDir;
  t.match(dir, /^\/var\/run\/qemu\/Debian_1_10\./, dir);
  const log = inPrivateMounts(
    `mount -t tmpfs tmpfs ${MODDIR} && mount -t tmpfs tmpfs /run && { [ -L /var/run ] || mount -t tmpfs ` +
      `tmpfs /var/run; }`,
    `mkdir -p '${dir}' && cp '${path.join(tree, MODDIR, 'hw-usb-redirect.so')}' '${dir}/' && ` +
      `LD_DEBUG=files '${emulator()}' -M none -display none -S -nodefaults -device help 2>&1`,
  );
  t.same(
    opened(log),
    [`${dir}/hw-usb-redirect.so`],
    'QEMU loads a module missing from its directory from exactly there',
  );
});

/**
 * A copy of one of the build's modules with another build stamp: what no package has, a module of another
 * build of the same QEMU.
 */
function otherBuildOf(module: string, dest: string): void {
  const b = fs.readFileSync(module);
  const stamp = Buffer.from(`qemu_stamp_${stampOf(emulator())}`);
  const other = Buffer.from(`qemu_stamp_${'0'.repeat(40)}`);
  let n = 0;
  for (let i = b.indexOf(stamp); i >= 0; i = b.indexOf(stamp, i + 1), n++) other.copy(b, i);
  if (n === 0) throw new Error(`${module} carries no stamp`);
  fs.writeFileSync(dest, b);
}

t.test(
  'a guest of 10.0 from another prefix, a module of another build in its directory: at risk, and a hot-plug kills it',
  { skip },
  async (t: Test) => {
    const root = copyTree('guest');
    const ready: { newer: BuildTree; older: BuildTree } | string = twoBuilds(t, tmp);
    if (typeof ready === 'string') return;
    fs.mkdirSync(path.join(root, 'opt/q/bin'), { recursive: true });
    fs.copyFileSync(emulator(), path.join(root, 'opt/q/bin/qemu-system-x86_64'));
    fs.chmodSync(path.join(root, 'opt/q/bin/qemu-system-x86_64'), 0o755);
    // In its compiled-in directory: 7.2's usb-redirect (which 10.0 cannot even open) and a same-ABI module of
    // another 10.0 build.
    fs.rmSync(path.join(root, MODDIR, 'hw-usb-redirect.so'));
    fs.copyFileSync(
      path.join(ready.newer.moduleDir, 'hw-usb-redirect.so'),
      path.join(root, MODDIR, 'hw-usb-redirect.so'),
    );
    fs.rmSync(path.join(root, MODDIR, 'hw-usb-smartcard.so'));
    otherBuildOf(path.join(tree, MODDIR, 'hw-usb-smartcard.so'), path.join(root, MODDIR, 'hw-usb-smartcard.so'));
    const mount = [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mount --bind '${root}${MODDIR}' ${MODDIR} && exec "$0" "$@"`,
    ];
    const q = await startQmp(
      path.join(root, 'opt/q/bin/qemu-system-x86_64'),
      minimalEnv(path.join(tmp, 'ten')),
      tmp,
      ['-name', 'guest=ten', '-device', 'qemu-xhci,id=xhci', '-chardev', 'null,id=r0'],
      mount,
    );
    t.teardown(() => q.stop());
    fs.mkdirSync(path.join(root, 'run/libvirt/qemu'), { recursive: true });
    fs.writeFileSync(path.join(root, 'run/libvirt/qemu/ten.pid'), `${q.pid}\n`);
    const s = new Sysroot(root);
    bindRealProc(s);
    const g = (s.json().report.guests as any[]).find((x) => x.domain === 'ten');
    t.same(g?.searchDirs, [MODDIR], 'its compiled-in directory, not the one beside its binary');
    t.same(
      g?.modulesAtRisk.map((m: any) => m.name),
      ['hw-usb-redirect.so', 'hw-usb-smartcard.so'],
      'both at risk',
    );
    t.equal(g?.refusalAborts, true, '10.0 aborts after a refused module, the tool says');
    const redir = await q.cmd('device_add', { driver: 'usb-redir', chardev: 'r0', bus: 'xhci.0', id: 'redir0' });
    t.ok('error' in redir, `QEMU: 7.2's module does not load: ${JSON.stringify(redir)}`);
    t.ok('return' in (await q.cmd('query-status')), 'and QEMU runs on: a module it cannot even open runs no code');
    const card = await q.cmd('device_add', { driver: 'ccid-card-emulated', id: 'card0', backend: 'nss-emulated' });
    t.ok('error' in card, `the same-ABI module of another build is refused: ${JSON.stringify(card)}`);
    t.comment(`QEMU 10.0 said on stderr: ${JSON.stringify(q.stderr())}`);
    const next = await q.cmd('device_add', { driver: 'usb-host', id: 'host0', hostbus: 1, hostaddr: 99 });
    const end = await Promise.race([q.exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    t.ok(
      'closed' in next && end?.signal === 'SIGABRT',
      `and the next module load aborts QEMU (${JSON.stringify(next)}, ${JSON.stringify(end)})`,
    );
  },
);
