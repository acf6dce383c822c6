import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { runHook, fakeSyslog, fileId, prepare } from '../fixtures/hooks';
import { addGuest } from '../fixtures/guests';
import { assertSchema, parsePrometheus, value } from '../fixtures/outputs';
import { EMULATOR, MODDIR, sysroot } from '../fixtures/sysroot';

// The manual commands: invalidate, refresh and status.

const AARCH = '/usr/bin/qemu-system-aarch64';
const state = (s: { statePath(): string }) => JSON.parse(fs.readFileSync(s.statePath(), 'utf8'));

t.test('invalidate: all entries, nudged, printed, recorded as the last action', async (t) => {
  const s = sysroot(t);
  s.addEmulator(AARCH, { dirs: ['/usr/lib/aarch64-linux-gnu/qemu'] });
  t.equal(s.run(['accept']).code, 0);
  const x86 = s.addCacheEntry(EMULATOR);
  const arm = s.addCacheEntry(AARCH);
  fs.mkdirSync(s.host('/outside'));
  fs.symlinkSync(s.host('/outside'), path.join(s.cacheDir(), 'c'.repeat(64) + '.xml'));
  s.write('/var/cache/libvirt/qemu/capabilities/notes.txt', 'not an entry');
  const log = fakeSyslog(s);
  const before = fileId(s.host(EMULATOR))!;

  const dry = s.run(['invalidate', '--dry-run'], { env: log.env });
  t.equal(dry.code, 0, dry.stderr);
  t.match(dry.stdout, /^dry run: nothing is changed\nwould delete 2 capabilities cache entries:\n/);
  t.match(dry.stdout, new RegExp(`would nudge \\(emulator-ctime\\): ${AARCH}, ${EMULATOR}`));
  t.match(dry.stdout, /left alone: c{64}\.xml \(a symlink, not a cache entry; left alone\)/);
  t.same(s.cacheFiles().length, 4, 'dry run deletes nothing');
  t.same(fileId(s.host(EMULATOR)), before, 'and nudges nothing');
  t.same(log.lines(), []);

  await new Promise((r) => setTimeout(r, 20));
  const r = s.run(['invalidate'], { env: log.env });
  t.equal(r.code, 0, r.stderr);
  const rows = [`  ${arm}  ${AARCH}`, `  ${x86}  ${EMULATOR}`].sort().join('\\n');
  t.match(
    r.stdout,
    new RegExp(
      `^deleted 2 capabilities cache entries:\\n${rows}\\nnudged \\(emulator-ctime\\): ${AARCH}, ${EMULATOR}\\n`,
    ),
  );
  t.same(s.cacheFiles(), ['c'.repeat(64) + '.xml', 'notes.txt'], 'only regular files named like entries are deleted');
  t.ok(fs.lstatSync(path.join(s.cacheDir(), 'c'.repeat(64) + '.xml')).isSymbolicLink());
  const after = fileId(s.host(EMULATOR))!;
  t.ok(after.ctimeMs > before.ctimeMs, 'emulator ctime moved');
  t.equal(after.mtimeMs, before.mtimeMs);
  const last = state(s).lastAction;
  t.equal(last.trigger, 'invalidate');
  t.same(last.deleted.sort(), [arm, x86].sort());
  t.match(log.lines().join('\n'), /invalidate: deleted 2 capabilities cache entries/);
});

t.test('invalidate --emulator PATH: only that one; JSON; --nudge none and moddir-mtime', async (t) => {
  const s = sysroot(t);
  s.addEmulator(AARCH, { dirs: ['/usr/lib/aarch64-linux-gnu/qemu'] });
  const x86 = s.addCacheEntry(EMULATOR);
  const arm = s.addCacheEntry(AARCH);
  const r = s.run(['invalidate', '--emulator', EMULATOR, '--json', '--nudge', 'none']);
  t.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assertSchema(out, 'invalidate');
  t.same(out.deleted, [{ file: x86, emulator: EMULATOR }]);
  t.same(out.nudged, []);
  t.equal(out.nudge, 'none');
  t.same(s.cacheFiles(), [arm]);
  t.notOk(fs.existsSync(s.statePath()), 'no baseline: no state is invented');
  // The entry is gone, but the daemon may still hold it in memory: nudge anyway.
  const dirBefore = fs.statSync(s.host(MODDIR)).mtimeMs;
  await new Promise((r) => setTimeout(r, 20));
  const again = s.run(['invalidate', '--emulator', EMULATOR, '--nudge', 'moddir-mtime']);
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, new RegExp(`deleted 0 capabilities cache entries\\nnudged \\(moddir-mtime\\): ${MODDIR}\\n`));
  t.ok(fs.statSync(s.host(MODDIR)).mtimeMs > dirBefore, 'module directory mtime moved');
  const e = s.run(['invalidate', '--emulator', 'relative/path']);
  t.equal(e.code, 3);
  t.match(e.stderr, /--emulator relative\/path: expected an absolute path/);
  t.equal(s.run(['invalidate', '--nudge', 'sometimes']).code, 3);
  t.equal(s.run(['check', '--dry-run']).code, 3, '--dry-run does not go with check');
});

