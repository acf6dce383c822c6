import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import {
  DEFAULT_MODULE_DIRS,
  EMULATOR_DIRS,
  EXTRA_EMULATORS,
  SYSTEM_CACHE_DIR,
  SYSTEM_STATE_DIR,
  UPGRADE_PARENT,
} from '../../src/host/paths';
import { shq } from '../fixtures/shell';
import { cannotRun, OverlayHost } from './overlay-host';
import { TEXTFILE_DIR } from './package-kit';

// The package-manager drop-ins in hooks/: each parsed the way its consumer
// parses it (systemd, libdnf5's actions plugin, pacman, apt), each must run
// `qemu-modwatch refresh`, and each command, run as its consumer runs it,
// must succeed with qemu-modwatch missing and with a qemu-modwatch that
// fails, and print nothing where its consumer reads stdout.

const top = path.resolve(__dirname, '../..');
const read = (rel: string) => fs.readFileSync(path.join(top, 'hooks', rel), 'utf8');
const SBIN = '/usr/sbin/qemu-modwatch';

/** systemd's unit syntax: [Section] and Key=Value lines; # and ; comments. */
function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] | null = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const sec = /^\[([A-Za-z]+)\]$/.exec(line);
    if (sec) {
      current = [];
      sections.set(sec[1]!, current);
      return;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`line ${i + 1}: not Key=Value in a section: ${raw}`);
    current.push([kv[1]!, kv[2]!]);
  });
  return sections;
}

const all = (s: [string, string][] | undefined, key: string) => (s ?? []).filter(([k]) => k === key).map(([, v]) => v);

