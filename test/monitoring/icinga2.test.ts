import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { needTool, recordArgvLine, treeState, startDaemon, tempDir } from '../fixtures/monitoring';
import { PERFDATA_RE } from '../fixtures/outputs';
import { addGuest } from '../fixtures/guests';
import { tail, waitFor } from '../fixtures/processes';
import { EXE, MODDIR, TOP, sysroot, type Sysroot } from '../fixtures/sysroot';

// The shipped Icinga 2 CheckCommands in the real Icinga 2: its config check
// accepts them and refuses broken ones, and a real Icinga 2 daemon
// schedules them against fake hosts (--root) and gets OK, WARNING,
// CRITICAL and UNKNOWN back, read from its own perfdata writer. Every path
// Icinga writes to is a constant pointed into the test's temp dir, and it
// runs as root there (no chown to its user); the test checks that
// Icinga's own directories on the host are left untouched.

const SHIPPED = path.join(TOP, 'hooks/icinga2/qemu-modwatch.conf');
const OTHER = 'cd'.repeat(20);
const HOST_DIRS = [
  '/etc/icinga2',
  '/var/lib/icinga2',
  '/var/cache/icinga2',
  '/var/log/icinga2',
  '/run/icinga2',
  '/var/run/icinga2',
];

const icinga2 = needTool(t, 'icinga2', 'icinga2');

/** Icinga's own directories, to compare before and after. */
const icingaHostState = () => treeState(HOST_DIRS);

/** The -D constants that keep every file Icinga writes under `dir`. */
function privatePaths(dir: string): string[] {
  const d = (name: string) => {
    const p = path.join(dir, name);
    fs.mkdirSync(p, { recursive: true });
    return p;
  };
  const [lib, cache, log, run, spool] = ['lib', 'cache', 'log', 'run', 'spool'].map(d) as [
    string,
    string,
    string,
    string,
    string,
  ];
  const consts: Record<string, string> = {
    'Configuration.RunAsUser': 'root',
    'Configuration.RunAsGroup': 'root',
    'Configuration.DataDir': lib,
    'Configuration.CacheDir': cache,
    'Configuration.LogDir': log,
    'Configuration.InitRunDir': run,
    'Configuration.SpoolDir': spool,
    'Configuration.StatePath': path.join(lib, 'icinga2.state'),
    'Configuration.ModAttrPath': path.join(lib, 'modified-attributes.conf'),
    'Configuration.ObjectsPath': path.join(cache, 'icinga2.debug'),
    'Configuration.VarsPath': path.join(cache, 'icinga2.vars'),
    'Configuration.PidPath': path.join(run, 'icinga2.pid'),
  };
  return Object.entries(consts).map(([k, v]) => `--define=${k}=${v}`);
}

function writeConfig(dir: string, body: string, shipped = SHIPPED): string {
  const file = path.join(dir, 'icinga2.conf');
  fs.writeFileSync(
    file,
    [
      `include <itl>`,
      `include ${JSON.stringify(shipped)}`,
      `object Host "kvm1" { check_command = "dummy" }`,
      body,
      '',
    ].join('\n'),
  );
  return file;
}

function validate(dir: string, conf: string) {
  const r = spawnSync(icinga2!, ['daemon', '-C', '-c', conf, ...privatePaths(dir)], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH ?? '', LC_ALL: 'C' },
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const services = (...commands: string[]) =>
  commands
    .map(
      (c, i) =>
        `object Service "qmw-${i}" {\n` +
        `  host_name = "kvm1"\n` +
        `  check_command = ${JSON.stringify(c)}\n` +
        `  vars.qemu_modwatch_timeout = 20\n` +
        `}`,
    )
    .join('\n');

t.test('icinga2 daemon -C accepts the shipped CheckCommands in a Host and Service', { skip: !icinga2 }, async (t) => {
  const before = icingaHostState();
  const dir = tempDir(t, 'icinga2');
  const r = validate(dir, writeConfig(dir, services('qemu-modwatch', 'qemu-modwatch-sudo')));
  t.equal(r.code, 0, `valid:\n${r.out}`);
  t.match(r.out, /Instantiated 2 Services/);
  t.match(r.out, /Finished validating the configuration/);
  // The objects it instantiated, as Icinga itself lists them.
  const list = spawnSync(
    icinga2!,
    ['object', 'list', '--type', 'CheckCommand', '--name', 'qemu-modwatch*', ...privatePaths(dir)],
    { encoding: 'utf8' },
  );
  t.equal(list.status, 0, list.stderr);
  t.match(list.stdout, /Object 'qemu-modwatch' of type 'CheckCommand'/);
  t.match(list.stdout, /Object 'qemu-modwatch-sudo' of type 'CheckCommand'/);
  t.same(icingaHostState(), before, "Icinga's directories on the host are untouched");
});

t.test('icinga2 daemon -C refuses broken definitions', { skip: !icinga2 }, async (t) => {
  const dir = tempDir(t, 'icinga2');
  const text = fs.readFileSync(SHIPPED, 'utf8');
  const cases: [string, string, RegExp][] = [
    ['a missing brace', text.replace(/\}\s*$/, ''), /syntax error/],
    ['a timeout that is no duration', text.replace('timeout = 1m', 'timeout = "soon"'), /Config validation failed/],
    [
      'a template that does not exist',
      text.replace(/import "qemu-modwatch-common"/, 'import "qemu-modwatch-commn"'),
      /Import references unknown template/,
    ],
  ];
  for (const [what, broken, why] of cases) {
    t.not(broken, text, `${what}: the text changed`);
    const file = path.join(dir, 'broken.conf');
    fs.writeFileSync(file, broken);
    const r = validate(dir, writeConfig(dir, services('qemu-modwatch'), file));
    t.not(r.code, 0, `${what}: refused`);
    t.match(r.out, why, what);
  }
  // A Service naming a command that is not there.
  const r = validate(dir, writeConfig(dir, services('qemu-modwatch-nonesuch')));
  t.not(r.code, 0, 'an unknown check command is refused');
  t.match(r.out, /does not exist/);
});

