import { spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { readElfInfo } from '../../src/formats/elf';
import { domainXml, fakeSyslog, prepare, runHook } from '../fixtures/hooks';
import { EMULATOR, MODDIR, type Sysroot, sysroot } from '../fixtures/sysroot';
import { shq } from '../fixtures/shell';
import { cacheSnapshot, hookInNs, needsRoot, readOnly, stateOf, tinyTmpfs, WITHOUT_DAC } from '../reliability/helpers';

// The fault matrix. Every fault a production host can throw at the hook,
// each checked the same three ways:
//   1. the guest start is not blocked (exit 0; fail = closed refuses where that means something),
//   2. exactly one log line, and it names the problem,
//   3. nothing is lost: the state parses (or is byte-for-byte the old one
//      when the fault kept it from being written) and no cache entry that
//      should survive is gone.
// hook.test.ts has the first cases of several of these; this file extends
// them to the whole list.

const STATE_DIR = '/var/lib/qemu-modwatch';

interface Log {
  env: Record<string, string>;
  lines(): string[];
}

/** A host with a recorded baseline and a fresh cache entry for the emulator. */
function settled(t: Test, config?: string): { s: Sysroot; entry: string; log: Log } {
  const s = sysroot(t);
  if (config) s.writeConfig(config);
  t.equal(s.run(['accept']).code, 0, 'baseline accepted');
  const entry = s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
  return { s, entry, log: fakeSyslog(s) };
}

/** Assertion 2: one line, naming the problem, with nothing raw that a terminal or log viewer would act on. */
function oneLine(t: Test, log: Log, names: RegExp, label: string): string {
  const lines = log.lines();
  t.equal(lines.length, 1, `${label}: exactly one log line`);
  const line = lines[0] ?? '';
  t.match(line, names, `${label}: the line names the problem`);
  t.notMatch(line.trimEnd(), /[\x00-\x1f\x7f-\x9f]/, `${label}: no raw control characters`);
  return line;
}

function stateBytes(s: Sysroot): string {
  return fs.readFileSync(s.statePath(), 'latin1');
}

t.test('state file: corrupt, truncated, empty, wrong schema, 100 MB of garbage, a directory', async (t) => {
  const garbage = crypto.randomBytes(1024 * 1024);
  const cases: [string, (s: Sysroot) => void, RegExp][] = [
    [
      'corrupt',
      (s) => fs.writeFileSync(s.statePath(), Buffer.from([0x7b, 0x00, 0xff, 0xfe, 0x22, 0x0a, 0x1b])),
      /is not valid JSON \(truncated or damaged\)/,
    ],
    [
      'truncated',
      (s) => fs.writeFileSync(s.statePath(), stateBytes(s).slice(0, 200), 'latin1'),
      /is not valid JSON \(truncated or damaged\)/,
    ],
    ['empty', (s) => fs.writeFileSync(s.statePath(), ''), /is not valid JSON \(empty\)/],
    [
      'wrong schema version',
      (s) => fs.writeFileSync(s.statePath(), stateBytes(s).replace('"schema":1', '"schema":2'), 'latin1'),
      /unknown schema version 2/,
    ],
    [
      '100 MB of garbage',
      (s) => {
        const fd = fs.openSync(s.statePath(), 'w');
        for (let i = 0; i < 100; i++) fs.writeSync(fd, garbage);
        fs.closeSync(fd);
      },
      /is larger than 64 MiB/,
    ],
    [
      'a directory',
      (s) => {
        fs.rmSync(s.statePath());
        fs.mkdirSync(s.statePath());
      },
      /is not a regular file/,
    ],
  ];
  for (const [label, damage, reason] of cases) {
    for (const fail of ['open', 'closed']) {
      const { s, log } = settled(t, `[policy]\nfail = ${fail}\n`);
      damage(s);
      const before = fs.statSync(s.statePath());
      const damaged = before.isFile()
        ? crypto.createHash('sha256').update(fs.readFileSync(s.statePath())).digest('hex')
        : 'dir';
      const cache = cacheSnapshot(s);
      const r = prepare(s, 'g', EMULATOR, log.env);
      const what = `${label} (fail = ${fail})`;
      t.equal(r.code, 0, `${what}: not blocking (a damaged state is recovered from, not a fault)`);
      t.equal(r.stdout, '');
      oneLine(
        t,
        log,
        new RegExp(`${reason.source}, kept as ${STATE_DIR}/state\\.json\\.corrupt; recording a new baseline`),
        what,
      );
      const st = stateOf(s);
      t.equal(typeof st, 'object', `${what}: a valid state was recorded (${typeof st === 'string' ? st : 'ok'})`);
      const kept = s.host(`${STATE_DIR}/state.json.corrupt`);
      const keptId = fs.statSync(kept).isFile()
        ? crypto.createHash('sha256').update(fs.readFileSync(kept)).digest('hex')
        : 'dir';
      t.equal(keptId, damaged, `${what}: the damaged state is kept for a bug report`);
      t.same(cacheSnapshot(s), cache, `${what}: no cache entry deleted for nothing`);
      t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
      t.equal(log.lines().length, 1, `${what}: the next start is quiet`);
    }
  }
});

t.test('state directory read-only (a read-only bind mount)', { skip: needsRoot }, async (t) => {
  for (const change of [true, false]) {
    for (const fail of ['open', 'closed']) {
      const { s, log } = settled(t, `[policy]\nfail = ${fail}\n`);
      if (change) s.addModule(MODDIR, 'hw-usb-host.so');
      const state = stateBytes(s);
      const cache = cacheSnapshot(s);
      const r = hookInNs(s, 'qemu', ['g', 'prepare', 'begin', '-'], {
        setup: readOnly(s.host(STATE_DIR)),
        input: domainXml('g'),
        env: log.env,
      });
      const what = `${change ? 'a module added' : 'nothing changed'}, fail = ${fail}`;
      t.equal(r.stdout, '');
      if (fail === 'open') {
        t.equal(r.code, 0, `${what}: not blocking`);
        oneLine(
          t,
          log,
          new RegExp(
            String.raw`-p daemon\.err -- hook qemu prepare for domain 'g' failed: EROFS: read-only file ` +
              String.raw`system, .*; not blocking \(fail = open\)`,
          ),
          what,
        );
      } else {
        t.equal(r.code, 1, `${what}: refused`);
        t.match(r.stderr, /^qemu-modwatch: EROFS: read-only file system, [^\n]*\n$/, `${what}: one line for the user`);
        oneLine(t, log, /EROFS.*refusing \(fail = closed\)/, what);
      }
      t.equal(stateBytes(s), state, `${what}: state untouched`);
      t.same(cacheSnapshot(s), cache, `${what}: cache untouched`);
    }
  }
});

t.test('state directory full (64 KiB tmpfs): ENOSPC mid-write keeps the old state', { skip: needsRoot }, async (t) => {
  for (const fail of ['open', 'closed']) {
    const { s, entry, log } = settled(t, `[policy]\nfail = ${fail}\n`);
    // 400 new modules make the new state far larger than the 64 KiB there is.
    for (let i = 0; i < 400; i++) s.addModule(MODDIR, `hw-pad-${String(i).padStart(3, '0')}.so`);
    const state = stateBytes(s);
    const dir = s.host(STATE_DIR);
    const seen = s.host('/tmp/seen-state');
    const listing = s.host('/tmp/seen-listing');
    const r = hookInNs(s, 'qemu', ['g', 'prepare', 'begin', '-'], {
      setup: tinyTmpfs(s, dir, '64k'),
      after: `cat ${shq(dir)}/state.json > ${shq(seen)}; ls -A ${shq(dir)} > ${shq(listing)}; df ${shq(dir)} >&2`,
      input: domainXml('g'),
      env: log.env,
    });
    const what = `fail = ${fail}`;
    t.equal(r.stdout, '');
    const line = oneLine(
      t,
      log,
      new RegExp(
        String.raw`QEMU modules changed \(added hw-pad-000\.so, .* and 380 more\) before prepare of ` +
          String.raw`domain 'g'.*: deleted 1 capabilities cache entries, nudged .*; errors: cannot ` +
          String.raw`record the baseline in \/var\/lib\/qemu-modwatch\/state\.json: ENOSPC`,
      ),
      what,
    );
    t.match(line, /-p daemon\.err /, `${what}: at error priority`);
    t.ok(line.length < 2000, `${what}: the line stays short (${line.length} characters for 400 modules)`);
    if (fail === 'open') {
      t.equal(r.code, 0, `${what}: not blocking`);
    } else {
      t.equal(r.code, 1, `${what}: refused`);
      t.match(r.stderr, /ENOSPC \(fail = closed\)/);
    }
    t.equal(fs.readFileSync(seen, 'latin1'), state, `${what}: the old state.json is intact on the full file system`);
    t.same(
      fs
        .readFileSync(listing, 'utf8')
        .split('\n')
        .filter((n) => n.endsWith('.tmp')),
      [],
      `${what}: no temp file left behind`,
    );
    t.notOk(
      s.cacheFiles().includes(entry),
      `${what}: the stale entry was still deleted: the start gets fresh capabilities`,
    );
    // With room again, the change is recorded: nothing was lost.
    t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
    t.match(
      log.lines()[1] ?? '',
      /added hw-pad-000\.so.*: deleted 0 capabilities cache entries/,
      `${what}: recorded on the next run`,
    );
    t.equal(s.json().report.changes.length, 0, `${what}: baseline now current`);
  }
});

t.test(
  'module directory unreadable: EACCES for root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv)',
  { skip: needsRoot },
  async (t) => {
    const { s, entry, log } = settled(t, '[policy]\nfail = closed\n');
    const dir = s.host(MODDIR);
    // The change hidden in the directory while it cannot be read.
    s.addModule(MODDIR, 'hw-usb-host.so');
    fs.chownSync(dir, 4321, 4321);
    fs.chmodSync(dir, 0o700);
    const state = stateBytes(s);
    const cache = cacheSnapshot(s);
    const r = hookInNs(s, 'qemu', ['g', 'prepare', 'begin', '-'], {
      wrap: WITHOUT_DAC,
      input: domainXml('g'),
      env: log.env,
    });
    t.equal(r.code, 0, 'not blocking, even with fail = closed: nothing of ours failed');
    t.equal(r.stdout, '');
    oneLine(
      t,
      log,
      new RegExp(
        `-p daemon\\.warning -- nothing changed that could be seen; problems: cannot list ${MODDIR}: ` +
          `EACCES, its modules were not checked`,
      ),
      'unreadable',
    );
    t.equal(stateBytes(s), state, 'the baseline still holds what was known of the directory');
    t.same(cacheSnapshot(s), cache);

    // Something else changes meanwhile and the baseline is rewritten: what was known of the unreadable
    // directory must survive it.
    s.addModule('/usr/lib64/qemu', 'ui-gtk.so');
    const r2 = hookInNs(s, 'qemu', ['g', 'prepare', 'begin', '-'], {
      wrap: WITHOUT_DAC,
      input: domainXml('g'),
      env: log.env,
    });
    t.equal(r2.code, 0);
    t.match(
      log.lines()[1] ?? '',
      new RegExp(`added ui-gtk\\.so.*; problems: cannot list ${MODDIR}: EACCES`),
      'the change elsewhere acted on, the problem named',
    );
    t.equal(log.lines().length, 2, 'one line for that run');
    s.addCacheEntry(EMULATOR, { ageSeconds: -5 });

    fs.chownSync(dir, 0, 0);
    fs.chmodSync(dir, 0o755);
    t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
    t.match(
      log.lines()[2] ?? '',
      /QEMU modules changed \(added hw-usb-host\.so\).*deleted 1 capabilities cache entries/,
      'readable again: the change made while it was unreadable is found',
    );
    t.notOk(s.cacheFiles().includes(entry));
  },
);

t.test('a module deleted or replaced between readdir and stat, while hooks run', { skip: needsRoot }, async (t) => {
  const { s, log } = settled(t);
  const dir = s.host(MODDIR);
  const templates = s.mkdir('/srv/templates');
  for (let i = 0; i < 4; i++) s.addModule('/srv/templates', `t${i}.so`);
  // Every way a file changes under a scan: rename over, delete, recreate, rewrite in place, truncate.
  const loop = `
    i=0
    while :; do
      i=$((i + 1)); t=${shq(templates)}/t$((i % 4)).so
      cp "$t" ${shq(dir)}/.new && mv ${shq(dir)}/.new ${shq(dir)}/hw-race-renamed.so
      rm -f ${shq(dir)}/hw-race-deleted.so; cp "$t" ${shq(dir)}/hw-race-deleted.so
      cat "$t" > ${shq(dir)}/hw-race-inplace.so
      : > ${shq(dir)}/hw-race-truncated.so; cat "$t" >> ${shq(dir)}/hw-race-truncated.so
      if [ $((i % 2)) = 0 ]; then rm -f ${shq(dir)}/hw-race-flicker.so; else cp "$t" ${shq(dir)}/hw-race-flicker.so; fi
    done`;
  const mutator = spawn('sh', ['-c', loop], { stdio: 'ignore' });
  const runs = 40;
  const bad: string[] = [];
  let maxLines = 0;
  try {
    for (let i = 0; i < runs; i++) {
      const before = log.lines().length;
      const r = prepare(s, `g${i}`, EMULATOR, log.env);
      if (r.code !== 0 || r.stdout !== '') bad.push(`run ${i}: exit ${r.code} ${r.stdout}${r.stderr}`);
      maxLines = Math.max(maxLines, log.lines().length - before);
      const st = stateOf(s);
      if (typeof st === 'string') bad.push(`run ${i}: state ${st}`);
    }
  } finally {
    mutator.kill('SIGKILL');
    await new Promise((r) => mutator.once('close', r));
  }
  t.same(bad, [], `${runs} hooks during the races: all exit 0, print nothing, leave a valid state`);
  t.ok(maxLines <= 1, `at most one log line per run (${maxLines})`);
  t.notMatch(log.lines().join('\n'), /internal error/, 'no internal error');
  t.comment(`${log.lines().length} of ${runs} runs saw a change`);

  fs.rmSync(path.join(dir, '.new'), { force: true });
  t.equal(prepare(s, 'final', EMULATOR, log.env).code, 0);
  const onDisk: Record<string, string | null> = {};
  for (const name of fs
    .readdirSync(dir)
    .filter((n) => n.endsWith('.so'))
    .sort()) {
    const fd = fs.openSync(path.join(dir, name), 'r');
    try {
      onDisk[name] = readElfInfo(fd, fs.fstatSync(fd).size).buildId;
    } catch {
      // The mutator was killed half-way through a write.
      onDisk[name] = 'unreadable';
    } finally {
      fs.closeSync(fd);
    }
  }
  const st = stateOf(s);
  const modules =
    typeof st === 'string'
      ? []
      : (st.baseline.dirs.find((d) => d.path === MODDIR)!.modules as {
          name: string;
          buildId: string | null;
          error: string | null;
        }[]);
  const recorded = Object.fromEntries(modules.map((m) => [m.name, m.error ? 'unreadable' : m.buildId]));
  t.same(recorded, onDisk, 'once quiet, the baseline is exactly what is on disk (names and build-ids)');
  const settledCount = log.lines().length;
  t.equal(prepare(s, 'again', EMULATOR, log.env).code, 0);
  t.equal(log.lines().length, settledCount, 'and the next run sees nothing to do');
});

t.test('symlink loops and a symlinked module directory', async (t) => {
  {
    const { s, entry, log } = settled(t);
    fs.symlinkSync('hw-loop.so', s.host(`${MODDIR}/hw-loop.so`));
    fs.symlinkSync('ui-b.so', s.host(`${MODDIR}/ui-a.so`));
    fs.symlinkSync('ui-a.so', s.host(`${MODDIR}/ui-b.so`));
    const r = prepare(s, 'g', EMULATOR, log.env);
    t.equal(r.code, 0, 'loops: not blocking');
    oneLine(
      t,
      log,
      new RegExp(
        String.raw`added hw-loop\.so, ui-a\.so, ui-b\.so.*problems: .*\/hw-loop\.so: ELOOP; ` +
          String.raw`.*\/ui-a\.so: ELOOP; .*\/ui-b\.so: ELOOP`,
      ),
      'loops',
    );
    t.notOk(s.cacheFiles().includes(entry), 'QEMU would find these names: invalidated');
    t.equal(typeof stateOf(s), 'object', 'state valid');
    t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
    t.equal(log.lines().length, 1, 'loops are stable: the next run is quiet');
  }
  {
    // The module directory is a symlink (relative, so it stays inside the sysroot).
    const s = sysroot(t);
    const real = s.mkdir('/opt/qemu-modules');
    for (const name of fs.readdirSync(s.host(MODDIR)))
      fs.renameSync(s.host(`${MODDIR}/${name}`), path.join(real, name));
    fs.rmdirSync(s.host(MODDIR));
    fs.symlinkSync('../../../opt/qemu-modules', s.host(MODDIR));
    t.equal(s.run(['accept']).code, 0);
    const entry = s.addCacheEntry(EMULATOR, { ageSeconds: -5 });
    const log = fakeSyslog(s);
    s.addModule('/opt/qemu-modules', 'hw-usb-host.so');
    const r = prepare(s, 'g', EMULATOR, log.env);
    t.equal(r.code, 0, 'symlinked directory: not blocking');
    oneLine(
      t,
      log,
      new RegExp(`QEMU modules changed \\(added hw-usb-host\\.so\\).*deleted 1 capabilities cache entries`),
      'symlinked directory',
    );
    t.notOk(s.cacheFiles().includes(entry), 'a change behind the symlink is acted on');
    t.ok(fs.lstatSync(s.host(MODDIR)).isSymbolicLink(), 'the symlink itself is left as it is');
  }
});

t.test('file names with control characters are logged escaped, in changes and in problems', async (t) => {
  const { s, entry, log } = settled(t);
  const evil = 'hw-\x1b[31mred\nfake line\u202e.so';
  s.addModule(MODDIR, evil);
  fs.symlinkSync('loop\r.so', s.host(`${MODDIR}/loop\r.so`));
  t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0);
  oneLine(
    t,
    log,
    /added hw-\\x1b\[31mred\\x0afake line\\u202e\.so, loop\\x0d\.so.*problems: .*loop\\x0d\.so: ELOOP/,
    'escaped names',
  );
  t.notOk(s.cacheFiles().includes(entry));
});

t.test(
  'cache directory missing, a symlink, or holding a symlink, FIFO or device named like an entry',
  { skip: needsRoot },
  async (t) => {
    {
      const { s, log } = settled(t);
      fs.rmSync(s.cacheDir(), { recursive: true });
      s.addModule(MODDIR, 'hw-usb-host.so');
      t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0, 'missing: not blocking');
      oneLine(
        t,
        log,
        /added hw-usb-host\.so.*: deleted 0 capabilities cache entries/,
        'missing (libvirt has not probed yet: not a problem)',
      );
      t.notOk(fs.existsSync(s.cacheDir()), 'not created by us');
      t.equal(s.json().report.changes.length, 0, 'recorded');
    }
    {
      const { s, log } = settled(t);
      const real = s.mkdir('/srv/realcache');
      fs.renameSync(path.join(s.cacheDir(), s.cacheFiles()[0]!), path.join(real, 'a'.repeat(64) + '.xml'));
      fs.rmdirSync(s.cacheDir());
      fs.symlinkSync(real, s.cacheDir());
      s.addModule(MODDIR, 'hw-usb-host.so');
      t.equal(prepare(s, 'g', EMULATOR, log.env).code, 0, 'a symlink: not blocking');
      oneLine(
        t,
        log,
        new RegExp(
          String.raw`deleted 0 capabilities cache entries.*; problems: ` +
            String.raw`\/var\/cache\/libvirt\/qemu\/capabilities is a symlink; it is not read or changed`,
        ),
        'cache dir a symlink',
      );
      t.same(fs.readdirSync(real), ['a'.repeat(64) + '.xml'], 'what it points at is untouched');
    }
    {
      const { s, entry, log } = settled(t);
      const outside = s.write(
        '/srv/precious.xml',
        `<qemuCaps><emulator>${EMULATOR}</emulator><qemuctime>1</qemuctime></qemuCaps>`,
      );
      const old = new Date('2001-01-01');
      fs.utimesSync(outside, old, old);
      const precious = fs.readFileSync(outside);
      const link = 'c'.repeat(64) + '.xml';
      fs.symlinkSync(outside, path.join(s.cacheDir(), link));
      const dev = 'd'.repeat(64) + '.xml';
      const fifo = 'e'.repeat(64) + '.xml';
      const mk = (args: string[]) => t.equal(spawnSync(args[0]!, args.slice(1)).status, 0, args.join(' '));
      mk(['mknod', path.join(s.cacheDir(), dev), 'c', '1', '3']);
      mk(['mkfifo', path.join(s.cacheDir(), fifo)]);
      const opened = s.host('/tmp/fifo-opened');
      const writer = spawn('sh', ['-c', `echo x > ${shq(path.join(s.cacheDir(), fifo))} && touch ${shq(opened)}`], {
        stdio: 'ignore',
      });
      s.addModule(MODDIR, 'hw-usb-host.so');
      const r = prepare(s, 'g', EMULATOR, log.env);
      writer.kill('SIGKILL');
      await new Promise((res) => writer.once('close', res));
      t.equal(r.code, 0, 'planted entries: not blocking');
      oneLine(
        t,
        log,
        new RegExp(
          `deleted 1 capabilities cache entries.*problems: cache entry c{64}\\.xml: a symlink, not a cache ` +
            `entry; left alone; cache entry d{64}\\.xml: not a regular file; left alone; cache entry ` +
            `e{64}\\.xml: not a regular file; left alone`,
        ),
        'planted entries',
      );
      t.notOk(s.cacheFiles().includes(entry), 'the real stale entry is deleted');
      t.ok(fs.lstatSync(path.join(s.cacheDir(), link)).isSymbolicLink(), 'the symlink survives');
      t.same(fs.readFileSync(outside), precious, 'and so does the file it points at');
      t.ok(fs.lstatSync(path.join(s.cacheDir(), dev)).isCharacterDevice(), 'the device node survives');
      t.ok(fs.lstatSync(path.join(s.cacheDir(), fifo)).isFIFO(), 'the FIFO survives');
      t.notOk(fs.existsSync(opened), 'the FIFO was never opened');
    }
  },
);

