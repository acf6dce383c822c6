// The tool's verdicts on two real Debian QEMU builds, held against what
// QEMU itself does with the same files: which modules it refuses, which it
// never loads, where it finds an upgrade copy, and what a running guest's
// hot-plug does after an upgrade. Nothing is installed on the host.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { bindRealProc } from '../fixtures/guests';
import {
  MODULE_SUBDIR,
  minimalEnv,
  qemuLoads,
  readModinfo,
  startQmp,
  twoBuilds,
  type BuildTree,
  type Qmp,
} from '../fixtures/qemu-builds';
import { EXE, Sysroot } from '../fixtures/sysroot';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-verdicts-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const ready = twoBuilds(
  t,
  tmp,
  process.getuid?.() !== 0 && 'not root (mount namespaces for the upgrade-copy and guest cases)',
);
const skip = typeof ready === 'string' ? ready : false;
// A: the newer build (the host's release), B: the older.
const { newer: a, older: b } = typeof ready === 'string' ? ({} as { newer: BuildTree; older: BuildTree }) : ready;
const MODDIR = `/${MODULE_SUBDIR}`;
/** The ELF emulators of a build that load modules, as system paths. */
const LOADERS = ['/usr/bin/qemu-system-x86_64', '/usr/libexec/qemu-system-i386'];

let roots = 0;
/** A sysroot holding a copy of a build's tree (hard links: files are replaced, never written through). */
function rootOf(build: BuildTree): string {
  const r = path.join(tmp, `root-${++roots}`);
  const cp = spawnSync('cp', ['-al', build.root, r], { encoding: 'utf8' });
  if (cp.status !== 0) throw new Error(`cp -al: ${cp.stderr}`);
  return r;
}

/** Replaces a file the way dpkg does: a new inode renamed over the old one. */
function replaceFile(dest: string, from: string): void {
  const tmpFile = `${dest}.dpkg-new`;
  fs.copyFileSync(from, tmpFile);
  fs.renameSync(tmpFile, dest);
}

function check(root: string, args: string[] = []): any {
  const r = spawnSync(EXE, ['--root', root, '--check', '--json', ...args], {
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin' },
    maxBuffer: 64 << 20,
  });
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new Error(`--check --json gave no JSON (exit ${r.status}): ${r.stderr}`);
  }
}

