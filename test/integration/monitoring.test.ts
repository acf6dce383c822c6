import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { FINDING_CODES } from '../../src/core/decide';
import { addGuest } from '../fixtures/guests';
import { checkAllFormats, parseNagios, parsePrometheus, value } from '../fixtures/outputs';
import { EMULATOR, EXE, MODDIR, Sysroot, sysroot } from '../fixtures/sysroot';
import { HOOK_MARKER } from '../../src/host/paths';

// --check in every output format (text, json, nagios, prometheus) for every
// kind of finding, each output validated against what it promises, and
// the textfile and --timeout machinery.

const OTHER = 'cd'.repeat(20);

interface Scenario {
  name: string;
  codes: string[];
  make(t: Test): Sysroot;
}

const scenarios: Scenario[] = [
  { name: 'no QEMU', codes: ['no-qemu', 'no-baseline'], make: (t) => sysroot(t, new Sysroot()) },
  { name: 'first run', codes: ['no-baseline'], make: (t) => sysroot(t) },
  {
    name: 'corrupt state',
    codes: ['corrupt-state'],
    make: (t) => {
      const s = sysroot(t);
      s.write('/var/lib/qemu-modwatch/state.json', '{"schema":1');
      return s;
    },
  },
  {
    name: 'modules changed, metadata, emulator rebuilt, refused modules',
    codes: ['module-changed', 'module-metadata', 'emulator-changed', 'stamp-mismatch'],
    make: (t) => {
      const s = sysroot(t);
      s.run(['accept']);
      s.addModule(MODDIR, 'hw-usb-smartcard.so', { stamp: OTHER });
      const later = new Date(Date.now() + 5000);
      fs.utimesSync(s.host(`${MODDIR}/block-rbd.so`), later, later);
      s.addEmulator(EMULATOR, { stamp: OTHER });
      return s;
    },
  },
  {
    name: 'an upgrade copy gone (a reboot), an old module only another target would load',
    codes: ['upgrade-copy-changed', 'leftover-module'],
    make: (t) => {
      const s = sysroot(t);
      s.addModule('/var/run/qemu/Debian_1_7.1', 'block-rbd.so', { stamp: OTHER });
      s.run(['accept']);
      fs.rmSync(s.host('/var/run/qemu/Debian_1_7.1'), { recursive: true });
      // No aarch64 emulator is installed: nothing loads it, nothing refuses it.
      s.addModule('/usr/lib/aarch64-linux-gnu/qemu', 'hw-display-virtio-gpu.so', { stamp: OTHER });
      return s;
    },
  },
  {
    name: 'stale entries: one libvirt re-probes, one it keeps serving',
    codes: ['stale-cache-entry'],
    make: (t) => {
      const s = sysroot(t);
      s.addEmulator('/usr/bin/qemu-system-aarch64', { dirs: [MODDIR] });
      s.run(['accept']);
      const dirMtime = Math.floor(fs.statSync(s.host(MODDIR)).mtimeMs / 1000);
      s.addCacheEntry(EMULATOR, { ageSeconds: 100 });
      s.addCacheEntry('/usr/bin/qemu-system-aarch64', { ageSeconds: 100, qemumoddirmtime: dirMtime });
      s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
      return s;
    },
  },
  {
    name: 'no stamp to check against, wrapper unresolved',
    codes: ['no-stamp-check', 'wrapper-unresolved'],
    make: (t) => {
      const s = sysroot(t, new Sysroot());
      s.addEmulator(EMULATOR, { stamp: null });
      s.addModule(MODDIR, 'hw-display-qxl.so');
      s.write('/usr/local/bin/qemu-system-weird', '#!/bin/sh\nexec $(which qemu) "$@"\n', 0o755);
      return s;
    },
  },
  {
    name: 'unreadable things',
    codes: ['unreadable-module', 'missing-dir', 'unreadable-cache-entry'],
    make: (t) => {
      const s = sysroot(t);
      s.write(`${MODDIR}/text.so`, 'not an ELF file\n');
      s.writeConfig('[modules]\ndirs = /opt/nowhere\n');
      s.write(`/var/cache/libvirt/qemu/capabilities/${'b'.repeat(64)}.xml`, '<notCaps/>');
      return s;
    },
  },
  {
    name: 'cache directory is a symlink',
    codes: ['cache-dir-problem'],
    make: (t) => {
      const s = sysroot(t);
      s.mkdir('/elsewhere');
      fs.mkdirSync(s.host('/var/cache/libvirt/qemu'), { recursive: true });
      fs.symlinkSync(s.host('/elsewhere'), s.cacheDir());
      return s;
    },
  },
  {
    name: 'a libvirtd that started before the hooks were installed, and has not reloaded since',
    codes: ['hooks-not-loaded'],
    make: (t) => {
      const s = sysroot(t);
      // Booted 1000 s ago; libvirtd started 1 s after the boot (100 ticks), the dispatcher installed now, after
      // the record of a time before it came.
      s.write('/proc/uptime', '1000.00 1900.00\n');
      s.write('/proc/5150/stat', `5150 (libvirtd) S 1 5150 5150 0 -1 4194560 ${'0 '.repeat(12)}100 0\n`);
      s.write('/var/lib/qemu-modwatch/hooks-installed-after', `${Math.floor(Date.now() / 1000)}\n`);
      s.write('/etc/libvirt/hooks/qemu.d/50-qemu-modwatch', `#!/bin/sh\n${HOOK_MARKER}\n`, 0o755);
      return s;
    },
  },
  {
    name: 'running guests: at risk, emulator replaced, unreadable',
    codes: ['guest-at-risk', 'guest-emulator-replaced', 'guest-unchecked'],
    make: (t) => {
      const s = sysroot(t);
      const old = s.stamp;
      addGuest(s, { pid: 4242, domain: 'web01' });
      addGuest(s, { pid: 4343, domain: 'db "1"\nx', exe: { link: '/nonexistent/qemu-system-x86_64 (deleted)' } });
      // The upgrade: new emulator and modules; web01 still runs the old build.
      s.addEmulator(EMULATOR, { stamp: OTHER });
      for (const m of ['hw-display-qxl.so', 'hw-usb-redirect.so', 'block-rbd.so'])
        s.addModule(MODDIR, m, { stamp: OTHER });
      t.not(old, OTHER);
      return s;
    },
  },
];