t.test('systemd units', async (t) => {
  const pathUnit = parseUnit(read('systemd/qemu-modwatch.path'));
  const service = parseUnit(read('systemd/qemu-modwatch.service'));
  t.same([...pathUnit.keys()], ['Unit', 'Path', 'Install']);
  t.same([...service.keys()], ['Unit', 'Service']);

  const watched = all(pathUnit.get('Path'), 'PathChanged');
  const wanted = [
    ...DEFAULT_MODULE_DIRS,
    '/usr/lib/x86_64-linux-gnu/qemu',
    '/usr/lib/aarch64-linux-gnu/qemu',
    '/usr/local/lib/x86_64-linux-gnu/qemu',
    fs.realpathSync(path.dirname(UPGRADE_PARENT)) + '/' + path.basename(UPGRADE_PARENT),
  ];
  for (const d of wanted) t.ok(watched.includes(d), `PathChanged=${d}`);
  for (const d of watched)
    t.ok(path.isAbsolute(d) && !d.startsWith('/var/run/'), `${d}: absolute, no /var/run symlink`);
  t.same(all(pathUnit.get('Path'), 'Unit'), ['qemu-modwatch.service']);
  t.same(all(pathUnit.get('Install'), 'WantedBy'), ['paths.target'], 'enabled with the other path units');

  const svc = service.get('Service');
  t.same(all(svc, 'Type'), ['oneshot']);
  t.same(all(svc, 'ExecStart'), [`${SBIN} refresh`], 'runs qemu-modwatch refresh');
  t.same(
    all(service.get('Unit'), 'ConditionFileIsExecutable'),
    [SBIN],
    'skipped, not failed, when qemu-modwatch is gone',
  );
  t.same(all(svc, 'ProtectSystem'), ['strict']);
  t.same(
    all(svc, 'StateDirectory'),
    [path.basename(SYSTEM_STATE_DIR)],
    `StateDirectory= makes ${SYSTEM_STATE_DIR} writable`,
  );
  t.equal(SYSTEM_STATE_DIR, '/var/lib/qemu-modwatch');
  const rw = all(svc, 'ReadWritePaths').flatMap((v) => v.split(/\s+/));
  const writable = (p: string) => rw.some((r) => p === r.replace(/^-/, '') || p.startsWith(`${r.replace(/^-/, '')}/`));
  t.ok(writable(SYSTEM_CACHE_DIR), `${SYSTEM_CACHE_DIR} writable: stale entries are deleted`);
  for (const d of [...EMULATOR_DIRS, ...EXTRA_EMULATORS.map((e) => path.dirname(e))]) {
    t.ok(writable(d), `${d} writable: the chmod nudge of an emulator is a write to its inode`);
  }
  for (const d of watched.filter((w) => !w.startsWith('/run/'))) {
    t.ok(writable(d), `${d} writable: nudge = moddir-mtime may set its mtime`);
  }
  for (const r of rw) t.match(r, /^-\//, `${r}: optional ("-"), so a missing directory does not fail the unit`);
  t.same(all(svc, 'MemoryDenyWriteExecute'), [], "no MemoryDenyWriteExecute: node's JIT needs it");
  t.same(all(svc, 'RestrictSUIDSGID'), [], 'no RestrictSUIDSGID: the chmod nudge keeps set-id bits');
  const caps = all(svc, 'CapabilityBoundingSet').join(' ').split(/\s+/);
  for (const c of ['CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_SYS_PTRACE']) t.ok(caps.includes(c), `keeps ${c}`);

  const preset = read('systemd/50-qemu-modwatch.preset')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'));
  t.same(preset, ['enable qemu-modwatch.path'], 'the preset enables the path unit (the service is started by it)');
});

t.test('the textfile timer and its service', async (t) => {
  const service = parseUnit(read('systemd/qemu-modwatch-textfile.service'));
  const timer = parseUnit(read('systemd/qemu-modwatch-textfile.timer'));
  t.same([...service.keys()], ['Unit', 'Service'], 'the service has no [Install]: the timer starts it');
  t.same([...timer.keys()], ['Unit', 'Timer', 'Install']);
  const unit = service.get('Unit');
  t.same(all(unit, 'ConditionFileIsExecutable'), [SBIN], 'skipped, not failed, when qemu-modwatch is gone');
  t.same(all(unit, 'ConditionPathIsDirectory'), [TEXTFILE_DIR], 'and where there is no textfile directory');
  const svc = service.get('Service');
  t.same(all(svc, 'Type'), ['oneshot']);
  t.same(all(svc, 'ExecStart'), [`${SBIN} --check --textfile ${TEXTFILE_DIR}`], 'writes the metrics there');
  t.same(all(svc, 'ProtectSystem'), ['strict']);
  t.same(all(svc, 'ReadWritePaths'), [TEXTFILE_DIR], 'the only writable path: no state, no cache written');
  t.same(all(svc, 'StateDirectory'), [], 'its state is read, not written');
  t.same(all(svc, 'MemoryDenyWriteExecute'), [], "no MemoryDenyWriteExecute: node's JIT needs it");
  const caps = all(svc, 'CapabilityBoundingSet').join(' ').split(/\s+/).sort();
  t.same(caps, ['CAP_DAC_READ_SEARCH', 'CAP_SYS_PTRACE'], "read any file and process; write nothing of another user's");

  const tm = timer.get('Timer');
  t.same(all(tm, 'OnUnitActiveSec'), ['15min'], 'every 15 minutes (the stale-check alert allows an hour)');
  t.same(all(tm, 'OnBootSec'), ['2min'], 'and shortly after boot');
  t.same(all(timer.get('Install'), 'WantedBy'), ['timers.target']);
  const preset = read('systemd/50-qemu-modwatch.preset');
  t.notMatch(preset, /textfile/, 'not in the preset: the admin enables it');
});

/** libdnf5's actions plugin: its split() on unescaped spaces, then unescape(). */
function dnf5Args(command: string): string[] {
  const out: string[] = [];
  let cur = '';
  let escape = false;
  let inArg = false;
  for (const ch of command) {
    if (!escape && ch === ' ') {
      if (inArg) out.push(cur);
      cur = '';
      inArg = false;
      continue;
    }
    inArg = true;
    cur += ch;
    escape = !escape && ch === '\\';
  }
  if (inArg) out.push(cur);
  const map: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };
  return out.map((a) => a.replace(/\\(.)/g, (_, c: string) => map[c] ?? c));
}

interface DnfAction {
  callback: string;
  filter: string;
  direction: string;
  options: string[];
  argv: string[];
}