t.test(
  "a FIFO or device node named *.so, or as the domain's emulator, is never opened",
  { skip: needsRoot },
  async (t) => {
    const { s, entry, log } = settled(t);
    const fifo = s.host(`${MODDIR}/hw-fifo.so`);
    const evilEmulator = path.join(s.mkdir('/srv'), 'qemu-fifo');
    t.equal(spawnSync('mkfifo', [fifo, evilEmulator]).status, 0);
    t.equal(spawnSync('mknod', [s.host(`${MODDIR}/hw-null.so`), 'c', '1', '3']).status, 0);
    t.equal(spawnSync('mknod', [s.host('/srv/qemu-dev'), 'c', '1', '3']).status, 0);
    const opened = s.host('/tmp/opened');
    // A writer blocks until something opens the FIFO for reading: the marker says whether anything did.
    const writers = [fifo, evilEmulator].map((f) =>
      spawn('sh', ['-c', `echo x > ${shq(f)} && echo ${shq(path.basename(f))} >> ${shq(opened)}`], { stdio: 'ignore' }),
    );
    const start = performance.now();
    const r = prepare(s, 'g', '/srv/qemu-fifo', log.env);
    const r2 = runHook(s, 'qemu', ['h', 'prepare', 'begin', '-'], {
      input: domainXml('h', '/srv/qemu-dev'),
      env: log.env,
    });
    const ms = performance.now() - start;
    for (const w of writers) w.kill('SIGKILL');
    await Promise.all(writers.map((w) => new Promise((res) => w.once('close', res))));
    t.equal(r.code, 0, 'not blocking');
    t.equal(r2.code, 0, 'a device as emulator: not blocking');
    t.ok(ms < 20_000, `no hang (${ms.toFixed(0)} ms for both)`);
    oneLine(
      t,
      log,
      new RegExp(
        String.raw`added hw-fifo\.so, hw-null\.so.*problems: .*\/hw-fifo\.so: not a regular file; ` +
          String.raw`.*\/hw-null\.so: not a regular file`,
      ),
      'FIFO and device',
    );
    t.notOk(
      fs.existsSync(opened),
      `nothing opened the FIFOs (${fs.existsSync(opened) ? fs.readFileSync(opened, 'utf8') : ''})`,
    );
    t.notOk(s.cacheFiles().includes(entry), 'QEMU would find these names: invalidated');
    t.equal(typeof stateOf(s), 'object', 'state valid');
  },
);

