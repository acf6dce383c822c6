import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { needTool, recordArgvLine, treeState, startDaemon, tempDir } from '../fixtures/monitoring';
import { PERFDATA_RE } from '../fixtures/outputs';
import { isAlive, kill, tail, waitFor } from '../fixtures/processes';
import { EXE, MODDIR, TOP, sysroot, type Sysroot } from '../fixtures/sysroot';

// The shipped Nagios command definitions in Debian's real Nagios 4: its
// pre-flight check accepts them (and refuses a broken one), and a real
// Nagios runs them and records OK, WARNING and CRITICAL with the perfdata
// in its status file. The installed paths (/usr/sbin/qemu-modwatch,
// /usr/bin/sudo) are not here: in the run each is replaced by a stand-in
// that records the argv Nagios gave it and runs the built executable
// against the scenario's fake host, so the argv checked is the shipped one.
// Every file Nagios writes is in the test's temp dir; it runs as root there.

const SHIPPED = path.join(TOP, 'hooks/nagios/qemu-modwatch.cfg');
const OTHER = 'cd'.repeat(20);
const HOST_DIRS = ['/etc/nagios4', '/var/lib/nagios4', '/var/log/nagios4', '/run/nagios4', '/etc/nagios-plugins'];

const nagios = needTool(t, 'nagios4', 'nagios4-core');

/** Nagios' own directories, to compare before and after. */
const hostState = () => treeState(HOST_DIRS);

/** The shipped definitions: name to command line. */
function shippedCommands(text = fs.readFileSync(SHIPPED, 'utf8')): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/define command\s*\{([^}]*)\}/g)) {
    const name = /^\s*command_name\s+(\S+)\s*$/m.exec(m[1]!)?.[1];
    const line = /^\s*command_line\s+(.+?)\s*$/m.exec(m[1]!)?.[1];
    if (name && line) out.set(name, line);
  }
  return out;
}

const ALWAYS = [
  'define timeperiod{',
  '\ttimeperiod_name\talways',
  '\talias\talways',
  ...['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'].map((d) => `\t${d}\t00:00-24:00`),
  '\t}',
];

function objects(services: [desc: string, command: string][]): string {
  return [
    ...ALWAYS,
    'define command{',
    '\tcommand_name\tnotify_nobody',
    '\tcommand_line\t/bin/true',
    '\t}',
    'define contact{',
    '\tcontact_name\tadmin',
    '\thost_notifications_enabled\t0',
    '\tservice_notifications_enabled\t0',
    '\thost_notification_period\talways',
    '\tservice_notification_period\talways',
    '\thost_notification_options\tn',
    '\tservice_notification_options\tn',
    '\thost_notification_commands\tnotify_nobody',
    '\tservice_notification_commands\tnotify_nobody',
    '\t}',
    'define host{',
    '\thost_name\tkvm1',
    '\taddress\t127.0.0.1',
    '\tmax_check_attempts\t1',
    '\tcheck_period\talways',
    '\tcontacts\tadmin',
    '\tnotification_period\talways',
    '\tactive_checks_enabled\t0',
    '\t}',
    ...services.flatMap(([desc, command]) => [
      'define service{',
      '\thost_name\tkvm1',
      `\tservice_description\t${desc}`,
      `\tcheck_command\t${command}`,
      '\tmax_check_attempts\t1',
      '\tcheck_interval\t1',
      '\tretry_interval\t1',
      '\tcheck_period\talways',
      '\tnotification_period\talways',
      '\tcontacts\tadmin',
      '\t}',
    ]),
    '',
  ].join('\n');
}