t.test(
  "the build as the archive ships it: QEMU's version, package version and module table, nothing refused",
  { skip },
  async (t) => {
    const report = check(rootOf(a));
    t.same(
      report.findings.filter((f: any) => ['stamp-mismatch', 'leftover-module'].includes(f.code)),
      [],
      'nothing refused, nothing left over',
    );
    const emu = report.emulators.find((e: any) => e.path === '/usr/bin/qemu-system-x86_64');
    const said = spawnSync(a.emulator, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
    t.equal(`QEMU emulator version ${emu.version} (${emu.packageVersion})`, said, `as QEMU says it: ${said}`);
    t.equal(emu.stamp, a.stamp);
    t.equal(emu.moduleTableEntries, readModinfo(a.emulator).length, 'as many modules as the table read another way');
  },
);

t.test('one module of the other build: refused exactly where QEMU refuses it', { skip }, async (t) => {
  const mismatches: string[] = [];
  for (const m of b.modules) {
    const root = rootOf(a);
    replaceFile(path.join(root, MODDIR, m), path.join(b.moduleDir, m));
    const mod = check(root)
      .moduleDirs.find((d: any) => d.path === MODDIR)
      .modules.find((x: any) => x.name === m);
    const qemu = LOADERS.map((e) => qemuLoads(path.join(a.root, e), path.join(b.moduleDir, m), tmp));
    const tried = qemu.filter((v) => v.outcome !== 'not-tried');
    if (tried.length === 0) {
      t.comment(`${m}: QEMU cannot be made to load it here (${qemu.map((v) => v.reason).join('; ')})`);
      continue;
    }
    const refused = tried.some((v) => v.outcome === 'refused');
    const nobody = tried.every((v) => v.outcome === 'not-loaded');
    const line =
      `${m}: QEMU ` +
      `${LOADERS.map((e, i) => `${path.basename(e)} ${qemu[i]!.outcome}`).join(', ')}; tool ` +
      `refused=${mod.refused} leftover=${mod.leftover}`;
    if (mod.refused !== refused || mod.leftover !== nobody) mismatches.push(line);
    else t.comment(line);
  }
  t.same(mismatches, [], `the tool's verdict is QEMU's, module by module (${b.modules.length} modules)`);
});

t.test(
  'a whole upgrade under a baseline and a cache entry of the old build: one line per emulator',
  { skip },
  async (t) => {
    const root = rootOf(b);
    const s = new Sysroot(root);
    t.equal(s.run(['accept']).code, 0, 'baseline of the old build');
    const entry = s.addCacheEntry('/usr/bin/qemu-system-x86_64', { ageSeconds: 60 });
    // The upgrade: every file of the new build renamed over the old one.
    for (const rel of [
      'usr/bin/qemu-system-x86_64',
      'usr/libexec/qemu-system-i386',
      ...a.modules.map((m) => `${MODULE_SUBDIR}/${m}`),
    ]) {
      replaceFile(path.join(root, rel), path.join(a.root, rel));
    }
    const report = check(root);
    t.equal(report.changes.filter((c: any) => c.kind === 'replaced').length, a.modules.length, 'every module replaced');
    t.same(
      report.emulatorChanges.map((e: any) => [e.path, e.kind, e.stampBefore, e.stampAfter]),
      [
        ['/usr/bin/qemu-system-x86_64', 'rebuilt', b.stamp, a.stamp],
        ['/usr/libexec/qemu-system-i386', 'rebuilt', b.stamp, a.stamp],
      ],
    );
    t.same(
      report.findings.filter((f: any) => f.code === 'stamp-mismatch'),
      [],
      'the new modules match the new emulators',
    );
    t.ok(report.cache.entries.find((e: any) => e.file === entry)?.stale, "the old build's cache entry is stale");
    const text = s.run(['--check']).stdout;
    t.match(
      text,
      new RegExp(
        `qemu-system-x86_64 upgraded: build ${b.stamp.slice(0, 12)} -> ${a.stamp.slice(0, 12)}, ` +
          `${a.modules.length} modules replaced`,
      ),
    );
    t.ok(
      text.split('\n').filter((l) => /\.so\b/.test(l)).length <= 6,
      `a few lines name modules, not ${a.modules.length}:\n${text}`,
    );
    t.match(text, new RegExp(`WARNING\\s+${a.modules.length} modules changed since the baseline`));
    const verbose = s.run(['--check', '--verbose']).stdout;
    for (const m of a.modules) t.match(verbose, `replaced  ${MODDIR}/${m}`, `--verbose lists ${m}`);
    // QEMU itself loads the new build's modules.
    for (const m of ['hw-display-qxl.so', 'hw-usb-redirect.so'])
      t.equal(
        qemuLoads(path.join(root, 'usr/bin/qemu-system-x86_64'), path.join(root, MODDIR, m), tmp).outcome,
        'loaded',
        m,
      );
  },
);

/** Runs a shell script in a private mount namespace with a tmpfs over /run, so /var/run/qemu can be made there. */
function withPrivateRun(script: string): { code: number | null; stdout: string; stderr: string } {
  // Where /var/run is a directory of its own, it gets a tmpfs too: nothing is made on the host.
  const mounts = 'mount -t tmpfs tmpfs /run && { [ -L /var/run ] || mount -t tmpfs tmpfs /var/run; }';
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mounts} && ${script}`], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

t.test(
  'the upgrade-copy directory: QEMU finds a removed module in the one the tool names, and in no other',
  { skip },
  async (t) => {
    const root = rootOf(a);
    const copyDir = check(root).emulators.find((e: any) => e.path === '/usr/bin/qemu-system-x86_64').upgradeCopyDir;
    t.match(copyDir, /^\/var\/run\/qemu\/Debian_1_7\.2\+dfsg-7\+deb12u/, copyDir);
    const exe = path.join(root, 'usr/bin/qemu-system-x86_64');
    const mod = path.join(root, MODDIR, 'hw-usb-redirect.so');
    const saved = path.join(tmp, 'hw-usb-redirect.so.saved');
    fs.renameSync(mod, saved);
    const other = `/var/run/qemu/${path.basename(copyDir)}-not-this`;
    for (const [dir, expect] of [
      [copyDir, true],
      [other, false],
    ] as const) {
      const r = withPrivateRun(
        `mkdir -p '${dir}' && cp '${saved}' '${dir}/hw-usb-redirect.so' && LD_DEBUG=files '${exe}' -M none ` +
          `-display none -S -nodefaults -device help 2>&1; echo "@@RC $?"`,
      );
      const loaded = new RegExp(
        `file=${dir.replace(/[.+]/g, '\\$&')}/hw-usb-redirect\\.so \\[\\d+\\];\\s+dynamically loaded`,
      ).test(r.stdout);
      t.equal(loaded, expect, `QEMU ${expect ? 'loads' : 'does not load'} hw-usb-redirect.so from ${dir}`);
      t.equal(/"usb-redir"/.test(r.stdout), expect, `usb-redir ${expect ? 'offered' : 'not offered'} by -device help`);
    }
  },
);

/** A guest of build A, from `bin` inside the root, stopped (-S) with a USB controller; its libvirt pid file written. */
async function guestIn(t: Test, root: string, name: string, bin: string): Promise<Qmp> {
  const q = await startQmp(path.join(root, bin), minimalEnv(path.join(tmp, name)), tmp, [
    '-name',
    `guest=${name},debug-threads=on`,
    '-device',
    'qemu-xhci,id=xhci',
    '-chardev',
    'null,id=r0',
    '-chardev',
    'null,id=r1',
  ]);
  t.teardown(() => q.stop());
  fs.mkdirSync(path.join(root, 'run/libvirt/qemu'), { recursive: true });
  fs.writeFileSync(path.join(root, 'run/libvirt/qemu', `${name}.pid`), `${q.pid}\n`);
  return q;
}

t.test(
  'running guests: from the system prefix and from another one, before and after their modules change',
  { skip },
  async (t) => {
    const root = rootOf(a);
    // A second install of build A under /opt/q: QEMU 7.2 loads the modules beside its binary.
    fs.mkdirSync(path.join(root, 'opt/q/bin'), { recursive: true });
    fs.copyFileSync(a.emulator, path.join(root, 'opt/q/bin/qemu-system-x86_64'));
    fs.chmodSync(path.join(root, 'opt/q/bin/qemu-system-x86_64'), 0o755);
    const optMods = path.join(root, 'opt/q/lib/x86_64-linux-gnu/qemu');
    fs.mkdirSync(optMods, { recursive: true });
    for (const m of a.modules) fs.copyFileSync(path.join(a.moduleDir, m), path.join(optMods, m));
    const sys = await guestIn(t, root, 'sys', 'usr/bin/qemu-system-x86_64');
    const opt = await guestIn(t, root, 'opt', 'opt/q/bin/qemu-system-x86_64');
    const s = new Sysroot(root);
    bindRealProc(s);
    const guests = () =>
      Object.fromEntries(
        (s.json().report.guests as any[])
          .filter((g) => g.domain === 'sys' || g.domain === 'opt')
          .map((g) => [g.domain, g]),
      );

    let g = guests();
    t.same([g.sys?.atRisk, g.opt?.atRisk], [false, false], 'both run their own build');
    t.equal(g.opt?.emulator, '/opt/q/bin/qemu-system-x86_64');
    t.same(g.opt?.searchDirs, ['/opt/q/lib/x86_64-linux-gnu/qemu'], 'the other prefix: the modules beside its binary');

    // The other build's usb-redirect module beside the /opt binary only.
    replaceFile(path.join(optMods, 'hw-usb-redirect.so'), path.join(b.moduleDir, 'hw-usb-redirect.so'));
    g = guests();
    t.same(
      g.opt?.modulesAtRisk.map((m: any) => m.name),
      ['hw-usb-redirect.so'],
      'the /opt guest: at risk for that module',
    );
    t.equal(g.sys?.atRisk, false, 'the system guest: not at risk');
    t.equal(g.opt?.refusalAborts, true);
    const redir = { driver: 'usb-redir', chardev: 'r0', bus: 'xhci.0', id: 'redir0' };
    t.same(await sys.cmd('device_add', redir), { return: {} }, 'QEMU agrees: the system guest hot-plugs usb-redir');
    const failed = await opt.cmd('device_add', redir);
    t.ok('error' in failed, `QEMU agrees: the /opt guest cannot: ${JSON.stringify(failed)}`);
    t.match(opt.stderr(), /Only modules from the same build can be loaded\./);
    const next = await opt.cmd('device_add', { driver: 'qxl', id: 'qxl0' });
    const end = await Promise.race([opt.exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    t.ok(
      'closed' in next && end?.signal === 'SIGABRT',
      `and the next module load kills it, as the tool said (${JSON.stringify(next)}, ${JSON.stringify(end)})`,
    );

    // A whole upgrade of the system module directory under the running system guest.
    for (const m of b.modules) replaceFile(path.join(root, MODDIR, m), path.join(b.moduleDir, m));
    g = guests();
    const atRisk = (g.sys?.modulesAtRisk ?? []).map((m: any) => m.name);
    t.ok(
      atRisk.includes('hw-display-qxl.so') && atRisk.includes('hw-usb-smartcard.so'),
      `the system guest is at risk: ${atRisk.length} modules`,
    );
    t.notOk(atRisk.includes('accel-tcg-x86_64.so'), 'not for the accelerator it has loaded already');
    t.notOk(
      atRisk.includes('accel-tcg-i386.so') || atRisk.includes('hw-s390x-virtio-gpu-ccw.so'),
      'nor for modules its build never loads',
    );
    const text = s.run(['--check']).stdout;
    t.match(
      text,
      new RegExp(
        String.raw`sys\s+pid \d+\s+\/usr\/bin\/qemu-system-x86_64\s+emulator current\s+AT RISK: \S+, ` +
          String.raw`\S+, \S+ and \d+ more would fail; a hot-plug can kill it`,
      ),
      'one line for the guest',
    );
    t.ok(
      'error' in (await sys.cmd('device_add', { driver: 'usb-host', id: 'h0', hostbus: 1, hostaddr: 99 })),
      'QEMU agrees: a hot-plug that needs a module now fails',
    );
  },
);