/** The checks libdnf5's actions plugin makes when it reads a file; throws what it would. */
function parseDnf5Actions(text: string): DnfAction[] {
  const CALLBACKS = [
    'pre_base_setup',
    'post_base_setup',
    'repos_configured',
    'repos_loaded',
    'pre_add_cmdline_packages',
    'post_add_cmdline_packages',
    'goal_resolved',
    'pre_transaction',
    'post_transaction',
  ];
  const actions: DnfAction[] = [];
  text.split('\n').forEach((line, i) => {
    if (line === '' || line.startsWith('#')) return;
    const parts = line.split(':');
    if (parts.length < 5) throw new Error(`line ${i + 1}: HOOK:PKG_FILTER:DIRECTION:OPTIONS:CMD format expected`);
    const [callback, filter, direction, options] = parts as [string, string, string, string];
    const command = parts.slice(4).join(':');
    if (!CALLBACKS.includes(callback)) throw new Error(`line ${i + 1}: unknown hook ${callback}`);
    if (filter && !['goal_resolved', 'pre_transaction', 'post_transaction'].includes(callback))
      throw new Error(`line ${i + 1}: filter not allowed`);
    if (!['', 'in', 'out'].includes(direction)) throw new Error(`line ${i + 1}: unknown direction ${direction}`);
    if (!filter && direction) throw new Error(`line ${i + 1}: direction without filter`);
    const opts = dnf5Args(options);
    for (const o of opts) {
      if (!/^(enabled=(1|host-only|installroot-only)|mode=(plain|json)|raise_error=[01])$/.test(o))
        throw new Error(`line ${i + 1}: unknown option ${o}`);
    }
    const argv = dnf5Args(command);
    if (argv.length === 0) throw new Error(`line ${i + 1}: missing command`);
    actions.push({ callback, filter, direction, options: opts, argv });
  });
  return actions;
}

/** pacman's hook syntax (alpm-hooks(5)): [Trigger] ... [Action], Key = Value. */
function parsePacmanHook(text: string): { trigger: [string, string][]; action: [string, string][] } {
  const out: Record<string, [string, string][]> = {};
  let current: [string, string][] | null = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const sec = /^\[(Trigger|Action)\]$/.exec(line);
    if (sec) {
      current = out[sec[1]!] = out[sec[1]!] ?? [];
      return;
    }
    const kv = /^([A-Za-z]+)\s*=\s*(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`line ${i + 1}: not "Key = Value" in a section: ${raw}`);
    current.push([kv[1]!, kv[2]!]);
  });
  return { trigger: out.Trigger ?? [], action: out.Action ?? [] };
}

/** pacman's word split of Exec: whitespace, with single and double quotes. */
function pacmanArgs(exec: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|"((?:[^"\\]|\\.)*)"|((?:[^\s'"\\]|\\.)+)|(\s+)/g;
  let cur: string | null = null;
  for (const m of exec.matchAll(re)) {
    if (m[4] !== undefined) {
      if (cur !== null) out.push(cur);
      cur = null;
    } else cur = (cur ?? '') + (m[1] ?? m[2]?.replace(/\\(.)/g, '$1') ?? m[3]!.replace(/\\(.)/g, '$1'));
  }
  if (cur !== null) out.push(cur);
  return out;
}

/** The apt snippet's DPkg::Post-Invoke commands, as apt-config would list them. */
function aptPostInvoke(text: string): string[] {
  const body = text.replace(/^\s*\/\/.*$/gm, '');
  const m = /DPkg::Post-Invoke\s*\{([^}]*)\}\s*;/.exec(body);
  if (!m) throw new Error('no DPkg::Post-Invoke { ... }; block');
  return [...m[1]!.matchAll(/"((?:[^"\\]|\\.)*)"\s*;/g)].map((x) => x[1]!);
}

const dnf5 = parseDnf5Actions(read('dnf5/qemu-modwatch.actions'));
const pacman = parsePacmanHook(read('pacman/qemu-modwatch.hook'));
const apt = aptPostInvoke(read('apt/80qemu-modwatch'));

t.test('dnf5 actions file', async (t) => {
  t.equal(dnf5.length, 1, 'one action');
  const a = dnf5[0]!;
  t.equal(a.callback, 'post_transaction', 'after the transaction');
  t.equal(a.filter, '/usr/lib64/qemu/*', 'for packages with files in the module directory');
  t.equal(a.direction, '', 'both directions: installed and removed');
  t.same(
    a.options,
    ['enabled=host-only'],
    'not for --installroot, and only options every actions plugin since 0.3 knows',
  );
  t.notMatch(
    read('dnf5/qemu-modwatch.actions')
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n'),
    /\$/,
    'no $: the plugin would substitute ${...}',
  );
  t.equal(a.argv[0], '/bin/sh', 'an absolute command');
  t.equal(a.argv[1], '-c');
  t.equal(a.argv.length, 3, 'one shell script argument');
  t.match(a.argv[2]!, /qemu-modwatch refresh/, 'runs qemu-modwatch refresh');
  t.equal(spawnSync('sh', ['-n', '-c', a.argv[2]!]).status, 0, 'the script parses');
});

