// The packages' record of since when the hooks are there
// (build/deb/hooks-present.sh), run by sh against a temporary root given as
// its argument (as DPKG_ROOT): what it writes, keeps and removes, and that
// check reads what it writes (store/hooks-present.ts). Touches nothing
// outside that root.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { makePaths } from '../../src/host/paths';
import { loadHooksPresent } from '../../src/store/hooks-present';
import { shq, top } from './package-kit';

const FN = fs.readFileSync(path.join(top, 'build/deb/hooks-present.sh'), 'utf8');
const RECORD = '/var/lib/qemu-modwatch/hooks-present-since';
const OURS = '#!/bin/sh\n# qemu-modwatch: libvirt qemu hook dispatcher\nexit 0\n';

function world(t: { teardown(fn: () => void): void }) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-present-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const put = (p: string, text: string, mode = 0o755) => {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    fs.writeFileSync(path.join(root, p), text);
    fs.chmodSync(path.join(root, p), mode);
  };
  const sh = (call: string, pathDir?: string) =>
    spawnSync('sh', ['-c', `${FN}\n${call} ${shq(root)}; echo "@@RC $?"`], {
      encoding: 'utf8',
      env: { PATH: `${pathDir ? `${pathDir}:` : ''}/usr/sbin:/usr/bin:/sbin:/bin`, LC_ALL: 'C' },
    });
  const record = () => fs.readFileSync(path.join(root, RECORD), 'utf8');
  const has = () => fs.existsSync(path.join(root, RECORD));
  const ctime = (p: string) => spawnSync('stat', ['-c', '%.9Z', path.join(root, p)], { encoding: 'utf8' }).stdout;
  return { root, put, sh, record, has, ctime };
}

t.test('records the newest ctime of our dispatchers; copies and hooks of others do not count', async (t) => {
  const w = world(t);
  w.put('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', OURS);
  await new Promise((r) => setTimeout(r, 20));
  w.put('/etc/libvirt/hooks/daemon.d/50-qemu-modwatch', OURS.replace('qemu hook', 'daemon hook'));
  await new Promise((r) => setTimeout(r, 20));
  w.put('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch.dpkg-old', OURS);
  w.put('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch.rpmnew', OURS);
  w.put('/etc/libvirt/hooks/qemu.d/10-admin', '#!/bin/sh\nexit 0\n');
  w.put('/etc/libvirt/hooks/qemu.d/20-not-executable', OURS, 0o644);
  const r = w.sh('qemu_modwatch_keep_hooks_present');
  t.match(r.stdout, /^@@RC 0$/m);
  t.equal(r.stderr, '', 'says nothing');
  t.equal(w.record(), w.ctime('/etc/libvirt/hooks/daemon.d/50-qemu-modwatch'), 'the daemon dispatcher: the newest');
  const read = loadHooksPresent(makePaths({ root: w.root, uid: 0, env: {} }));
  t.equal(read.problem, null, 'check reads it');
  const [s, ns] = w.record().trim().split('.');
  t.equal(read.since?.earliestMs, Number(s) * 1000 + Number(ns) / 1e6, 'to the ns, as written');

  const kept = w.record();
  w.put('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', OURS + '# upgraded\n');
  w.sh('qemu_modwatch_keep_hooks_present');
  t.equal(w.record(), kept, 'a record there stays: the hooks were there since');
  fs.writeFileSync(path.join(w.root, RECORD), 'garbage\n');
  w.sh('qemu_modwatch_keep_hooks_present');
  t.equal(w.record(), w.ctime('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch'), 'a damaged one is replaced');

  w.sh('qemu_modwatch_forget_hooks_present');
  t.ok(w.has(), 'forget, with our dispatchers there: kept');
  fs.rmSync(path.join(w.root, 'etc/libvirt/hooks/qemu.d/50-qemu-modwatch'));
  fs.rmSync(path.join(w.root, 'etc/libvirt/hooks/daemon.d/50-qemu-modwatch'));
  w.sh('qemu_modwatch_forget_hooks_present');
  t.notOk(w.has(), 'forget, with only copies and hooks of others left: removed');
  fs.mkdirSync(path.join(w.root, 'var/lib/qemu-modwatch'), { recursive: true });
  fs.writeFileSync(path.join(w.root, RECORD), '1700000000\n');
  w.sh('qemu_modwatch_keep_hooks_present');
  t.notOk(w.has(), 'keep, with none of ours there: a record left is not of these hooks and goes');
});

t.test('a stat without %.9Z: whole seconds, read as a second wide', async (t) => {
  const w = world(t);
  w.put('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', OURS);
  const stub = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-stat-'));
  t.teardown(() => fs.rmSync(stub, { recursive: true, force: true }));
  // As an old coreutils: %.9Z printed as it stands.
  fs.writeFileSync(
    path.join(stub, 'stat'),
    `#!/bin/sh\n[ "$2" = %.9Z ] && { echo '?'; exit 0; }\nexec /usr/bin/stat "$@"\n`,
    { mode: 0o755 },
  );
  t.match(w.sh('qemu_modwatch_keep_hooks_present', stub).stdout, /^@@RC 0$/m);
  t.match(w.record(), /^\d+\n$/, `whole seconds: ${w.record().trim()}`);
  const since = loadHooksPresent(makePaths({ root: w.root, uid: 0, env: {} })).since;
  t.equal((since?.latestMs ?? 0) - (since?.earliestMs ?? 0), 1000, 'known to the second');
});

t.test(
  'a record that cannot be written: one line on stderr, and no failure',
  { skip: process.getuid?.() !== 0 ? 'not root' : false },
  async (t) => {
    const w = world(t);
    w.put('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', OURS);
    w.put('/var/lib/qemu-modwatch', 'a file where the directory should be\n', 0o644);
    const r = w.sh('qemu_modwatch_keep_hooks_present');
    t.match(r.stdout, /^@@RC 0$/m, 'succeeds');
    t.same(
      r.stderr.trim().split('\n'),
      [
        `qemu-modwatch: could not record since when its hooks are there in ${w.root}${RECORD}: until libvirt ` +
          'reloads, check may say hooks-not-loaded of a daemon that runs them',
      ],
      'one line, saying what it means',
    );
  },
);
