// A real `dpkg -i` upgrade of QEMU with guests running, in a private mount
// namespace over copy-on-write overlays of /usr, /var and /run (the host
// keeps its own QEMU): Debian's qemu-block-extra prerm makes the upgrade
// copies under /run/qemu itself. The tool's verdict on each guest is held
// to what QEMU does over QMP: a copy shadowed by the new module does not
// help, a copy of a removed module is loaded.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { minimalEnv, PACKAGES, startQmp, twoBuilds, type BuildTree, type Qmp } from '../fixtures/qemu-builds';
import { e2eSkip, useEnv, type Env } from './harness';
import { BUILT_EXE } from './modwatch';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-upgrade-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const ready = twoBuilds(t, tmp, e2eSkip(t));
const skip = typeof ready === 'string' ? ready : false;
const { newer, older } = typeof ready === 'string' ? ({} as { newer: BuildTree; older: BuildTree }) : ready;
const COPY_PARENT = '/var/run/qemu';

async function dpkgInstall(env: Env, build: BuildTree): Promise<string> {
  const debs = PACKAGES.map((p) => build.debs[p]);
  // --force-depends: the host's other QEMU packages (qemu-utils) stay at their own version.
  const r = await env.exec(['dpkg', '-i', '--force-depends', '--force-downgrade', ...debs], {
    allowFail: true,
    timeout: 300_000,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (r.code !== 0)
    throw new Error(`dpkg -i of ${build.version} failed (${r.code}):\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  return r.stdout;
}

async function check(env: Env): Promise<any> {
  const r = await env.exec([BUILT_EXE, '--check', '--json'], {
    allowFail: true,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
  });
  return JSON.parse(r.stdout);
}

const curl = (node: string) => ({ driver: 'http', 'node-name': node, url: 'http://127.0.0.1:9/nothing.img' });

t.test(
  'guests of the old build across a real dpkg -i upgrade: shadowed copies fail, a removed module is served',
  { skip, timeout: 600_000 },
  async (t) => {
    const env = await useEnv(t, { label: 'qmw-upgrade', overlayDirs: ['/usr', '/var', '/run'], startDaemon: false });
    // Ubuntu mounts /run/qemu; Debian's prerm makes its copies only where it exists.
    await env.exec(['mkdir', '-p', '/run/qemu']);
    await dpkgInstall(env, older);
    const running = (await env.exec(['/usr/bin/qemu-system-x86_64', '--version'])).stdout.split('\n')[0];
    t.match(running, `(Debian ${older.version})`, `the old build installed in the namespace: ${running}`);

    const guests: Record<string, Qmp> = {};
    for (const name of ['shadowed', 'served']) {
      guests[name] = await startQmp(
        '/usr/bin/qemu-system-x86_64',
        minimalEnv(path.join(tmp, name)),
        env.dir,
        ['-name', `guest=${name},debug-threads=on`],
        ['nsenter', `--mount=/proc/${env.holderPid}/ns/mnt`, '--'],
      );
      t.teardown(() => guests[name]!.stop());
    }

    t.equal((await env.exec([BUILT_EXE, 'accept'], { allowFail: true })).code, 0, 'a baseline of the old build');
    const out = await dpkgInstall(env, newer);
    t.match(out, /Unpacking qemu-block-extra\S* \(\S+\) over \(\S+\)/, 'a real upgrade of qemu-block-extra');
    const oldCopies = `${COPY_PARENT}/Debian_${older.version.replace(/[^A-Za-z0-9+\-.~]/g, '_')}`;
    const listed = (await env.exec(['ls', oldCopies], { allowFail: true })).stdout.split('\n').filter(Boolean);
    t.ok(
      listed.includes('block-curl.so'),
      `the old build's prerm copied its block modules to ${oldCopies}: ${listed.join(' ')}`,
    );

    const pick = (report: any, name: string) => report.guests.find((g: any) => g.domain === name);
    let report = await check(env);
    for (const name of ['shadowed', 'served']) {
      const g = pick(report, name);
      t.equal(g?.upgradeCopyDir, oldCopies, `${name}: the copies its QEMU looks in`);
      const c = g?.modulesAtRisk.find((m: any) => m.name === 'block-curl.so');
      t.equal(
        c?.shadowedCopy,
        `${oldCopies}/block-curl.so`,
        `${name}: block-curl.so at risk, its copy shadowed by the new file`,
      );
    }
    t.same(
      report.changes.filter((c: any) => c.dir.startsWith(COPY_PARENT)),
      [],
      'the copies are no module change',
    );
    t.ok(
      report.changes.some((c: any) => c.module === 'block-curl.so' && c.kind === 'replaced'),
      'the module itself is',
    );
    t.ok(
      report.upgradeCopyChanges.some(
        (c: any) => c.dir === oldCopies && c.module === 'block-curl.so' && c.kind === 'added',
      ),
      'the new copy is reported as such',
    );
    const shadowed = await guests.shadowed!.cmd('blockdev-add', curl('n0'));
    t.ok('error' in shadowed, `QEMU agrees: the shadowed copy does not help: ${JSON.stringify(shadowed)}`);
    t.match(guests.shadowed!.stderr(), /block-curl\.so\nOnly modules from the same build can be loaded\./);

    // The new block-curl.so goes away: now the copy is the first file that exists.
    await env.exec(['rm', '/usr/lib/x86_64-linux-gnu/qemu/block-curl.so']);
    report = await check(env);
    const served = pick(report, 'served');
    t.same(
      served?.servedByUpgradeCopy.filter((m: any) => m.name === 'block-curl.so'),
      [{ name: 'block-curl.so', file: `${oldCopies}/block-curl.so` }],
      'the tool: served by its copy',
    );
    t.notOk(
      served?.modulesAtRisk.some((m: any) => m.name === 'block-curl.so'),
      'and no longer at risk',
    );
    const r = await guests.served!.cmd('blockdev-add', curl('n1'));
    const desc = 'error' in r ? r.error.desc : JSON.stringify(r);
    t.notMatch(
      desc,
      /Unknown driver|not a valid|Only modules/,
      `QEMU agrees: the driver loads from the copy (it then fails to connect): ${desc}`,
    );
    t.notMatch(guests.served!.stderr(), /Only modules/, 'and refuses nothing');
    t.match(
      fs.readFileSync(`/proc/${guests.served!.pid}/maps`, 'utf8'),
      new RegExp(`${oldCopies.replace(/[.+]/g, '\\$&').replace(/^\/var/, '(/var)?')}/block-curl\\.so`),
      'mapped from the copy',
    );
  },
);