t.test('every finding kind in every format', async (t) => {
  const covered = new Set<string>();
  for (const sc of scenarios) {
    await t.test(sc.name, async (t) => {
      const s = sc.make(t);
      const out = checkAllFormats(s);
      const codes = new Set(out.report.findings.map((f: any) => f.code));
      for (const code of sc.codes) {
        t.ok(codes.has(code), `json has ${code}`);
        t.ok((value(out.prom.samples, 'qemu_modwatch_findings', { code }) ?? 0) >= 1, `prometheus counts ${code}`);
        covered.add(code);
      }
      for (const f of out.report.findings.filter((f: any) => f.level !== 'OK')) {
        const shown = f.message.replace(/\n/g, '\\x0a').replace(/\|/g, '/');
        t.ok(
          out.nagios.details.some((l) => l.includes(shown)),
          `nagios details: ${f.code}`,
        );
        t.ok(out.text.includes(f.message.replace(/\n/g, '\\x0a')), `text: ${f.code}`);
      }
      t.ok(
        out.nagios.firstLine.split(' | ')[0]!.length < 80 + 'QEMU-MODWATCH CRITICAL - '.length,
        'status line summary is short',
      );
      t.ok(out.nagios.summary.length < 80, `summary under 80 characters: ${out.nagios.summary}`);
      const c = out.report.counts;
      t.same(
        [
          out.nagios.perf.modules!.value,
          out.nagios.perf.changed!.value,
          out.nagios.perf.stale_caches!.value,
          out.nagios.perf.refused_modules!.value,
          out.nagios.perf.guests_at_risk!.value,
        ],
        [c.modules, c.changed, c.staleCacheEntries, c.refusedModules, c.guestsAtRisk],
        'perfdata = counts',
      );
      t.equal(out.nagios.perf.refused_modules!.crit, '0', 'refused modules: critical above 0');
      t.equal(value(out.prom.samples, 'qemu_modwatch_guests_at_risk'), c.guestsAtRisk);
      t.equal(value(out.prom.samples, 'qemu_modwatch_info', { version: out.report.version }), 1);
      t.equal(value(out.prom.samples, 'qemu_modwatch_check_success'), 1);
      const ts = value(out.prom.samples, 'qemu_modwatch_last_check_timestamp_seconds')!;
      t.ok(Math.abs(ts - Date.now() / 1000) < 60, 'last check timestamp in seconds');
    });
  }
  // Root reads any directory, so an unlistable one cannot be made here.
  t.same(
    FINDING_CODES.filter((c) => !covered.has(c)),
    ['unreadable-dir'],
    'every finding code but unreadable-dir is covered',
  );
});