interface Result {
  state: number;
  output: string;
  perfdata: string;
}

t.test(
  'a real Icinga 2 runs the CheckCommands: states, perfdata, --timeout and the argv',
  { skip: !icinga2 },
  async (t) => {
    const before = icingaHostState();
    const dir = tempDir(t, 'icinga2');

    const hosts: Record<
      string,
      { root: Sysroot; state: number; vars?: Record<string, string | number>; command?: string }
    > = {};
    const ok = sysroot(t);
    ok.run(['accept']);
    hosts.ok = { root: ok, state: 0 };
    const changed = sysroot(t);
    changed.run(['accept']);
    changed.addModule(MODDIR, 'hw-usb-host.so');
    hosts.warning = { root: changed, state: 1 };
    const refused = sysroot(t);
    refused.run(['accept']);
    refused.addModule(MODDIR, 'hw-usb-host.so', { stamp: OTHER });
    hosts.critical = { root: refused, state: 2 };
    const badConfig = sysroot(t);
    badConfig.writeConfig('[policy]\non_change = sometimes\n');
    hosts.unknown = { root: badConfig, state: 3 };
    // A guest whose /proc entry blocks on read, as a process in D state does.
    const hung = sysroot(t);
    hung.run(['accept']);
    addGuest(hung, { pid: 777, domain: 'hung' });
    fs.rmSync(hung.host('/proc/777/cmdline'));
    t.equal(spawnSync('mkfifo', [hung.host('/proc/777/cmdline')]).status, 0, 'mkfifo');
    hosts.timeout = { root: hung, state: 3, vars: { qemu_modwatch_timeout: '1.5' } };
    // Through sudo: a stand-in that records its argv and runs the rest.
    hosts.sudo = { root: changed, state: 1, command: 'qemu-modwatch-sudo' };

    const argvFile = path.join(dir, 'argv');
    const recorder = path.join(dir, 'record');
    fs.writeFileSync(
      recorder,
      `#!/bin/sh\n${recordArgvLine(argvFile)}\n` + `[ "$1" = -n ] && shift\n` + `exec "$@"\n`,
      { mode: 0o755 },
    );
    const sudoStandIn = path.join(dir, 'sudo');
    fs.copyFileSync(recorder, sudoStandIn);
    fs.chmodSync(sudoStandIn, 0o755);
    // The direct command runs the plugin through the recorder too, to see its argv.
    const direct = path.join(dir, 'qemu-modwatch');
    fs.writeFileSync(direct, `#!/bin/sh\n${recordArgvLine(argvFile)}\n` + `exec '${EXE}' "$@"\n`, { mode: 0o755 });

    const spool = path.join(dir, 'spool');
    const body = [
      'object CheckerComponent "checker" { }',
      'object PerfdataWriter "results" {',
      `  service_perfdata_path = ${JSON.stringify(path.join(spool, 'service-perfdata'))}`,
      `  service_temp_path = ${JSON.stringify(path.join(spool, 'service-perfdata.tmp'))}`,
      `  host_perfdata_path = ${JSON.stringify(path.join(spool, 'host-perfdata'))}`,
      `  host_temp_path = ${JSON.stringify(path.join(spool, 'host-perfdata.tmp'))}`,
      // The output has lines of its own (the details): it goes last, and END closes the record.
      '  service_format_template = "RESULT\\t$service.name$\\t$service.state_id$\\t' +
        '$service.perfdata$\\t$service.output$\\tEND"',
      '  rotation_interval = 1s',
      '}',
      ...Object.entries(hosts).map(([name, h]) =>
        [
          `object Service ${JSON.stringify(name)} {`,
          '  host_name = "kvm1"',
          `  check_command = ${JSON.stringify(h.command ?? 'qemu-modwatch')}`,
          '  check_interval = 1s',
          '  retry_interval = 1s',
          `  vars.qemu_modwatch_root = ${JSON.stringify(h.root.root)}`,
          h.command
            ? `  vars.qemu_modwatch_sudo = ${JSON.stringify(sudoStandIn)}\n` +
              `  vars.qemu_modwatch_binary = ${JSON.stringify(EXE)}`
            : `  vars.qemu_modwatch_binary = ${JSON.stringify(direct)}`,
          ...Object.entries(h.vars ?? {}).map(([k, v]) => `  vars.${k} = ${JSON.stringify(v)}`),
          '}',
        ].join('\n'),
      ),
    ].join('\n');
    const conf = writeConfig(dir, body);
    const daemon = startDaemon(
      t,
      [icinga2!, 'daemon', '-c', conf, ...privatePaths(dir)],
      path.join(dir, 'icinga2.log'),
    );

    const results = (): Map<string, Result> => {
      const got = new Map<string, Result>();
      for (const f of fs
        .readdirSync(spool)
        .filter((f) => f.startsWith('service-perfdata'))
        .sort()) {
        for (const m of fs
          .readFileSync(path.join(spool, f), 'utf8')
          .matchAll(/^RESULT\t([^\t\n]+)\t(\d+)\t([^\t\n]*)\t([^\t]*)\tEND$/gm)) {
          if (!got.has(m[1]!)) got.set(m[1]!, { state: Number(m[2]), perfdata: m[3]!, output: m[4]! });
        }
      }
      return got;
    };
    const all = await waitFor(() => results().size === Object.keys(hosts).length, 60_000, 250);
    // Read before the stop: stopping, Icinga's PerfdataWriter rotates its spool files, and a
    // result read afterwards was seen missing.
    const got = results();
    t.ok(all, `a result for every service, got ${[...got.keys()].join(', ')}${all ? '' : `\n${tail(daemon.log)}`}`);
    await daemon.stop();
    t.notOk(
      fs.existsSync(`/proc/${daemon.pid}`) && daemon.child.exitCode === null && daemon.child.signalCode === null,
      'icinga2 stopped',
    );

    const status = ['OK', 'WARNING', 'CRITICAL', 'UNKNOWN'];
    for (const [name, h] of Object.entries(hosts)) {
      const r = got.get(name);
      t.equal(r?.state, h.state, `${name}: Icinga's state is the plugin's exit status`);
      t.match(r?.output, new RegExp(`^QEMU-MODWATCH ${status[h.state]} - `), `${name}: status line`);
    }
    t.match(
      got.get('timeout')?.output,
      /^QEMU-MODWATCH UNKNOWN - timed out after 1\.5 s/,
      '--timeout ends the hung check before Icinga would',
    );
    t.match(got.get('unknown')?.output, /on_change = sometimes/);
    t.match(got.get('critical')?.output, /refuse/i);
    // Icinga parsed the perfdata: every item in the plugins' syntax, the counts as the plugin said.
    for (const name of ['ok', 'warning', 'critical', 'sudo']) {
      const items = (got.get(name)?.perfdata ?? '').split(' ').filter(Boolean);
      t.ok(items.length >= 9, `${name}: ${items.length} perfdata items`);
      for (const item of items) t.match(item, PERFDATA_RE, `${name}: ${item}`);
    }
    t.match(got.get('critical')?.perfdata, /(^| )refused_modules=1;;0;0( |$)/, 'refused_modules: critical above 0');
    t.match(got.get('warning')?.perfdata, /(^| )changed=1;0;;0( |$)/);

    // The exact argv each command expands to: what a sudoers rule must allow.
    const argv = fs
      .readFileSync(argvFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    const lineFor = (root: Sysroot, first: string) => argv.find((a) => a[0] === first && a.includes(root.root));
    t.same(
      lineFor(ok, direct),
      [direct, '--check', '--format', 'nagios', '--timeout', '50', '--root', ok.root],
      'qemu-modwatch: the argv, default timeout',
    );
    t.same(
      lineFor(hung, direct),
      [direct, '--check', '--format', 'nagios', '--timeout', '1.5', '--root', hung.root],
      'qemu-modwatch: --timeout from the variable',
    );
    t.same(
      lineFor(changed, sudoStandIn),
      [sudoStandIn, '-n', EXE, '--check', '--format', 'nagios', '--timeout', '50', '--root', changed.root],
      'qemu-modwatch-sudo: sudo -n, then the plugin',
    );
    t.same(icingaHostState(), before, "Icinga's directories on the host are untouched");
  },
);
