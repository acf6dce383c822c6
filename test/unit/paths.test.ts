// --root: every path resolves as if the root were `/`. Images lay out
// symlinks the way distros do; none of them may lead to this machine's files.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { makePaths, resolveInRoot } from '../../src/host/paths';

function image(t: { teardown(fn: () => void): void }): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-image-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  for (const d of ['run/qemu/Debian_1_7.2', 'usr/lib/x86_64-linux-gnu/qemu', 'usr/bin', 'var', 'etc', 'opt/a/b']) {
    fs.mkdirSync(path.join(root, d), { recursive: true });
  }
  fs.symlinkSync('/run', path.join(root, 'var/run')); // Debian: absolute
  fs.symlinkSync('usr/lib', path.join(root, 'lib')); // merged /usr: relative
  fs.symlinkSync('lib', path.join(root, 'usr/lib64'));
  fs.writeFileSync(path.join(root, 'etc/passwd'), 'image\n');
  fs.symlinkSync('/etc/passwd', path.join(root, 'opt/abs-out'));
  fs.symlinkSync('../../../../../../../../etc/passwd', path.join(root, 'opt/a/b/rel-out'));
  fs.symlinkSync('loop2', path.join(root, 'opt/loop1'));
  fs.symlinkSync('loop1', path.join(root, 'opt/loop2'));
  fs.symlinkSync('/usr/bin/qemu-system-x86_64', path.join(root, 'usr/bin/qemu-kvm'));
  return root;
}

t.test('absolute symlinks of an image lead into the image', async (t) => {
  const root = image(t);
  t.equal(resolveInRoot(root, '/var/run/qemu', true), `${root}/run/qemu`, '/var/run -> /run');
  t.equal(
    resolveInRoot(root, '/var/run/qemu/Debian_1_7.2/block-curl.so', true),
    `${root}/run/qemu/Debian_1_7.2/block-curl.so`,
  );
  t.equal(
    resolveInRoot(root, '/opt/abs-out', true),
    `${root}/etc/passwd`,
    "a link to /etc/passwd is the image's /etc/passwd",
  );
  t.equal(fs.readFileSync(resolveInRoot(root, '/opt/abs-out', true), 'utf8'), 'image\n');
});

t.test('relative symlinks and .. stop at the root', async (t) => {
  const root = image(t);
  t.equal(
    resolveInRoot(root, '/lib/x86_64-linux-gnu/qemu', true),
    `${root}/usr/lib/x86_64-linux-gnu/qemu`,
    '/lib -> usr/lib',
  );
  t.equal(
    resolveInRoot(root, '/usr/lib64/x86_64-linux-gnu', true),
    `${root}/usr/lib/x86_64-linux-gnu`,
    'a chain of relative links',
  );
  t.equal(
    resolveInRoot(root, '/opt/a/b/rel-out', true),
    `${root}/etc/passwd`,
    'a ../../.. link climbs no higher than the root',
  );
  t.equal(resolveInRoot(root, '/../../etc/passwd', true), `${root}/etc/passwd`, '.. in the path itself too');
  t.equal(resolveInRoot(root, '/', true), root);
});

t.test('the last component: followed or not', async (t) => {
  const root = image(t);
  t.equal(
    resolveInRoot(root, '/usr/bin/qemu-kvm', true),
    `${root}/usr/bin/qemu-system-x86_64`,
    'followed, inside the root',
  );
  t.equal(resolveInRoot(root, '/usr/bin/qemu-kvm', false), `${root}/usr/bin/qemu-kvm`, 'not followed: the link itself');
  t.equal(resolveInRoot(root, '/var/run/qemu', false), `${root}/run/qemu`, 'the parents are resolved either way');
});

t.test('what does not exist is kept as it is, and a loop resolves to nothing', async (t) => {
  const root = image(t);
  t.equal(resolveInRoot(root, '/var/lib/nothing/here', true), `${root}/var/lib/nothing/here`);
  const loop = resolveInRoot(root, '/opt/loop1/x', true);
  t.throws(() => fs.statSync(loop), 'a link loop gives a path no system call is made for');
  t.ok(loop.startsWith(root), 'and it is under the root');
});

t.test('makePaths: host() follows, hostNoFollow() keeps the last link; no root, no change', async (t) => {
  const root = image(t);
  const p = makePaths({ root, uid: 0, env: {} });
  t.equal(p.host('/usr/bin/qemu-kvm'), `${root}/usr/bin/qemu-system-x86_64`);
  t.equal(p.hostNoFollow('/usr/bin/qemu-kvm'), `${root}/usr/bin/qemu-kvm`);
  const live = makePaths({ uid: 0, env: {} });
  t.equal(live.host('/var/run/qemu'), '/var/run/qemu', 'on a live system paths are used as they are');
  t.equal(live.hostNoFollow('/var/run/qemu'), '/var/run/qemu');
});