/** A main config with every path in `dir`; interval_length 1 makes check_interval 1 a second. */
function mainConfig(dir: string, cfgFiles: string[]): string {
  const file = path.join(dir, 'nagios.cfg');
  const spool = path.join(dir, 'checkresults');
  fs.mkdirSync(spool, { recursive: true });
  fs.writeFileSync(
    file,
    [
      ...cfgFiles.map((f) => `cfg_file=${f}`),
      `log_file=${path.join(dir, 'nagios.log')}`,
      `object_cache_file=${path.join(dir, 'objects.cache')}`,
      `precached_object_file=${path.join(dir, 'objects.precache')}`,
      `status_file=${path.join(dir, 'status.dat')}`,
      `lock_file=${path.join(dir, 'nagios.pid')}`,
      `temp_file=${path.join(dir, 'nagios.tmp')}`,
      `temp_path=${dir}`,
      `check_result_path=${spool}`,
      `state_retention_file=${path.join(dir, 'retention.dat')}`,
      `query_socket=${path.join(dir, 'query.sock')}`,
      'status_update_interval=1',
      'nagios_user=root',
      'nagios_group=root',
      'check_external_commands=0',
      'use_syslog=0',
      'retain_state_information=0',
      'interval_length=1',
      'check_for_updates=0',
      'check_result_reaper_frequency=1',
      'service_inter_check_delay_method=n',
      'max_service_check_spread=1',
      'illegal_macro_output_chars=`~$&|\'"<>',
      '',
    ].join('\n'),
  );
  return file;
}

