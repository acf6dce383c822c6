import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import t from 'tap';
import { inCI } from '../fixtures/ci';
import { BARE_ENV } from '../fixtures/hooks';
import { tempDir } from '../fixtures/monitoring';
import { shq } from '../fixtures/shell';
import { EXE } from '../fixtures/sysroot';
import { HOOK_MARKER } from '../../src/host/paths';

// Which running libvirtd hooks-not-loaded judges, on the real /proc: one that
// sees this hooks directory, whether in our mount namespace or in a sandbox
// of its own (a read-only bind, as systemd's ProtectSystem= makes), and not
// one that sees another (a container's). Stand-in daemons (sleep, named
// libvirtd) start before the hooks arrive, so each one judged is "not loaded".
// All of it in a private mount namespace with a tmpfs over /etc/libvirt and
// /var/lib.

const reason =
  process.getuid?.() !== 0
    ? 'not root (mount namespaces, root-owned daemons)'
    : !fs.existsSync('/etc/libvirt')
      ? '/etc/libvirt is not there to mount over (libvirt is not installed)'
      : spawnSync('unshare', ['-m', 'true']).status !== 0
        ? 'unshare -m does not work here'
        : null;
if (reason && inCI()) t.fail(`cannot run: ${reason}`);

t.test('a daemon is judged when it sees our hooks directory', { skip: reason ?? false }, async (t) => {
  const dir = tempDir(t, 'hooks-dir');
  const fake = `${dir}/libvirtd`;
  fs.copyFileSync('/bin/sleep', fake);
  fs.chmodSync(fake, 0o755);
  const hooks = '/etc/libvirt/hooks';
  const script = `
set -e
mount -t tmpfs -o mode=0755 tmpfs /etc/libvirt
mkdir -p ${hooks}/qemu.d ${hooks}/daemon.d
${shq(fake)} 600 & same=$!
unshare -m --propagation private sh -c 'mount -t tmpfs tmpfs ${hooks} && exec "$0" 600' ${shq(fake)} &
other=$!
unshare -m --propagation private sh -c \\
  'mount --bind ${hooks} ${hooks} && mount -o remount,bind,ro ${hooks} && exec "$0" 600' ${shq(fake)} &
sandbox=$!
trap 'kill -KILL "$same" "$other" "$sandbox" 2>/dev/null' EXIT
echo "@@SAME $same"; echo "@@OTHER $other"; echo "@@SANDBOX $sandbox"
# Past the clock slack, the record of a time before the hooks arrive, as install writes it (in a tmpfs of this
# namespace over /var/lib: the host's state is not touched).
sleep 2.5
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir -p /var/lib/qemu-modwatch
date +%s.%N > /var/lib/qemu-modwatch/hooks-installed-after
for d in qemu daemon; do
  printf '#!/bin/sh\\n%s\\nexit 0\\n' ${shq(HOOK_MARKER)} > ${hooks}/$d.d/50-qemu-modwatch
  chmod 0755 ${hooks}/$d.d/50-qemu-modwatch
done
echo "@@STATUS $(${shq(EXE)} status --json | tr -d '\\n')"
`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
    env: BARE_ENV,
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.equal(r.status, 0, r.stderr);
  const pid = (tag: string) => Number(new RegExp(`^@@${tag} (\\d+)$`, 'm').exec(r.stdout)?.[1]);
  // The unshare processes exec the stand-in: their PIDs are the daemons'.
  const [same, other, sandbox] = [pid('SAME'), pid('OTHER'), pid('SANDBOX')];
  const status = JSON.parse(/^@@STATUS (.*)$/m.exec(r.stdout)?.[1] ?? '{}') as {
    daemons?: { name: string; pid: number; hooks: string }[];
  };
  const judged = new Map((status.daemons ?? []).map((d) => [d.pid, d.hooks]));
  t.equal(judged.get(same), 'not-loaded', 'one in our mount namespace is judged', { status });
  t.equal(judged.get(sandbox), 'not-loaded', 'one in a sandbox with our hooks directory bound read-only is judged');
  t.notOk(judged.has(other), 'one that sees another hooks directory is not');
});
