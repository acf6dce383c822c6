import { parseArgs } from 'node:util';

// The one table of commands and options: --help is printed from it (and
// later the man page and shell completion), so they cannot drift apart.

export interface CommandSpec {
  name: string;
  args?: string;
  summary: string;
}

export interface OptionSpec {
  name: string;
  type: 'boolean' | 'string';
  arg?: string;
  summary: string;
}

export const COMMANDS: CommandSpec[] = [
  { name: 'check', summary: 'Report module directories, changes since the baseline and stale cache entries; changes nothing (the default)' },
  { name: 'accept', summary: 'Record the current modules as the baseline' },
  { name: 'hook', args: 'qemu|daemon ARGS...', summary: 'Run as the libvirt hook (what the hook dispatchers call)' },
];

export const OPTIONS: OptionSpec[] = [
  { name: 'check', type: 'boolean', summary: 'Same as the check command' },
  { name: 'json', type: 'boolean', summary: 'Print one JSON object (documented in README) instead of text' },
  { name: 'root', type: 'string', arg: 'DIR', summary: 'Resolve every system path under DIR (a sysroot or mounted image)' },
  { name: 'config', type: 'string', arg: 'FILE', summary: 'Read FILE instead of /etc/qemu-modwatch.conf' },
  { name: 'help', type: 'boolean', summary: 'Show this help and exit' },
  { name: 'version', type: 'boolean', summary: 'Show the version and exit' },
];

export class UsageError extends Error {}

export interface Invocation {
  command: 'check' | 'accept' | 'hook' | 'help' | 'version';
  json: boolean;
  root: string | undefined;
  config: string | undefined;
  /** For `hook`: the driver and libvirt's argv, untouched. */
  hookArgs: string[];
}

export function parseCommandLine(argv: string[]): Invocation {
  // Everything after `hook` is libvirt's argv and must not be parsed as
  // options: a domain may well be called "--help".
  const hookAt = findHookWord(argv);
  const own = hookAt >= 0 ? argv.slice(0, hookAt) : argv;
  let parsed;
  try {
    parsed = parseArgs({
      args: own,
      allowPositionals: true,
      strict: true,
      options: Object.fromEntries(OPTIONS.map((o) => [o.name, { type: o.type }])),
    });
  } catch (e) {
    throw new UsageError(firstLine((e as Error).message));
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const inv: Invocation = {
    command: 'check',
    json: v.json === true,
    root: v.root as string | undefined,
    config: v.config as string | undefined,
    hookArgs: hookAt >= 0 ? argv.slice(hookAt + 1) : [],
  };
  if (v.help) return { ...inv, command: 'help' };
  if (v.version) return { ...inv, command: 'version' };
  if (hookAt >= 0) {
    if (parsed.positionals.length) throw new UsageError(`unexpected argument '${parsed.positionals[0]}' before hook`);
    return { ...inv, command: 'hook' };
  }
  const [cmd, ...rest] = parsed.positionals;
  if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
  if (cmd === undefined || cmd === 'check') return inv;
  if (cmd === 'accept') {
    if (v.check) throw new UsageError('--check and accept do not go together');
    return { ...inv, command: 'accept' };
  }
  throw new UsageError(`unknown command '${cmd}'`);
}

/** Index of the `hook` command word, skipping the values of our own options. */
function findHookWord(argv: string[]): number {
  const takesValue = new Set(OPTIONS.filter((o) => o.type === 'string').map((o) => `--${o.name}`));
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return -1;
    if (takesValue.has(a)) i++;
    else if (!a.startsWith('-')) return a === 'hook' ? i : -1;
  }
  return -1;
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, '');
}

export function helpText(): string {
  const cmdWidth = Math.max(...COMMANDS.map((c) => (c.name + (c.args ? ' ' + c.args : '')).length));
  const optLabel = (o: OptionSpec) => `--${o.name}${o.arg ? ' ' + o.arg : ''}`;
  const optWidth = Math.max(...OPTIONS.map((o) => optLabel(o).length));
  return [
    'Usage: qemu-modwatch [OPTIONS] [COMMAND]',
    '',
    "Keeps libvirt's QEMU capabilities cache in step with the QEMU modules installed.",
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${(c.name + (c.args ? ' ' + c.args : '')).padEnd(cmdWidth)}  ${c.summary}`),
    '',
    'Options:',
    ...OPTIONS.map((o) => `  ${optLabel(o).padEnd(optWidth)}  ${o.summary}`),
    '',
    'Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (could not check, bad arguments).',
    '',
  ].join('\n');
}