t.test("the domain's emulator is read only when it is an executable regular file", async (t) => {
  const { s, log } = settled(t);
  // atime tells whether a file was read: set well in the past, a read moves it (relatime).
  const old = new Date(Math.floor(Date.now() / 1000 - 3 * 86_400) * 1000);
  const secret = s.write('/srv/not-an-emulator', '\x7fELF and then secrets', 0o600);
  const control = s.write('/srv/qemu-control', '\x7fELF a real emulator would be here', 0o755);
  for (const f of [secret, control]) fs.utimesSync(f, old, old);
  t.equal(prepare(s, 'g', '/srv/qemu-control', log.env).code, 0);
  const untouched = (f: string) => Math.abs(fs.statSync(f).atimeMs - old.getTime()) < 1;
  if (untouched(control)) {
    t.comment('this file system does not update atime on read: nothing to observe');
    return;
  }
  const r = prepare(s, 'h', '/srv/not-an-emulator', log.env);
  t.equal(r.code, 0, 'not blocking');
  t.ok(untouched(secret), 'a non-executable file named as emulator was not read');
  t.same(log.lines(), [], 'nothing to say: libvirt itself refuses such an emulator before the hook runs');
});

t.test('stdin: 100 MiB, external entities, closed early, closed before the start', async (t) => {
  const partial = domainXml('vm').slice(0, 120);
  const cases: { label: string; input?: string | Buffer; wrap?: string[]; why: RegExp }[] = [
    {
      label: '100 MiB',
      input: Buffer.concat([Buffer.from("<domain type='kvm'><name>"), Buffer.alloc(100 * 1024 * 1024, 0x61)]),
      why: /larger than 16 MiB/,
    },
    {
      label: 'external entity',
      input:
        `<?xml version="1.0"?><!DOCTYPE domain [<!ENTITY x SYSTEM ` +
        `"file:///etc/shadow">]><domain><name>&x;</name></domain>`,
      why: /DOCTYPE; entities are not expanded/,
    },
    { label: 'billion laughs', input: billionLaughs(), why: /DOCTYPE; entities are not expanded/ },
    { label: 'closed early (half a document)', input: partial, why: /malformed domain XML/ },
    {
      label: 'closed before the start (fd 0 closed)',
      wrap: ['sh', '-c', 'exec "$@" <&-', 'sh'],
      why: /no domain XML on stdin/,
    },
  ];
  for (const c of cases) {
    if (c.wrap && needsRoot) continue;
    for (const fail of ['open', 'closed']) {
      const { s, entry, log } = settled(t, `[policy]\nfail = ${fail}\n`);
      s.addModule(MODDIR, 'hw-usb-host.so');
      const state = stateBytes(s);
      const cache = cacheSnapshot(s);
      const start = performance.now();
      const r = c.wrap
        ? hookInNs(s, 'qemu', ['vm', 'prepare', 'begin', '-'], { wrap: c.wrap, env: log.env })
        : runHook(s, 'qemu', ['vm', 'prepare', 'begin', '-'], { input: c.input, env: log.env });
      const ms = performance.now() - start;
      const what = `${c.label}, fail = ${fail}`;
      t.equal(r.code, fail === 'open' ? 0 : 1, `${what}: ${fail === 'open' ? 'not blocking' : 'refused'}`);
      t.equal(r.stdout, '');
      oneLine(
        t,
        log,
        new RegExp(
          `-p daemon\\.err -- hook qemu prepare for domain 'vm' failed: .*${c.why.source}.*; ` +
            `${fail === 'open' ? 'not blocking' : 'refusing'}`,
        ),
        what,
      );
      t.ok(ms < 15_000, `${what}: bounded time (${ms.toFixed(0)} ms)`);
      t.equal(stateBytes(s), state, `${what}: state untouched`);
      t.same(cacheSnapshot(s), cache, `${what}: nothing done on bad input`);
      t.ok(s.cacheFiles().includes(entry));
    }
  }
});