function preflight(conf: string) {
  const r = spawnSync(nagios!, ['-v', conf], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test(
  'nagios4 -v accepts the shipped commands in services, and refuses a broken one',
  { skip: !nagios },
  async (t) => {
    const before = hostState();
    const dir = tempDir(t, 'nagios');
    const names = [...shippedCommands().keys()];
    t.same(names, ['check_qemu_modwatch', 'check_qemu_modwatch_as_root']);
    const obj = path.join(dir, 'objects.cfg');
    fs.writeFileSync(obj, objects(names.map((n) => [n, n])));
    const r = preflight(mainConfig(dir, [SHIPPED, obj]));
    t.equal(r.code, 0, `valid:\n${r.out}`);
    t.match(r.out, /Total Errors:\s+0/);
    t.match(r.out, /Checked 2 services/);

    const broken = path.join(dir, 'broken.cfg');
    fs.writeFileSync(
      broken,
      fs.readFileSync(SHIPPED, 'utf8').replace(/^\s*command_line\s.*qemu-modwatch --check.*$/m, ''),
    );
    const b = preflight(mainConfig(dir, [broken, obj]));
    t.not(b.code, 0, 'a command without a command line is refused');
    t.match(b.out, /Could not register command/);
    t.same(hostState(), before, "Nagios' directories on the host are untouched");
  },
);

interface Status {
  current_state: string;
  plugin_output: string;
  long_plugin_output: string;
  performance_data: string;
  has_been_checked: string;
}

function readStatus(file: string): Map<string, Status> {
  const out = new Map<string, Status>();
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const m of text.matchAll(/servicestatus \{\n([\s\S]*?)\n\s*\}/g)) {
    const fields = Object.fromEntries(
      m[1]!.split('\n').map((l) => {
        const at = l.indexOf('=');
        return [l.slice(0, at).trim(), l.slice(at + 1)];
      }),
    );
    out.set(fields.service_description, fields as unknown as Status);
  }
  return out;
}

t.test('a real Nagios runs the shipped command lines: states, perfdata and the argv', { skip: !nagios }, async (t) => {
  const before = hostState();
  const dir = tempDir(t, 'nagios');
  const ok = sysroot(t);
  ok.run(['accept']);
  const changed = sysroot(t);
  changed.run(['accept']);
  changed.addModule(MODDIR, 'hw-usb-host.so');
  const refused = sysroot(t);
  refused.run(['accept']);
  refused.addModule(MODDIR, 'hw-usb-host.so', { stamp: OTHER });
  const scenarios: [string, Sysroot, number][] = [
    ['ok', ok, 0],
    ['warning', changed, 1],
    ['critical', refused, 2],
  ];

  const argvFile = path.join(dir, 'argv');
  const record = recordArgvLine(argvFile);
  const sudo = path.join(dir, 'sudo');
  fs.writeFileSync(sudo, `#!/bin/sh\n${record}\n[ "$1" = -n ] && shift\nexec "$@"\n`, { mode: 0o755 });
  const shipped = shippedCommands();
  const derived: string[] = [];
  const services: [string, string][] = [];
  for (const [name, s] of scenarios) {
    // Stands where /usr/sbin/qemu-modwatch would be, for this scenario's host.
    const plugin = path.join(dir, `qemu-modwatch-${name}`);
    fs.writeFileSync(plugin, `#!/bin/sh\n${record}\nexec '${EXE}' --root '${s.root}' "$@"\n`, { mode: 0o755 });
    for (const [command, line] of shipped) {
      const local = `${command}_${name}`;
      derived.push(
        'define command{',
        `\tcommand_name\t${local}`,
        `\tcommand_line\t${line.replace('/usr/bin/sudo', sudo).replace('/usr/sbin/qemu-modwatch', plugin)}`,
        '\t}',
      );
      services.push([`${command}-${name}`, local]);
    }
  }
  const commands = path.join(dir, 'commands.cfg');
  fs.writeFileSync(commands, derived.join('\n') + '\n');
  const obj = path.join(dir, 'objects.cfg');
  fs.writeFileSync(obj, objects(services));
  const conf = mainConfig(dir, [SHIPPED, commands, obj]);
  t.equal(preflight(conf).code, 0, 'the run config passes the pre-flight check');

  const daemon = startDaemon(t, [nagios!, conf], path.join(dir, 'nagios.out'));
  // Nagios' workers are its children; they must go with it.
  const workers = () =>
    fs
      .readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map(Number)
      .filter((p) => {
        try {
          return fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ')[1] === String(daemon.pid);
        } catch {
          return false;
        }
      });
  let seenWorkers: number[] = [];
  t.teardown(() => seenWorkers.forEach((p) => kill(p, 'SIGKILL')));
  const statusFile = path.join(dir, 'status.dat');
  const done = await waitFor(
    () => {
      seenWorkers = [...new Set([...seenWorkers, ...workers()])];
      const st = readStatus(statusFile);
      return services.every(([desc]) => st.get(desc)?.has_been_checked === '1');
    },
    90_000,
    250,
  );
  t.ok(done, `every service checked${done ? '' : `\n${tail(path.join(dir, 'nagios.log'))}`}`);
  const status = readStatus(statusFile);
  await daemon.stop();
  t.ok(await waitFor(() => seenWorkers.every((p) => !isAlive(p)), 15_000), 'its workers are gone too');

  const names = ['OK', 'WARNING', 'CRITICAL'];
  for (const [name, , state] of scenarios) {
    for (const command of shipped.keys()) {
      const st = status.get(`${command}-${name}`);
      t.equal(st?.current_state, String(state), `${command}, ${name}: Nagios' state is the exit status`);
      t.match(st?.plugin_output, new RegExp(`^QEMU-MODWATCH ${names[state]} - `), `${command}, ${name}: status line`);
      const perf = (st?.performance_data ?? '').split(' ').filter(Boolean);
      t.ok(perf.length >= 9, `${command}, ${name}: perfdata`);
      for (const item of perf) t.match(item, PERFDATA_RE);
    }
  }
  t.match(status.get('check_qemu_modwatch-critical')?.performance_data, /'refused_modules'=1;;0;0/);
  t.match(
    status.get('check_qemu_modwatch-warning')?.long_plugin_output,
    /WARNING: /,
    'the details reach the long output',
  );

  // What each command line gave the plugin, word for word.
  const argv = fs
    .readFileSync(argvFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split('\t'));
  const plugin = path.join(dir, 'qemu-modwatch-ok');
  const args = ['--check', '--format', 'nagios', '--timeout', '50'];
  t.same(
    argv.find((a) => a[0] === sudo),
    [sudo, '-n', argv.find((a) => a[0] === sudo)![2]!, ...args],
    'check_qemu_modwatch: sudo -n, the plugin, its options',
  );
  t.ok(argv.some((a) => a[0] === sudo && a[2] === plugin));
  t.same(
    argv.find((a) => a[0] === plugin),
    [plugin, ...args],
    'the plugin gets exactly the shipped options',
  );
  t.same(hostState(), before, "Nagios' directories on the host are untouched");
});