t.test('stale entries: what libvirt does by itself, and the advice', async (t) => {
  const s = scenarios.find((x) => x.name.startsWith('stale entries'))!.make(t);
  const { report, text, nagios, prom } = checkAllFormats(s);
  const byEmu = Object.fromEntries(report.cache.entries.map((e: any) => [e.emulator, e]));
  t.equal(
    byEmu[EMULATOR].libvirtOutcome,
    'reprobes',
    'no <qemumoddirmtime> from a 9.0 libvirt: its module-dir check fires',
  );
  t.match(byEmu[EMULATOR].libvirtReason, /differs from <qemumoddirmtime> \(0\)/);
  t.equal(
    byEmu['/usr/bin/qemu-system-aarch64'].libvirtOutcome,
    'serves-stale',
    'module replaced in place, directory mtime put back',
  );
  t.equal(byEmu['/usr/bin/qemu-system-aarch64'].libvirtReason, null);
  t.equal(report.counts.staleCacheEntriesServed, 1);
  t.match(report.advice[0], /^Run 'qemu-modwatch refresh': libvirt keeps serving 1 stale capabilities cache entry/);
  t.match(text, /libvirt keeps serving it/);
  t.match(text, /Next: Run 'qemu-modwatch refresh'/);
  t.ok(nagios.details.some((l) => /keeps serving it until it is invalidated \('qemu-modwatch refresh'\)/.test(l)));
  t.equal(value(prom.samples, 'qemu_modwatch_stale_cache_entries', { libvirt: 'serves_stale' }), 1);
  t.equal(value(prom.samples, 'qemu_modwatch_stale_cache_entries', { libvirt: 'reprobes' }), 1);
});

t.test('label values are escaped; odd domain names do not break any format', async (t) => {
  const s = scenarios.find((x) => x.name.startsWith('running guests'))!.make(t);
  const { prom, promRaw, report } = checkAllFormats(s);
  t.ok(report.guests.some((g: any) => g.domain === 'db "1"\nx'));
  t.match(promRaw, /domain="db \\"1\\"\\nx"/);
  t.ok(
    prom.samples.some((x) => x.labels.domain === 'db "1"\nx'),
    'round-trips through the parser',
  );
});

t.test('--textfile writes DIR/qemu_modwatch.prom atomically, exit 0 once written', async (t) => {
  const s = sysroot(t);
  // Enough series that a torn write would be visible.
  for (let i = 0; i < 200; i++) addGuest(s, { pid: 10_000 + i, domain: `g${i}` });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-textfile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'qemu_modwatch.prom');
  s.addModule(MODDIR, 'hw-usb-host.so', { stamp: OTHER }); // CRITICAL, but the metrics were written
  const r = s.run(['--check', '--textfile', dir]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, '', 'nothing on stdout unless a format is asked for');
  const prom = parsePrometheus(fs.readFileSync(file, 'utf8'));
  t.equal(value(prom.samples, 'qemu_modwatch_check_status'), 2);
  t.equal(value(prom.samples, 'qemu_modwatch_guests'), 200);
  t.equal(fs.statSync(file).mode & 0o777, 0o644);

  // A reader polling while the writer writes again and again never sees a partial file.
  let reads = 0;
  let writing = true;
  const bad: string[] = [];
  const reader = (async () => {
    while (writing) {
      const text = fs.readFileSync(file, 'utf8');
      reads++;
      try {
        const p = parsePrometheus(text);
        if (value(p.samples, 'qemu_modwatch_guests') !== 200) bad.push('guests missing');
      } catch (e) {
        bad.push((e as Error).message);
      }
      await new Promise((res) => setImmediate(res));
    }
  })();
  for (let i = 0; i < 15; i++) {
    const code = await new Promise<number | null>((res) => {
      const c = spawn(EXE, ['--root', s.root, '--check', '--textfile', dir], {
        stdio: 'ignore',
        env: { PATH: process.env.PATH ?? '' },
      });
      c.on('close', res);
    });
    t.equal(code, 0);
  }
  writing = false;
  await reader;
  t.ok(reads > 15, `${reads} reads`);
  t.same(bad, [], 'every read saw a whole file');
  t.same(fs.readdirSync(dir), ['qemu_modwatch.prom'], 'no temp file left behind');

  const both = s.run(['--check', '--textfile', dir, '--format', 'nagios']);
  t.equal(both.code, 0);
  t.match(both.stdout, /^QEMU-MODWATCH CRITICAL - /, 'stdout as asked');
  const missing = s.run(['--check', '--textfile', path.join(dir, 'nope')]);
  t.equal(missing.code, 3);
  t.match(missing.stderr, /cannot write .*nope\/qemu_modwatch\.prom: ENOENT/);
});

