import { runAccept, runCheck } from './cli/commands';
import { helpText, parseCommandLine, UsageError } from './cli/options';
import { ConfigError, loadConfig } from './system/config';
import { makePaths } from './system/paths';
import { VERSION } from './version';

// The entry: a command, and every failure mapped to an exit code. Commands
// print their result on stdout; errors are one line on stderr.

async function main(argv: string[]): Promise<number> {
  let inv;
  try {
    inv = parseCommandLine(argv);
  } catch (e) {
    if (e instanceof UsageError) return fail(`${e.message} (try --help)`);
    throw e;
  }
  if (inv.command === 'help') return print(helpText(), 0);
  if (inv.command === 'version') return print(`qemu-modwatch ${VERSION}\n`, 0);
  if (inv.command === 'hook') return fail('hook mode is not implemented yet');
  const uid = process.getuid?.() ?? 0;
  const paths = makePaths({ root: inv.root, config: inv.config, uid, env: process.env });
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
    process.exitCode = fail(`internal error: ${e instanceof Error ? e.message : String(e)}`);
  },
);