t.test('refresh: acts like the hooks, records the baseline, exits 0; JSON and textfile', async (t) => {
  const s = sysroot(t);
  t.equal(s.run(['accept']).code, 0);
  const entry = s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
  addGuest(s, { pid: 4242, domain: 'web01', stamp: 'ab'.repeat(20) });
  const log = fakeSyslog(s);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-textfile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = s.run(['refresh', '--textfile', dir], { env: log.env });
  t.equal(r.code, 0, r.stderr);
  t.match(
    r.stdout,
    new RegExp(
      `^qemu-modwatch refresh: deleted 1 capabilities cache entry; nudged ${EMULATOR}; recorded the baseline\\n`,
    ),
  );
  t.match(
    r.stdout,
    /Still needs attention\n(?: {2}WARNING .*\n)* {2}WARNING {2}guest 'web01' \(pid 4242\) will fail to load/,
  );
  t.match(r.stdout, /Next: Restart or migrate this guest/);
  t.notOk(fs.existsSync(path.join(s.cacheDir(), entry)));
  t.equal(state(s).lastAction.trigger, 'refresh');
  t.match(log.lines().join('\n'), /QEMU modules changed \(replaced hw-display-qxl\.so\)/);
  const prom = parsePrometheus(fs.readFileSync(path.join(dir, 'qemu_modwatch.prom'), 'utf8'));
  t.equal(
    value(prom.samples, 'qemu_modwatch_pending_changes', { kind: 'replaced' }),
    0,
    'the metrics tell the state after refreshing',
  );
  t.equal(value(prom.samples, 'qemu_modwatch_guests_at_risk'), 1);

  const again = s.run(['refresh', '--json']);
  t.equal(again.code, 0);
  const out = JSON.parse(again.stdout);
  assertSchema(out, 'refresh');
  t.same(out.deleted, []);
  t.equal(out.recorded, false);
  t.equal(out.report.counts.guestsAtRisk, 1);
  t.match(s.run(['refresh']).stdout, /^qemu-modwatch refresh: nothing to do\n/);
});

t.test('refresh never fails a package transaction; only bad arguments exit non-zero', async (t) => {
  const s = sysroot(t);
  const log = fakeSyslog(s);
  s.writeConfig('[policy]\non_change = sometimes\n');
  const r = s.run(['refresh'], { env: log.env });
  t.equal(r.code, 0);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^qemu-modwatch: refresh failed: .*on_change = sometimes/);
  t.match(log.lines().join('\n'), /refresh failed/);
  s.writeConfig('');
  // An entry that cannot be deleted: the cache directory made read-only is no
  // obstacle to root, so a directory named like an entry stands in.
  fs.mkdirSync(path.join(s.cacheDir(), 'd'.repeat(64) + '.xml'), { recursive: true });
  t.equal(s.run(['refresh']).code, 0);
  const bad = s.run(['refresh', '--format', 'nagios']);
  t.equal(bad.code, 3, 'bad arguments are a bug in the caller');
  t.match(bad.stderr, /--format nagios goes with check only/);
});

t.test('status: none, then the baseline and the last action; corrupt is a WARNING', async (t) => {
  const s = sysroot(t);
  let r = s.run(['status']);
  t.equal(r.code, 0);
  t.match(r.stdout, /^State +\/var\/lib\/qemu-modwatch\/state\.json\nBaseline +none recorded yet/);
  t.match(r.stdout, /Last full check +none recorded; the next hook runs one/);
  assertSchema(JSON.parse(s.run(['status', '--json']).stdout), 'status');

  t.equal(prepare(s).code, 0, 'a hook run records a first baseline and the mark');
  s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  s.addModule(MODDIR, 'hw-usb-smartcard.so');
  t.equal(runHook(s, 'daemon', ['-', 'reload', 'begin', 'SIGHUP']).code, 0);
  r = s.run(['status']);
  t.equal(r.code, 0);
  t.match(r.stdout, /State +\/var\/lib\/qemu-modwatch\/state\.json \(written by qemu-modwatch \d+\.\d+\.\d+\)/);
  t.match(r.stdout, /Baseline +\S+Z \(\d+ s ago\): 4 modules in 1 module directory/);
  t.match(
    r.stdout,
    new RegExp(
      String.raw`Last action +\S+Z \(\d+ s ago\) by hook daemon reload: QEMU modules changed \(added ` +
        String.raw`hw-usb-smartcard\.so\); deleted 1 capabilities cache entries`,
    ),
  );
  t.match(r.stdout, /Last full check +\S+Z \(\d+ s ago\), by a hook or refresh/);
  const j = JSON.parse(s.run(['status', '--json']).stdout);
  assertSchema(j, 'status');
  t.equal(j.lastAction.trigger, 'hook daemon reload');
  t.ok(j.baseline.ageSeconds < 60);
  t.ok(j.lastFullCheck.ageSeconds < 60);

  s.write('/var/lib/qemu-modwatch/state.json', 'garbage');
  r = s.run(['status']);
  t.equal(r.code, 1);
  t.match(r.stdout, /Baseline +unusable: .*not valid JSON/);
});

t.test('accept --json matches its schema', async (t) => {
  const s = sysroot(t);
  assertSchema(JSON.parse(s.run(['accept', '--json']).stdout), 'accept');
});