t.test('argv: missing, extra, and bytes that are not UTF-8', { skip: needsRoot }, async (t) => {
  for (const [driver, args] of [
    ['qemu', []],
    ['qemu', ['vm', 'prepare']],
    ['daemon', ['-']],
  ] as const) {
    const { s, log } = settled(t);
    s.addModule(MODDIR, 'hw-usb-host.so');
    const state = stateBytes(s);
    const cache = cacheSnapshot(s);
    const r = runHook(s, driver, [...args], { input: domainXml('vm'), env: log.env });
    const what = `${driver} with ${args.length} arguments`;
    t.equal(r.code, 0, `${what}: not blocking`);
    oneLine(
      t,
      log,
      new RegExp(
        `-p daemon\\.notice -- hook ${driver} called with ${args.length} of libvirt's 4 arguments .*; ignored`,
      ),
      what,
    );
    t.equal(stateBytes(s), state);
    t.same(cacheSnapshot(s), cache);
  }
  {
    const { s, entry, log } = settled(t);
    s.addModule(MODDIR, 'hw-usb-host.so');
    const r = runHook(s, 'qemu', ['vm', 'prepare', 'begin', '-', 'extra', 'more'], {
      input: domainXml('vm'),
      env: log.env,
    });
    t.equal(r.code, 0, 'extra arguments: acted on as usual (a later libvirt may add some)');
    oneLine(t, log, /added hw-usb-host\.so\) before prepare of domain 'vm'/, 'extra arguments');
    t.notOk(s.cacheFiles().includes(entry));
  }
  {
    const { s, entry, log } = settled(t);
    s.addModule(MODDIR, 'hw-usb-host.so');
    // The domain name as raw bytes: 0xff 0xfe (not UTF-8), ESC [31m, a newline, U+202E (right-to-left override).
    const raw = `"$(printf 'evil\\377\\376\\033[31m\\nname\\342\\200\\256')" prepare begin -`;
    const r = hookInNs(s, 'qemu', [], { rawArgs: raw, input: domainXml('x'), env: log.env });
    t.equal(r.code, 0, 'binary argv: not blocking');
    const line = oneLine(
      t,
      log,
      /before prepare of domain 'evil\ufffd\ufffd\\x1b\[31m\\x0aname\\u202e'/,
      'binary argv',
    );
    t.notMatch(line, /\u202e/, 'no raw bidirectional override');
    t.notOk(s.cacheFiles().includes(entry));
  }
});

