// The run-wide host check (test/run.mjs) is only as good as the snapshot it
// compares: every kind of change a leaking test can make must show.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';

// An ES module (the runner loads it as plain JavaScript): imported dynamically from this CommonJS test.
const lib = import('../host-snapshot.mjs');

async function world(t: Test) {
  const { snapshot: snap } = await lib;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-snapshot-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const etc = path.join(dir, 'etc');
  const bin = path.join(dir, 'bin');
  const tmp = path.join(dir, 'tmp');
  for (const d of [etc, bin, tmp]) fs.mkdirSync(d);
  fs.writeFileSync(path.join(etc, 'a.conf'), 'a\n');
  fs.writeFileSync(path.join(bin, 'qemu-system-x86_64'), '#!/bin/sh\n', { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'ls'), '');
  const paths = [etc, { dir: bin, match: /^qemu/ }, path.join(dir, 'absent')];
  return { dir, etc, bin, tmp, take: () => snap(paths, tmp) };
}

t.test('nothing changed: no differences', async (t) => {
  const { differences: diff } = await lib;
  const w = await world(t);
  t.same(diff(w.take(), w.take()), []);
});

t.test('every kind of change shows, each on one line naming the path', async (t) => {
  const { differences: diff } = await lib;
  const w = await world(t);
  const before = w.take();
  const emu = path.join(w.bin, 'qemu-system-x86_64');
  fs.chmodSync(emu, 0o755); // same mode: only the ctime changes (the chmod nudge)
  fs.writeFileSync(path.join(w.etc, 'new.conf'), '');
  fs.rmSync(path.join(w.etc, 'a.conf'));
  fs.mkdirSync(path.join(w.dir, 'absent'));
  fs.mkdirSync(path.join(w.tmp, 'qmw-left-behind'));
  fs.writeFileSync(path.join(w.bin, 'ls'), 'changed'); // not matched: not watched
  const d = diff(before, w.take());
  const one = (re: RegExp) => t.equal(d.filter((l) => re.test(l)).length, 1, `${re}: ${d.join(' | ')}`);
  one(/^~ .*qemu-system-x86_64: .*ctime=/);
  one(/^\+ .*etc\/new\.conf /);
  one(/^- .*etc\/a\.conf /);
  one(/^~ .*\/etc: dir /); // the directory's own mtime moved
  one(/^\+ .*\/absent \(dir /);
  one(/^\+ .*tmp\/qmw-left-behind \(a test temp dir\)/);
  t.notOk(
    d.some((l) => l.includes(`${path.sep}ls`)),
    'an entry the filter leaves out is not compared',
  );
});

t.test('a symlink is compared as a link, never followed', async (t) => {
  const { differences: diff } = await lib;
  const w = await world(t);
  const outside = path.join(w.dir, 'outside');
  fs.mkdirSync(outside);
  fs.symlinkSync(outside, path.join(w.etc, 'link'));
  const before = w.take();
  fs.writeFileSync(path.join(outside, 'f'), '');
  t.same(diff(before, w.take()), [], 'a change behind the link is not the link');
  fs.rmSync(path.join(w.etc, 'link'));
  fs.symlinkSync('/elsewhere', path.join(w.etc, 'link'));
  t.match(diff(before, w.take()).join('\n'), /-> \/elsewhere/, 'a new target is');
});

t.test('the host list names what the issue asks for', async (t) => {
  const { hostPaths } = await lib;
  const flat = hostPaths().map((p) => (typeof p === 'string' ? p : p.dir));
  for (const p of [
    '/etc/libvirt',
    '/etc/qemu-modwatch.conf',
    '/var/lib/qemu-modwatch',
    '/var/cache/libvirt',
    '/var/lib/libvirt',
    '/run/libvirt',
    '/run/qemu',
    '/usr/libexec/qemu-modwatch',
    '/usr/bin',
    '/etc/systemd/system',
    '/etc/apt/apt.conf.d',
    '/etc/dnf',
    '/usr/share/libalpm/hooks',
    '/var/lib/dpkg',
    '/var/lib/rpm',
  ]) {
    t.ok(flat.includes(p), p);
  }
});