t.test('pacman hook', async (t) => {
  const { trigger, action } = pacman;
  t.same(all(trigger, 'Type'), ['Path']);
  t.same(all(trigger, 'Operation').sort(), ['Install', 'Remove', 'Upgrade']);
  t.same(all(trigger, 'Target'), ['usr/lib/qemu/*'], 'module directory, relative to the root as pacman wants');
  t.same(all(action, 'When'), ['PostTransaction']);
  t.equal(all(action, 'Description').length, 1);
  const known = new Set(['Description', 'When', 'Exec', 'Depends', 'AbortOnFail', 'NeedsTargets']);
  for (const [k] of action) t.ok(known.has(k), `[Action] ${k} is a known key`);
  t.same(all(action, 'AbortOnFail'), [], 'never aborts the transaction');
  const exec = all(action, 'Exec');
  t.equal(exec.length, 1);
  const argv = pacmanArgs(exec[0]!);
  t.same(argv.slice(0, 2), ['/bin/sh', '-c']);
  t.equal(argv.length, 3);
  t.match(argv[2]!, /qemu-modwatch refresh/, 'runs qemu-modwatch refresh');
  t.equal(spawnSync('sh', ['-n', '-c', argv[2]!]).status, 0, 'the script parses');
});

t.test('apt snippet', async (t) => {
  t.equal(apt.length, 1);
  t.match(apt[0]!, /qemu-modwatch refresh/, 'runs qemu-modwatch refresh');
  t.equal(spawnSync('sh', ['-n', '-c', apt[0]!]).status, 0, 'the command parses');
  const cfg = spawnSync(
    'apt-config',
    ['-c', path.join(top, 'hooks/apt/80qemu-modwatch'), 'dump', 'DPkg::Post-Invoke'],
    { encoding: 'utf8' },
  );
  if (cfg.error) t.comment('apt-config not available: parsed by the test only');
  else t.match(cfg.stdout, `DPkg::Post-Invoke:: "${apt[0]!.replace(/\\"/g, '"')}";`, 'apt-config reads it');
});

// The commands, run as their consumers run them, against a missing and a
// failing qemu-modwatch. In a private namespace: /usr/sbin/qemu-modwatch is
// replaced there, never on the host.
const nsReason = cannotRun();
t.test('each command with qemu-modwatch missing, failing, working', { skip: nsReason || false }, async (t) => {
  const o = new OverlayHost('qemu-modwatch-dropins');
  t.teardown(() => o.cleanup());
  const log = path.join(o.scratch('log'), 'calls');
  const commands: Record<string, string[]> = {
    dnf5: dnf5[0]!.argv,
    pacman: pacmanArgs(all(pacman.action, 'Exec')[0]!),
    apt: ['/bin/sh', '-c', apt[0]!],
  };
  const run = (name: string, fake: 'missing' | 'failing' | 'working') => {
    const setup =
      fake === 'missing'
        ? `rm -f ${SBIN}`
        : `printf '%s\\n' '#!/bin/sh' 'echo "$*" >> ${log}' ${
            fake === 'failing'
              ? `'echo noise on stdout' 'echo trouble >&2' 'exit 3'`
              : `'echo qemu-modwatch refresh: nothing to do'`
          } > ${SBIN}; chmod 755 ${SBIN}`;
    fs.rmSync(log, { force: true });
    const argv = commands[name]!.map(shq).join(' ');
    const r = o.run(`${setup}\n${argv} >${log}.out 2>${log}.err; echo "@@RC $?"`);
    const rc = /@@RC (\d+)/.exec(r.stdout)?.[1];
    const calls = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
    const stdout = fs.existsSync(`${log}.out`) ? fs.readFileSync(`${log}.out`, 'utf8') : '';
    return { rc, calls, stdout };
  };
  for (const name of Object.keys(commands)) {
    const missing = run(name, 'missing');
    t.equal(missing.rc, '0', `${name}: exit 0 with qemu-modwatch not installed`);
    t.equal(missing.stdout, '', `${name}: silent with qemu-modwatch not installed`);
    const failing = run(name, 'failing');
    t.equal(failing.rc, '0', `${name}: exit 0 when qemu-modwatch fails`);
    t.equal(failing.calls, 'refresh\n', `${name}: ran qemu-modwatch refresh`);
    const working = run(name, 'working');
    t.equal(working.rc, '0', `${name}: exit 0`);
    t.equal(working.calls, 'refresh\n', `${name}: ran qemu-modwatch refresh`);
    // dnf5 reads an action's stdout as directives, and an apt hook's output
    // after every run would be noise.
    if (name !== 'pacman') {
      t.equal(failing.stdout, '', `${name}: qemu-modwatch's stdout does not reach the consumer`);
      t.equal(working.stdout, '', `${name}: nothing on stdout`);
    }
  }
});
