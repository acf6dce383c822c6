import * as fs from 'node:fs';
import t from 'tap';
import { DEFAULT_CONFIG } from '../../src/host/config';
import { makePaths } from '../../src/host/paths';
import { takeFingerprint } from '../../src/host/scan';
import { MODDIR, Sysroot } from '../fixtures/sysroot';

// observe: files whose stat data equal the baseline's are not read again.

t.test('unchanged modules are taken from the baseline, changed ones are read', async (t) => {
  const s = Sysroot.qemuHost(['a.so', 'b.so']);
  t.teardown(() => s.cleanup());
  const paths = makePaths({ root: s.root, uid: 0, env: {} });
  const input = { paths, config: DEFAULT_CONFIG, env: {}, extraEmulators: [] };
  const first = takeFingerprint({ ...input, baseline: null });
  const real = first.dirs[0]!.modules.map((m) => m.buildId);
  t.ok(real.every((id) => /^[0-9a-f]{40}$/.test(id!)));

  // A baseline whose build-ids no file has: if a file were read again, its real build-id would show.
  const planted = structuredClone(first);
  // Taken well after the files were written: none of them is "racy" (too close to the scan to trust its times).
  planted.takenAtNs = (BigInt(Date.now() + 10_000) * 1_000_000n).toString();
  for (const m of planted.dirs[0]!.modules) m.buildId = 'from-the-baseline';
  for (const e of planted.emulators) e.stamp = 'from-the-baseline';
  const second = takeFingerprint({ ...input, baseline: planted });
  t.same(
    second.dirs[0]!.modules.map((m) => m.buildId),
    ['from-the-baseline', 'from-the-baseline'],
    'stat only',
  );
  t.ok(
    second.emulators.every((e) => e.stamp === 'from-the-baseline'),
    'emulators too',
  );

  s.replaceInPlace(MODDIR, 'b.so');
  const third = takeFingerprint({ ...input, baseline: planted });
  t.equal(third.dirs[0]!.modules[0]!.buildId, 'from-the-baseline');
  t.match(third.dirs[0]!.modules[1]!.buildId, /^[0-9a-f]{40}$/, 'the changed file was read');

  // content_hash = yes needs a hash the baseline does not have yet.
  const hashed = takeFingerprint({ ...input, config: { ...DEFAULT_CONFIG, contentHash: true }, baseline: planted });
  t.ok(hashed.dirs[0]!.modules.every((m) => /^[0-9a-f]{64}$/.test(m.sha256!)));
  t.ok(fs.existsSync(s.host(MODDIR)));

  // A file changed within the clock's granularity of the baseline scan is read again even with equal stat data.
  const racy = structuredClone(planted);
  racy.takenAtNs = first.takenAtNs;
  t.same(
    takeFingerprint({ ...input, baseline: racy }).dirs[0]!.modules.map((m) => m.buildId === 'from-the-baseline'),
    [false, false],
  );
});
