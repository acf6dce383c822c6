// The packages' record of a time before the hooks arrived
// (build/deb/hooks-present.sh), run by sh against a temporary root given as
// its argument (as DPKG_ROOT): when it writes, keeps and removes it, and that
// check reads what it writes (store/hooks-installed-after.ts). Touches
// nothing outside that root.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { HOOK_MARKER, makePaths } from '../../src/host/paths';
import { loadHooksInstalledAfter } from '../../src/store/hooks-installed-after';
import { shq, top } from './package-kit';

const FN = fs.readFileSync(path.join(top, 'build/deb/hooks-present.sh'), 'utf8');
const RECORD = '/var/lib/qemu-modwatch/hooks-installed-after';
const OURS = `#!/bin/sh\n${HOOK_MARKER}\nexit 0\n`;
const DROPIN = '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch';

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
      timeout: 20_000,
    });
  const record = () => fs.readFileSync(path.join(root, RECORD), 'utf8');
  const has = () => fs.existsSync(path.join(root, RECORD));
  const read = () => loadHooksInstalledAfter(makePaths({ root, uid: 0, env: {} }));
  return { root, put, sh, record, has, read };
}

t.test('none of ours there: "now", to the ns, which check reads; ours there: left as it is', async (t) => {
  const w = world(t);
  // Not ours: an admin's hook that runs qemu-modwatch, a copy of ours, one not executable.
  w.put('/etc/libvirt/hooks/qemu.d/10-admin', '#!/bin/sh\n# calls qemu-modwatch\nqemu-modwatch refresh\n');
  w.put(`${DROPIN}.dpkg-old`, OURS);
  w.put('/etc/libvirt/hooks/qemu.d/20-not-executable', OURS, 0o644);
  const before = Date.now();
  const r = w.sh('qemu_modwatch_hooks_installed_after');
  t.match(r.stdout, /^@@RC 0$/m);
  t.equal(r.stderr, '', 'says nothing');
  t.match(w.record(), /^\d+\.\d{9}\n$/, `to the ns: ${w.record().trim()}`);
  const read = w.read();
  t.equal(read.problem, null, 'check reads it');
  t.ok(read.afterMs! >= before - 1 && read.afterMs! <= Date.now(), 'the time it ran');

  const kept = w.record();
  w.put(DROPIN, OURS);
  w.sh('qemu_modwatch_hooks_installed_after');
  t.equal(w.record(), kept, 'ours there (an upgrade): the record stays');
  fs.rmSync(path.join(w.root, RECORD));
  w.sh('qemu_modwatch_hooks_installed_after');
  t.notOk(w.has(), 'ours there and no record (installed by a version that kept none): none is made up');

  w.sh('qemu_modwatch_hooks_installed_after');
  fs.writeFileSync(path.join(w.root, RECORD), kept);
  w.sh('qemu_modwatch_forget_hooks_installed_after');
  t.ok(w.has(), 'forget, with ours there: kept');
  fs.rmSync(path.join(w.root, DROPIN));
  w.sh('qemu_modwatch_forget_hooks_installed_after');
  t.notOk(w.has(), 'forget, with only copies and hooks of others left: removed');
});

t.test('the single-file and chained layouts: hooks/qemu and hooks/daemon of ours count', async (t) => {
  const w = world(t);
  w.put('/etc/libvirt/hooks/daemon', OURS);
  w.sh('qemu_modwatch_hooks_installed_after');
  t.notOk(w.has(), 'ours there: nothing written');
});

t.test('a date without %N: whole seconds', async (t) => {
  const w = world(t);
  const stub = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-date-'));
  t.teardown(() => fs.rmSync(stub, { recursive: true, force: true }));
  // As busybox's: %N printed as it stands.
  fs.writeFileSync(
    path.join(stub, 'date'),
    `#!/bin/sh\n[ "$1" = +%s.%N ] && { echo "$(/bin/date +%s).N"; exit 0; }\nexec /bin/date "$@"\n`,
    { mode: 0o755 },
  );
  t.match(w.sh('qemu_modwatch_hooks_installed_after', stub).stdout, /^@@RC 0$/m);
  t.match(w.record(), /^\d+\n$/, `whole seconds: ${w.record().trim()}`);
  t.equal(w.read().problem, null);
});

t.test('a FIFO where the temporary file goes does not hang it', async (t) => {
  const w = world(t);
  fs.mkdirSync(path.join(w.root, 'var/lib/qemu-modwatch'), { recursive: true });
  t.equal(spawnSync('mkfifo', [path.join(w.root, `${RECORD}.tmp`)]).status, 0);
  const r = w.sh('qemu_modwatch_hooks_installed_after');
  t.match(r.stdout, /^@@RC 0$/m, 'returns');
  t.ok(fs.statSync(path.join(w.root, RECORD)).isFile(), 'and writes the record');
});

t.test(
  'a record that cannot be written: one line on stderr, and no failure',
  { skip: process.getuid?.() !== 0 ? 'not root' : false },
  async (t) => {
    const w = world(t);
    w.put('/var/lib/qemu-modwatch', 'a file where the directory should be\n', 0o644);
    const r = w.sh('qemu_modwatch_hooks_installed_after');
    t.match(r.stdout, /^@@RC 0$/m, 'succeeds');
    t.same(
      r.stderr.trim().split('\n'),
      [
        `qemu-modwatch: could not record when its hooks were installed in ${w.root}${RECORD}: until libvirt ` +
          'reloads, check may say cannot-tell of a daemon that started before them',
      ],
      'one line, saying what it means',
    );
  },
);
