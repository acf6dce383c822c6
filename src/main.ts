import { writeTextfile } from './app/commands';
import { runAccept, runCheck, runInvalidate, runRefresh, runStatus, type Output } from './cli/commands';
import { nagiosFailure } from './cli/format-nagios';
import { prometheusFailure } from './cli/format-prometheus';
import { helpText, parseCommandLine, UsageError, type Invocation } from './cli/options';
import { runTimed, selfExecutable } from './cli/timeout';
import { DEFAULT_PREFIX, InstallRefused, runInstall, runUninstall } from './install/install';
import type { Driver } from './core/daemons';
import { driverFromArgv0 } from './hook/invocation';
import { runHook } from './hook/run';
import { ConfigError, loadConfig } from './host/config';
import { log } from './os/log';
import { makePaths, type Paths } from './host/paths';
import { escapeControl } from './core/text';
import { VERSION } from './version';

// The entry: libvirt's hook convention or a command, and every failure
// mapped to an exit code. Commands print their result on stdout; errors are
// one line on stderr (a monitoring plugin's UNKNOWN line goes to stdout).
// QEMU_MODWATCH_ROOT is --root for callers that cannot pass options (a hook
// started by name, in tests or on a mounted image).

async function main(argv: string[]): Promise<number> {
  const uid = process.getuid?.() ?? 0;
  const envRoot = process.env.QEMU_MODWATCH_ROOT || undefined;
  const byName = driverFromArgv0(process.argv0) ?? driverFromArgv0(process.argv[1]);
  if (byName) return hook(byName, argv, makePaths({ root: envRoot, uid, env: process.env }));

  let inv: Invocation;
  try {
    inv = parseCommandLine(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    // A monitoring plugin answers UNKNOWN on stdout, even to bad arguments.
    if (argv.some((a, i) => a === '--format=nagios' || (a === 'nagios' && argv[i - 1] === '--format')))
      process.stdout.write(nagiosFailure(e.message));
    return fail(`${e.message} (try --help)`);
  }
  if (inv.command === 'help') return print({ stdout: helpText(), exitCode: 0 });
  if (inv.command === 'version') return print({ stdout: `qemu-modwatch ${VERSION}\n`, exitCode: 0 });
  const paths = makePaths({ root: inv.root ?? envRoot, config: inv.config, uid, env: process.env });
  if (inv.command === 'hook') {
    const [driver, ...args] = inv.hookArgs;
    if (driver !== 'qemu' && driver !== 'daemon')
      return fail(`hook needs 'qemu' or 'daemon', not '${driver ?? ''}' (try --help)`);
    return hook(driver, args, paths);
  }
  if (inv.command === 'install' || inv.command === 'uninstall') {
    // Needs no config: installing is what brings one.
    try {
      const out =
        inv.command === 'install'
          ? runInstall({
              paths,
              prefix: inv.prefix ?? DEFAULT_PREFIX,
              dryRun: inv.dryRun,
              chain: inv.chain,
              self: selfExecutable(),
            })
          : runUninstall(paths, { dryRun: inv.dryRun, purge: inv.purge });
      return print(out);
    } catch (e) {
      if (!(e instanceof InstallRefused)) throw e;
      fail(e.message);
      return 1;
    }
  }
  current = { inv, paths };
  if (inv.timeout !== undefined) {
    const r = await runTimed(inv.untimedArgs, inv.timeout);
    if (r.timedOut) return failure(`timed out after ${inv.timeout} s`);
    return print({ stdout: r.stdout, stderr: r.stderr, exitCode: r.code });
  }
  let config;
  try {
    config = loadConfig(paths.configFile, uid);
  } catch (e) {
    if (e instanceof ConfigError) return failure(e.message);
    throw e;
  }
  const ctx = { paths, config, env: process.env };
  const json = inv.format === 'json';
  switch (inv.command) {
    case 'accept':
      return print(await runAccept(ctx, json));
    case 'refresh':
      return print(await runRefresh(ctx, { json, textfile: inv.textfile, nudge: inv.nudge }));
    case 'invalidate':
      return print(await runInvalidate(ctx, { json, emulator: inv.emulator, nudge: inv.nudge, dryRun: inv.dryRun }));
    case 'status':
      return print(runStatus(ctx, json));
    default:
      return print(
        runCheck(ctx, {
          format: inv.format,
          formatGiven: inv.formatGiven,
          textfile: inv.textfile,
          verbose: inv.verbose,
        }),
      );
  }
}

async function hook(driver: Driver, args: string[], paths: Paths): Promise<number> {
  // Belt and braces: whatever any code path might print goes to stderr.
  // The getter is replaced, not stdout's write: making a stream loads
  // Node's stream code, milliseconds a start, and most hook runs print nothing.
  Object.defineProperty(process, 'stdout', { configurable: true, enumerable: true, get: () => process.stderr });
  hookPaths = paths;
  const uid = process.getuid?.() ?? 0;
  return runHook(driver, args, {
    paths,
    context: () => ({ paths, config: loadConfig(paths.configFile, uid), env: process.env }),
  });
}

let hookPaths: Paths | null = null;
/** The command being run, so that a failure anywhere is reported the way its output format expects. */
let current: { inv: Invocation; paths: Paths } | null = null;

// Writes to pipes and files are synchronous on Linux, so process.exit()
// after them loses nothing.
function print(out: Output): number {
  if (out.stdout) process.stdout.write(out.stdout);
  if (out.stderr) process.stderr.write(out.stderr);
  return out.exitCode;
}

function fail(message: string): number {
  // One line, and nothing a file or domain name could smuggle into a terminal.
  process.stderr.write(`qemu-modwatch: ${escapeControl(message.replace(/\s*\n\s*/g, ' '))}\n`);
  return 3;
}

/**
 * A command could not do its work (bad config, timeout, our own bug).
 * refresh runs inside package transactions and exits 0 whatever happens;
 * monitoring gets UNKNOWN in the form it reads.
 */
function failure(message: string): number {
  const oneLine = message.replace(/\s*\n\s*/g, ' ');
  if (!current) return fail(oneLine);
  const { inv, paths } = current;
  if (inv.command === 'refresh') {
    log(paths, { priority: 'err', message: `refresh failed: ${oneLine}` });
    fail(`refresh failed: ${oneLine}`);
    return 0;
  }
  if (inv.textfile) writeTextfile(inv.textfile, prometheusFailure());
  if (inv.format === 'nagios') process.stdout.write(nagiosFailure(oneLine));
  else if (inv.format === 'prometheus' && !inv.textfile) process.stdout.write(prometheusFailure());
  return fail(oneLine);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // A timed-out check leaves a child behind that may not die at once.
    if (current?.inv.timeout !== undefined) process.exit(code);
  },
  (e: unknown) => {
    const message = `internal error: ${e instanceof Error ? e.message : String(e)}`;
    // A hook never fails a guest start for our own bug; it is logged instead.
    if (hookPaths) {
      log(hookPaths, { priority: 'err', message: `${message}; not blocking (fail = open)` });
      process.exitCode = 0;
    } else {
      process.exitCode = failure(message);
    }
  },
);