t.test('a check that cannot check: UNKNOWN in every format', async (t) => {
  const s = sysroot(t);
  s.writeConfig('[policy]\non_change = sometimes\n');
  const n = s.run(['--check', '--format', 'nagios']);
  t.equal(n.code, 3);
  t.match(n.stdout, /^QEMU-MODWATCH UNKNOWN - .*on_change = sometimes/);
  t.ok(n.stdout.split('\n')[0]!.length < 120);
  const p = s.run(['--check', '--format', 'prometheus']);
  t.equal(p.code, 3);
  const prom = parsePrometheus(p.stdout);
  t.equal(value(prom.samples, 'qemu_modwatch_check_success'), 0);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-textfile-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  t.equal(s.run(['--check', '--textfile', dir]).code, 3);
  t.equal(
    value(
      parsePrometheus(fs.readFileSync(path.join(dir, 'qemu_modwatch.prom'), 'utf8')).samples,
      'qemu_modwatch_check_success',
    ),
    0,
    'the textfile says so too',
  );
  const u = s.run(['--check', '--format', 'nagios', '--bogus']);
  t.equal(u.code, 3);
  t.match(u.stdout, /^QEMU-MODWATCH UNKNOWN - /, 'even bad arguments');
  const j = s.run(['--check', '--json']);
  t.equal(j.code, 3);
  t.equal(j.stdout, '');
});

t.test(
  '--timeout ends a hung check with UNKNOWN',
  { skip: spawnSync('mkfifo', ['--version']).status !== 0 && 'no mkfifo' },
  async (t) => {
    const s = sysroot(t);
    addGuest(s, { pid: 777, domain: 'hung' });
    // Reading /proc/<pid>/cmdline of a process in D state blocks; a FIFO
    // with no writer blocks the same way.
    fs.rmSync(s.host('/proc/777/cmdline'));
    t.equal(spawnSync('mkfifo', [s.host('/proc/777/cmdline')]).status, 0);
    const started = Date.now();
    const r = s.run(['--check', '--format', 'nagios', '--timeout', '1.5']);
    const took = Date.now() - started;
    t.equal(r.code, 3);
    t.match(r.stdout, /^QEMU-MODWATCH UNKNOWN - timed out after 1\.5 s\n$/);
    t.ok(took >= 1400 && took < 10_000, `ended after ${took} ms`);
    const text = s.run(['--check', '--timeout', '1']);
    t.equal(text.code, 3);
    t.match(text.stderr, /^qemu-modwatch: timed out after 1 s\n$/);
    const refresh = s.run(['refresh', '--timeout', '1']);
    t.equal(refresh.code, 0, 'refresh never fails a package transaction');
    t.match(refresh.stderr, /refresh failed: timed out after 1 s/);
    // Without the FIFO the same timed check runs to the end.
    fs.rmSync(s.host('/proc/777/cmdline'));
    s.write('/proc/777/cmdline', `${EMULATOR}\0`);
    const ok = s.run(['--check', '--format', 'nagios', '--timeout', '30']);
    t.equal(ok.code, 0, ok.stderr);
    t.equal(parseNagios(ok.stdout).status, 'OK');
  },
);
