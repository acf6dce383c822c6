import { runAccept, runCheck, runInvalidate, runRefresh, runStatus, type Output } from './cli/commands';
import { commandFailure, errorLine, usageFailure } from './cli/failure';
import { helpText, parseCommandLine, UsageError, type Invocation } from './cli/options';
import { runTimed, selfExecutable } from './cli/timeout';
import { DEFAULT_PREFIX, InstallRefused, runInstall, runUninstall } from './install/install';
import type { Driver } from './core/daemons';
import { driverFromArgv0 } from './hook/invocation';
import { runHook } from './hook/run';
import { ConfigError, loadConfig } from './host/config';
import { log } from './os/log';
import { makePaths, type Paths } from './host/paths';
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
    return print(usageFailure(argv, e.message));
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
      return print({ stdout: '', stderr: errorLine(e.message), exitCode: 1 });
    }
  }
  // From here a failure anywhere is reported the way the command and its output format expect.
  try {
    return await command(inv, paths, uid);
  } catch (e) {
    return print(commandFailure(inv, paths, internalError(e)));
  }
}

async function command(inv: Invocation, paths: Paths, uid: number): Promise<number> {
  const failure = (message: string) => print(commandFailure(inv, paths, message));
  if (inv.timeout !== undefined) {
    const r = await runTimed(inv.untimedArgs, inv.timeout);
    const code = r.timedOut
      ? failure(`timed out after ${inv.timeout} s`)
      : print({ stdout: r.stdout, stderr: r.stderr, exitCode: r.code });
    // A timed-out check leaves a child behind that may not die at once.
    process.exit(code);
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
  const uid = process.getuid?.() ?? 0;
  try {
    return await runHook(driver, args, {
      paths,
      context: () => ({ paths, config: loadConfig(paths.configFile, uid), env: process.env }),
    });
  } catch (e) {
    // A hook never fails a guest start for our own bug; it is logged instead.
    log(paths, { priority: 'err', message: `${internalError(e)}; not blocking (fail = open)` });
    return 0;
  }
}

function internalError(e: unknown): string {
  return `internal error: ${e instanceof Error ? e.message : String(e)}`;
}

// Writes to pipes and files are synchronous on Linux, so process.exit()
// after them loses nothing.
function print(out: Output): number {
  if (out.stdout) process.stdout.write(out.stdout);
  if (out.stderr) process.stderr.write(out.stderr);
  return out.exitCode;
}

function fail(message: string): number {
  return print({ stdout: '', stderr: errorLine(message), exitCode: 3 });
}

/** Runs the program once: argv, environment and clock are read from here on, never at load. */
function start(): void {
  // Only what fails before a command is known (or in the failure handling itself) gets here.
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.exitCode = fail(internalError(e));
    },
  );
}

// Loading the bundle does nothing but define; the start is one call. A
// startup snapshot's builder (build/sea.mjs) sets this global
// while it loads the bundle, so that the start waits for the snapshot to be
// deserialised in the run that has the real argv and environment.
const deferStart = (globalThis as { qemuModwatchDeferStart?: (run: () => void) => void }).qemuModwatchDeferStart;
if (deferStart) deferStart(start);
else start();
