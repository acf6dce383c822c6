// QEMU's module rules as the core applies them, on hand-made values. The
// integration tests hold the same rules against QEMU itself (real-verdicts).
import t from 'tap';
import { abortsAfterRefusal, relocatedModuleDir, targetOf, upgradeDirOf, wouldLoad } from '../../src/core/qemu-rules';

t.test(
  'upgradeDirOf: /var/run/qemu/ and the package version, sanitised; none without upgrade copies or a version',
  async (t) => {
    t.equal(
      upgradeDirOf({ usesUpgradeDirs: true, pkgVersion: 'Debian 1:7.2+dfsg-7+deb12u15' }),
      '/var/run/qemu/Debian_1_7.2+dfsg-7+deb12u15',
    );
    t.equal(
      upgradeDirOf({ usesUpgradeDirs: true, pkgVersion: 'a/b c~d' }),
      '/var/run/qemu/a_b_c~d',
      'a slash never makes another directory',
    );
    t.equal(
      upgradeDirOf({ usesUpgradeDirs: true, pkgVersion: null }),
      null,
      'version unknown: no directory is claimed',
    );
    t.equal(
      upgradeDirOf({ usesUpgradeDirs: false, pkgVersion: 'Debian 1:7.2' }),
      null,
      'a build without module upgrades',
    );
  },
);

t.test('targetOf: from qemu-system-<target>, nothing else guessed', async (t) => {
  t.equal(targetOf('/usr/bin/qemu-system-x86_64'), 'x86_64');
  t.equal(targetOf('/usr/libexec/qemu-system-i386'), 'i386');
  t.equal(targetOf('/usr/libexec/qemu-kvm'), null);
  t.equal(targetOf(null), null);
  t.equal(targetOf('/usr/bin/qemu-system-'), null);
});

t.test('wouldLoad: in the table, for the target; unknown without a table', async (t) => {
  const modinfo = [
    { name: 'hw-display-qxl', arch: null },
    { name: 'accel-tcg-i386', arch: 'i386' },
    { name: 'accel-tcg-x86_64', arch: 'x86_64' },
  ];
  t.equal(wouldLoad({ modinfo }, 'x86_64', 'hw-display-qxl.so'), true);
  t.equal(wouldLoad({ modinfo }, 'x86_64', 'accel-tcg-i386.so'), false, 'another target');
  t.equal(wouldLoad({ modinfo }, 'x86_64', 'accel-tcg-x86_64.so'), true);
  t.equal(wouldLoad({ modinfo }, 'x86_64', 'hw-s390x-virtio-gpu-ccw.so'), false, 'not in the table');
  t.equal(wouldLoad({ modinfo }, null, 'accel-tcg-i386.so'), null, 'a target-specific module, the target unknown');
  t.equal(wouldLoad({ modinfo: null }, 'x86_64', 'accel-tcg-i386.so'), null, 'no table: it may load anything');
});

t.test('abortsAfterRefusal: 7.2 to 10.x; unknown outside', async (t) => {
  for (const v of ['7.2.0', '7.2.22', '8.0.0', '9.2.1', '10.0.2']) t.equal(abortsAfterRefusal(v), true, v);
  for (const v of ['7.1.0', '6.2.0', '11.0.0']) t.equal(abortsAfterRefusal(v), null, v);
  t.equal(abortsAfterRefusal(null), null);
});

t.test('relocatedModuleDir: 7.2 follows the binary, 8.2 and later keep the compiled-in directory', async (t) => {
  const dir = '/usr/lib/x86_64-linux-gnu/qemu';
  t.equal(
    relocatedModuleDir('/usr/bin/qemu-system-x86_64', dir, '7.2.22'),
    dir,
    'in its own bindir: the same directory',
  );
  t.equal(relocatedModuleDir('/opt/q/bin/qemu-system-x86_64', dir, '7.2.22'), '/opt/q/lib/x86_64-linux-gnu/qemu');
  t.equal(
    relocatedModuleDir('/usr/libexec/qemu-system-i386', dir, '7.2.22'),
    dir,
    '/usr/libexec is one level below /usr too',
  );
  t.equal(
    relocatedModuleDir('/opt/q/bin/qemu-system-x86_64', '/usr/local/lib/x86_64-linux-gnu/qemu', '7.2.0'),
    '/opt/q/lib/x86_64-linux-gnu/qemu',
  );
  t.equal(
    relocatedModuleDir('/opt/q/bin/qemu-system-x86_64', dir, '10.0.2'),
    dir,
    'Debian 10.0 measured: not relocated',
  );
  t.equal(relocatedModuleDir('/opt/q/bin/qemu-system-x86_64', '/srv/qemu', '7.2.0'), null, 'a prefix we do not know');
});
