// Proves test/fixtures/qemu-builds against QEMU itself: two real Debian builds, their stamps and
// module sets, QEMU's verdict on each build's modules, and a running QEMU meeting a swapped module.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import {
  minimalEnv,
  qemuLoads,
  relocatedModuleDir,
  startQmp,
  twoBuilds,
  type BuildTree,
  type QmpAnswer,
} from '../fixtures/qemu-builds';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-builds-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const t0 = performance.now();
const ready = twoBuilds(t, tmp);
const ms = Math.round(performance.now() - t0);
const skip = typeof ready === 'string' ? ready : false;
const { newer: a, older: b } = typeof ready === 'string' ? ({} as { newer: BuildTree; older: BuildTree }) : ready;

t.test('two builds: different stamps, the same modules', { skip }, async (t) => {
  t.comment(`download and unpack of both builds: ${ms} ms`);
  for (const build of [a, b]) {
    t.match(build.stamp, /^[0-9a-f]{40}$/);
    t.equal(build.root, path.dirname(path.dirname(path.dirname(build.emulator))));
    const version = spawnSync(build.emulator, ['--version'], { encoding: 'utf8' }).stdout;
    t.ok(version.includes(`(Debian ${build.version})`), `${build.version}: ${version.split('\n')[0]}`);
    t.ok(
      fs.readFileSync(path.join(build.moduleDir, 'hw-display-qxl.so')).includes(`qemu_stamp_${build.stamp}`),
      'its modules carry its stamp',
    );
  }
  t.not(a.stamp, b.stamp);
  const onlyA = a.modules.filter((m) => !b.modules.includes(m));
  const onlyB = b.modules.filter((m) => !a.modules.includes(m));
  if (onlyA.length + onlyB.length > 0)
    t.comment(`only in ${a.version}: ${onlyA.join(', ') || '-'}; only in ${b.version}: ${onlyB.join(', ') || '-'}`);
  t.same(a.modules, b.modules);
});

const PROBED = [
  'hw-display-qxl.so',
  'hw-usb-redirect.so',
  'hw-usb-smartcard.so',
  'accel-tcg-i386.so',
  'hw-s390x-virtio-gpu-ccw.so',
  'block-curl.so',
  'ui-curses.so',
];

t.test("QEMU's own verdict on each build's modules", { skip }, async (t) => {
  const rows: string[] = [];
  const verdicts = new Map<string, string>();
  for (const m of PROBED) {
    const cells: string[] = [];
    for (const [emu, mod, key] of [
      [a, a, 'A+A'],
      [a, b, 'A+B'],
      [b, b, 'B+B'],
      [b, a, 'B+A'],
    ] as const) {
      const t0 = performance.now();
      const v = qemuLoads(emu.emulator, path.join(mod.moduleDir, m), tmp);
      const ms = Math.round(performance.now() - t0);
      verdicts.set(`${m} ${key}`, v.outcome);
      cells.push(`${v.outcome} (${v.signal ?? `exit ${v.exit}`}, ${ms} ms)`);
      if (v.outcome === 'not-tried') t.comment(`${m} ${key}: ${v.reason}`);
    }
    rows.push(`${m.padEnd(28)} ${cells.map((c) => c.padEnd(30)).join(' ')}`);
  }
  t.comment(
    [
      `A = ${a.version}, B = ${b.version}; emulator+module`,
      `${'module'.padEnd(28)} ${['A+A', 'A+B', 'B+B', 'B+A'].map((c) => c.padEnd(30)).join(' ')}`,
      ...rows,
    ].join('\n'),
  );

  for (const own of ['A+A', 'B+B']) t.equal(verdicts.get(`hw-display-qxl.so ${own}`), 'loaded', `qxl, ${own}`);
  for (const other of ['A+B', 'B+A']) t.equal(verdicts.get(`hw-display-qxl.so ${other}`), 'refused', `qxl, ${other}`);
  for (const key of ['A+A', 'A+B', 'B+B', 'B+A']) {
    t.equal(verdicts.get(`accel-tcg-i386.so ${key}`), 'not-loaded', `accel-tcg-i386 (another target), ${key}`);
    t.equal(verdicts.get(`hw-s390x-virtio-gpu-ccw.so ${key}`), 'not-loaded', `s390x module (not in the table), ${key}`);
  }
});

/** Build A's emulator, copied with all of A's modules in its relocated module dir, as installed. */
function installA(dir: string): { exe: string; moduleDir: string } {
  const exe = path.join(tmp, dir, 'bin/qemu-system-x86_64');
  fs.mkdirSync(path.dirname(exe), { recursive: true });
  fs.copyFileSync(a.emulator, exe);
  fs.chmodSync(exe, 0o755);
  const moduleDir = relocatedModuleDir(exe);
  fs.mkdirSync(moduleDir, { recursive: true });
  for (const m of a.modules) fs.copyFileSync(path.join(a.moduleDir, m), path.join(moduleDir, m));
  return { exe, moduleDir };
}

const show = (r: QmpAnswer) => JSON.stringify(r);
const REDIR = { driver: 'usb-redir', chardev: 'r0', bus: 'xhci.0' };

/**
 * A running build-A QEMU; optionally B's hw-usb-redirect.so swapped in
 * after it started, as an upgrade would; then device_add usb-redir and
 * a second device_add; what QEMU answered and printed.
 */
async function scenario(label: string, swap: boolean, second: object) {
  const { exe, moduleDir } = installA(label);
  const q = await startQmp(exe, minimalEnv(path.join(tmp, label)), tmp, [
    '-device',
    'qemu-xhci,id=xhci',
    '-chardev',
    'null,id=r0',
    '-chardev',
    'null,id=r1',
  ]);
  try {
    if (swap) fs.copyFileSync(path.join(b.moduleDir, 'hw-usb-redirect.so'), path.join(moduleDir, 'hw-usb-redirect.so'));
    const first = await q.cmd('device_add', { ...REDIR, id: 'redir0' });
    const then = await q.cmd('device_add', second);
    // A dying QEMU closes the socket before it is reaped.
    const end = await Promise.race([
      q.exited,
      new Promise<null>((r) => setTimeout(() => r(null), 'closed' in then ? 5000 : 200)),
    ]);
    return { first, then, end, stderr: q.stderr() };
  } finally {
    await q.stop();
  }
}

t.test('a running QEMU whose hw-usb-redirect.so is replaced by the other build', { skip }, async (t) => {
  const qxl = { driver: 'qxl', id: 'qxl0' };
  const control = await scenario('control', false, qxl);
  t.same(control.first, { return: {} }, 'own build: usb-redir is added');
  t.same(control.then, { return: {} }, 'own build: qxl is added');

  const retry = await scenario('retry', true, { ...REDIR, id: 'redir1', chardev: 'r1' });
  const other = await scenario('other', true, qxl);
  for (const [name, r] of [
    ['the same device again', retry],
    ['then qxl (own build)', other],
  ] as const) {
    t.comment(
      `swapped, device_add usb-redir -> ${show(r.first)}; ${name} -> ${show(r.then)}; QEMU ` +
        `${r.end ? `ended: ${r.end.signal ?? `exit ${r.end.code}`}` : 'still running'}\nstderr:\n${r.stderr}`,
    );
    t.ok('error' in r.first || 'closed' in r.first, 'the refused module fails device_add, or QEMU');
    t.match(
      r.stderr,
      /failed to initialize module: \S*hw-usb-redirect\.so\nOnly modules from the same build can be loaded\./,
    );
  }
});
