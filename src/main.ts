import { runAccept, runCheck } from './cli/commands';
import { helpText, parseCommandLine, UsageError } from './cli/options';
import { driverFromArgv0, type Driver } from './hook/invocation';
import { runHook } from './hook/run';
import { ConfigError, loadConfig } from './system/config';
import { log } from './system/log';
import { makePaths, type Paths } from './system/paths';
import { VERSION } from './version';

// The entry: libvirt's hook convention or a command, and every failure
// mapped to an exit code. Commands print their result on stdout; errors are
// one line on stderr. QEMU_MODWATCH_ROOT is --root for callers that cannot
// pass options (a hook started by name, in tests or on a mounted image).

async function main(argv: string[]): Promise<number> {
  const uid = process.getuid?.() ?? 0;
  const envRoot = process.env.QEMU_MODWATCH_ROOT || undefined;
  const byName = driverFromArgv0(process.argv0) ?? driverFromArgv0(process.argv[1]);
  if (byName) return hook(byName, argv, makePaths({ root: envRoot, uid, env: process.env }));

  let inv;
  try {
    inv = parseCommandLine(argv);
  } catch (e) {
    if (e instanceof UsageError) return fail(`${e.message} (try --help)`);
    throw e;
  }
  if (inv.command === 'help') return print(helpText(), 0);
  if (inv.command === 'version') return print(`qemu-modwatch ${VERSION}\n`, 0);
  const paths = makePaths({ root: inv.root ?? envRoot, config: inv.config, uid, env: process.env });
  if (inv.command === 'hook') {
    const [driver, ...args] = inv.hookArgs;
    if (driver !== 'qemu' && driver !== 'daemon') return fail(`hook needs 'qemu' or 'daemon', not '${driver ?? ''}' (try --help)`);
    return hook(driver, args, paths);
  }
  let config;
  try {
    config = loadConfig(paths.configFile, uid);
  } catch (e) {
    if (e instanceof ConfigError) return fail(e.message);
    throw e;
  }
  const ctx = { paths, config, env: process.env };
  const out = inv.command === 'accept' ? await runAccept(ctx, inv.json) : runCheck(ctx, inv.json);
  return print(out.stdout, out.exitCode);
}

async function hook(driver: Driver, args: string[], paths: Paths): Promise<number> {
  // Belt and braces: whatever any code path might print goes to stderr.
  const toStderr = process.stderr.write.bind(process.stderr) as typeof process.stdout.write;
  process.stdout.write = toStderr;
  hookPaths = paths;
  const uid = process.getuid?.() ?? 0;
  return runHook(driver, args, {
    paths,
    context: () => ({ paths, config: loadConfig(paths.configFile, uid), env: process.env }),
  });
}

let hookPaths: Paths | null = null;

function print(text: string, code: number): number {
  process.stdout.write(text);
  return code;
}

function fail(message: string): number {
  process.stderr.write(`qemu-modwatch: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  return 3;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const message = `internal error: ${e instanceof Error ? e.message : String(e)}`;
    // A hook never fails a guest start for our own bug; it is logged instead.
    if (hookPaths) {
      log(hookPaths, { priority: 'err', message: `${message}; not blocking (fail = open)` });
      process.exitCode = 0;
    } else {
      process.exitCode = fail(message);
    }
  },
);