t.test('config: unreadable, unknown keys, writable by others, not a regular file', { skip: needsRoot }, async (t) => {
  const cases: { label: string; make: (s: Sysroot) => void; wrap?: string[]; why: RegExp }[] = [
    {
      label: 'unreadable (mode 0000, root without CAP_DAC_OVERRIDE)',
      make: (s) => fs.chmodSync(s.writeConfig('[policy]\nfail = closed\n'), 0o000),
      wrap: WITHOUT_DAC,
      why: /qemu-modwatch\.conf: cannot read config: EACCES/,
    },
    {
      label: 'unknown section',
      make: (s) => s.writeConfig('[polic]\nfail = closed\n'),
      why: /unknown section or key 'polic'/,
    },
    {
      label: 'unknown key',
      make: (s) => s.writeConfig('[policy]\nfail = closed\nfial = open\n'),
      why: /unknown key \[policy\] fial/,
    },
    {
      label: 'world-writable',
      make: (s) => s.writeConfig('[policy]\nfail = closed\n', 0o666),
      why: /refusing a config that others can change \(owner uid 0, mode 0666\)/,
    },
    {
      label: 'owned by another user',
      make: (s) => fs.chownSync(s.writeConfig('[policy]\nfail = closed\n'), 4321, 0),
      why: /refusing a config that others can change \(owner uid 4321, mode 0644\)/,
    },
    {
      label: "group-writable, not root's group",
      make: (s) => fs.chownSync(s.writeConfig('[policy]\nfail = closed\n', 0o664), 0, 4321),
      why: /refusing a config that group 4321 can change/,
    },
    {
      label: 'a symlink to a world-writable file',
      make: (s) => {
        s.write('/srv/anyone.conf', '[policy]\nfail = closed\n', 0o666);
        s.mkdir('/etc');
        // As an image has it: the target is a path of the image.
        fs.symlinkSync('/srv/anyone.conf', s.host('/etc/qemu-modwatch.conf'));
      },
      why: /refusing a config that others can change/,
    },
    {
      label: 'a FIFO',
      make: (s) => {
        fs.mkdirSync(s.host('/etc'), { recursive: true });
        spawnSync('mkfifo', [s.host('/etc/qemu-modwatch.conf')]);
      },
      why: /config is not a regular file/,
    },
  ];
  for (const c of cases) {
    const { s, entry, log } = settled(t);
    c.make(s);
    s.addModule(MODDIR, 'hw-usb-host.so');
    const state = stateBytes(s);
    const cache = cacheSnapshot(s);
    const r = hookInNs(s, 'qemu', ['vm', 'prepare', 'begin', '-'], {
      wrap: c.wrap,
      input: domainXml('vm'),
      env: log.env,
    });
    t.equal(r.code, 0, `${c.label}: not blocking (its own fail = closed is not obeyed)`);
    t.equal(r.stdout, '');
    oneLine(
      t,
      log,
      new RegExp(
        `-p daemon\\.err -- hook qemu prepare for domain 'vm' failed: .*${c.why.source}.*; not blocking ` +
          `\\(fail = open\\)`,
      ),
      c.label,
    );
    t.equal(stateBytes(s), state, `${c.label}: state untouched`);
    t.same(cacheSnapshot(s), cache, `${c.label}: a config that is not trusted gives no orders`);
    t.ok(s.cacheFiles().includes(entry));
  }
});

/** The classic: ten levels of ten references each, a billion "lol"s if anything expanded it. */
function billionLaughs(): string {
  const decls = ['<!ENTITY l0 "lol">'];
  for (let i = 1; i <= 9; i++) decls.push(`<!ENTITY l${i} "${`&l${i - 1};`.repeat(10)}">`);
  return `<?xml version="1.0"?><!DOCTYPE domain [${decls.join('')}]><domain><name>&l9;</name></domain>`;
}
