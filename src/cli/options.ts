import { parseArgs } from 'node:util';

// The one table of commands and options: --help, the man page and the bash
// completion are all generated from it (src/cli/docs.ts), so they cannot
// drift apart, and the parser accepts exactly what it lists.

export type CommandName = 'check' | 'accept' | 'refresh' | 'invalidate' | 'status' | 'install' | 'uninstall' | 'hook';
export type Format = 'text' | 'json' | 'nagios' | 'prometheus';
export const FORMATS: Format[] = ['text', 'json', 'nagios', 'prometheus'];
export const NUDGE_MODES = ['emulator-ctime', 'moddir-mtime', 'none'] as const;
export type NudgeOption = (typeof NUDGE_MODES)[number];

export interface CommandSpec {
  name: CommandName;
  args?: string;
  summary: string;
  /** A paragraph for the man page. */
  details: string;
}

export interface OptionSpec {
  name: string;
  type: 'boolean' | 'string';
  arg?: string;
  summary: string;
  /** The values it takes, when they are a fixed list (completion offers them). */
  values?: readonly string[];
  /** What completion offers for its argument when there is no fixed list. */
  complete?: 'file' | 'dir';
  /** The commands it goes with; undefined: all of them. */
  commands?: CommandName[];
}

export const COMMANDS: CommandSpec[] = [
  {
    name: 'check',
    summary:
      'Report module directories, changes since the baseline, stale cache entries and running guests at ' +
      'risk; changes nothing (the default)',
    details:
      "Reads the module directories, the emulators, libvirt's capabilities cache and the running QEMU " +
      'processes, compares them with the baseline and prints the findings. ' +
      'For every capabilities cache entry it says whether libvirt re-probes it by itself on its next lookup ' +
      'or keeps serving it until it is invalidated, ' +
      'and for every running guest whether modules it loads later (a hot-plug) will fail. It writes no ' +
      'state and deletes nothing.',
  },
  {
    name: 'accept',
    summary: 'Record the current modules as the baseline',
    details:
      'Records the module directories and emulators as they are now as the baseline; later checks report ' +
      'changes against it.',
  },
  {
    name: 'refresh',
    summary:
      'Check, invalidate stale cache entries, nudge libvirt and record the baseline (for package-manager ' +
      'hooks and timers)',
    details:
      'Does what the hooks do at a daemon start, on demand: deletes the capabilities cache entries that no ' +
      'longer describe the installed modules, ' +
      'nudges the running daemon so that it re-probes on its next lookup, and records the baseline. ' +
      'Meant for package-manager hooks and timers, it exits 0 whatever it finds or fails to do; only bad ' +
      'arguments make it exit 3. Errors are printed and logged.',
  },
  {
    name: 'invalidate',
    summary: "Delete capabilities cache entries (all, or one emulator's) and nudge libvirt",
    details:
      "Deletes libvirt's capabilities cache entries, all of them or only those of the emulator given with " +
      '--emulator, and nudges the running daemon, ' +
      'whether or not anything changed. Only regular files named like a cache entry are ever deleted. With ' +
      '--dry-run it only prints what it would do.',
  },
  {
    name: 'status',
    summary: "Show the baseline's age and the last action taken",
    details:
      'Shows when the baseline was recorded, the last action taken (by a hook, refresh or invalidate), ' +
      'when the hooks last ran a full check, and whether each running libvirtd or virtqemud can be running ' +
      'the hooks (it may have started before they were installed).',
  },
  {
    name: 'install',
    summary: 'Install the executable, the hook dispatchers and the example config, recording them in a manifest',
    details:
      'Copies this executable to the prefix (default /usr/libexec/qemu-modwatch), installs the hook ' +
      'dispatchers where this libvirt runs them ' +
      '(drop-in directories since libvirt 6.5, else the single hook files), links /usr/sbin/qemu-modwatch ' +
      'and installs the example config unless one exists. ' +
      "It refuses to replace an admin's own single hook file unless --chain is given, which keeps it and " +
      'runs it first. A second install changes nothing.',
  },
  {
    name: 'uninstall',
    summary: 'Remove exactly what install placed (the manifest says what); --purge also the config and state',
    details:
      'Removes the files install placed and recorded in its manifest, leaving any that were changed since, ' +
      'and restores a chained hook. With --purge it also removes the config and the state directory.',
  },
  {
    name: 'hook',
    args: 'qemu|daemon ARGS...',
    summary: 'Run as the libvirt hook (what the hook dispatchers call)',
    details:
      "Runs as libvirt's qemu or daemon hook with libvirt's arguments; everything after the driver is " +
      'passed on untouched. It never writes to standard output.',
  },
];

/** The commands that report on or act on the cache (install and uninstall only place files). */
const ALL_BUT_HOOK: CommandName[] = ['check', 'accept', 'refresh', 'invalidate', 'status'];

export const OPTIONS: OptionSpec[] = [
  { name: 'check', type: 'boolean', summary: 'Same as the check command', commands: ['check'] },
  {
    name: 'format',
    type: 'string',
    arg: 'FORMAT',
    values: FORMATS,
    summary:
      'Output format: text (default), json, nagios (a monitoring plugin status line) or prometheus ' +
      '(node_exporter textfile metrics); nagios and prometheus go with check only',
    commands: ALL_BUT_HOOK,
  },
  {
    name: 'json',
    type: 'boolean',
    summary: 'Same as --format json: one JSON object (docs/report.schema.json)',
    commands: ALL_BUT_HOOK,
  },
  {
    name: 'verbose',
    type: 'boolean',
    summary:
      'Text: list every module of a change, finding or guest at risk, where a whole upgrade is otherwise ' +
      'one line per directory',
    commands: ['check'],
  },
  {
    name: 'textfile',
    type: 'string',
    arg: 'DIR',
    complete: 'dir',
    summary:
      "Also write Prometheus metrics atomically to DIR/qemu_modwatch.prom (node_exporter's textfile " +
      'collector); exits 0 once written',
    commands: ['check', 'refresh'],
  },
  {
    name: 'timeout',
    type: 'string',
    arg: 'SECONDS',
    summary: 'Give up after SECONDS and report UNKNOWN (exit 3; refresh exits 0)',
    commands: ['check', 'refresh', 'status'],
  },
  {
    name: 'emulator',
    type: 'string',
    arg: 'PATH',
    complete: 'file',
    summary: "Only this emulator's cache entries (the path as libvirt spells it)",
    commands: ['invalidate'],
  },
  {
    name: 'nudge',
    type: 'string',
    arg: 'MODE',
    values: NUDGE_MODES,
    summary:
      "How to make the running daemon re-probe: emulator-ctime, moddir-mtime or none (default: the config's " +
      '[policy] nudge)',
    commands: ['invalidate', 'refresh'],
  },
  {
    name: 'dry-run',
    type: 'boolean',
    summary: 'Print what would be done; change nothing',
    commands: ['invalidate', 'install', 'uninstall'],
  },
  {
    name: 'prefix',
    type: 'string',
    arg: 'DIR',
    complete: 'dir',
    summary: 'Install the executable into DIR (default /usr/libexec/qemu-modwatch)',
    commands: ['install'],
  },
  {
    name: 'chain',
    type: 'boolean',
    summary: "Keep an admin's own single hook file and run it before ours",
    commands: ['install'],
  },
  {
    name: 'purge',
    type: 'boolean',
    summary: 'Also remove the config and the state directory',
    commands: ['uninstall'],
  },
  {
    name: 'root',
    type: 'string',
    arg: 'DIR',
    complete: 'dir',
    summary: 'Resolve every system path under DIR (a sysroot or mounted image), /proc included',
  },
  {
    name: 'config',
    type: 'string',
    arg: 'FILE',
    complete: 'file',
    summary: 'Read FILE instead of /etc/qemu-modwatch.conf',
  },
  { name: 'help', type: 'boolean', summary: 'Show this help and exit' },
  { name: 'version', type: 'boolean', summary: 'Show the version and exit' },
];

/** Exit status, as --help and the man page tell it. */
export const EXIT_STATUS: [string, string][] = [
  [
    '0',
    'OK: nothing needs attention (refresh: always, unless the arguments are wrong; --textfile: the metrics ' +
      'were written)',
  ],
  [
    '1',
    'WARNING: modules changed, stale cache entries, guests at risk or running a replaced emulator, unreadable files',
  ],
  ['2', 'CRITICAL: modules installed that QEMU will refuse to load'],
  ['3', 'UNKNOWN: could not check (bad arguments, bad config, timeout)'],
];

export class UsageError extends Error {}

export interface Invocation {
  command: CommandName | 'help' | 'version';
  format: Format;
  /** --format or --json was given (with --textfile, stdout stays quiet otherwise). */
  formatGiven: boolean;
  root: string | undefined;
  config: string | undefined;
  textfile: string | undefined;
  /** Seconds. */
  timeout: number | undefined;
  emulator: string | undefined;
  nudge: NudgeOption | undefined;
  dryRun: boolean;
  prefix: string | undefined;
  chain: boolean;
  purge: boolean;
  verbose: boolean;
  /** For `hook`: the driver and libvirt's argv, untouched. */
  hookArgs: string[];
  /** The arguments without --timeout: what the timed child process runs. */
  untimedArgs: string[];
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
      tokens: true,
      options: Object.fromEntries(OPTIONS.map((o) => [o.name, { type: o.type }])),
    });
  } catch (e) {
    throw new UsageError(firstLine((e as Error).message));
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const str = (k: string) => v[k] as string | undefined;
  const inv: Invocation = {
    command: 'check',
    format: 'text',
    formatGiven: v.json === true || v.format !== undefined,
    root: str('root'),
    config: str('config'),
    textfile: str('textfile'),
    timeout: undefined,
    emulator: str('emulator'),
    nudge: undefined,
    dryRun: v['dry-run'] === true,
    prefix: str('prefix'),
    chain: v.chain === true,
    purge: v.purge === true,
    verbose: v.verbose === true,
    hookArgs: hookAt >= 0 ? argv.slice(hookAt + 1) : [],
    untimedArgs: withoutTimeout(argv, parsed.tokens ?? []),
  };
  if (v.help) return { ...inv, command: 'help' };
  if (v.version) return { ...inv, command: 'version' };

  if (hookAt >= 0) {
    if (parsed.positionals.length) throw new UsageError(`unexpected argument '${parsed.positionals[0]}' before hook`);
    inv.command = 'hook';
  } else {
    const [cmd, ...rest] = parsed.positionals;
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
    if (cmd !== undefined && !COMMANDS.some((c) => c.name === cmd)) throw new UsageError(`unknown command '${cmd}'`);
    inv.command = (cmd as CommandName | undefined) ?? 'check';
  }
  const command = inv.command as CommandName;
  for (const o of OPTIONS) {
    if (v[o.name] === undefined || !o.commands || o.commands.includes(command)) continue;
    throw new UsageError(
      o.name === 'check' ? `--check and ${command} do not go together` : `--${o.name} does not go with ${command}`,
    );
  }

  if (v.format !== undefined) {
    if (!FORMATS.includes(v.format as Format))
      throw new UsageError(`--format ${String(v.format)}: expected one of ${FORMATS.join(', ')}`);
    if (v.json && v.format !== 'json')
      throw new UsageError(`--json and --format ${String(v.format)} do not go together`);
    inv.format = v.format as Format;
  } else if (v.json) {
    inv.format = 'json';
  }
  if ((inv.format === 'nagios' || inv.format === 'prometheus') && command !== 'check') {
    throw new UsageError(`--format ${inv.format} goes with check only`);
  }
  if (v.timeout !== undefined) {
    const t = Number(v.timeout);
    if (!/^\d+(\.\d+)?$/.test(String(v.timeout)) || !(t > 0) || t > 86_400)
      throw new UsageError(`--timeout ${String(v.timeout)}: expected seconds, more than 0 and at most 86400`);
    inv.timeout = t;
  }
  if (inv.emulator !== undefined && !inv.emulator.startsWith('/'))
    throw new UsageError(`--emulator ${inv.emulator}: expected an absolute path`);
  if (v.nudge !== undefined) {
    if (!NUDGE_MODES.includes(v.nudge as NudgeOption))
      throw new UsageError(`--nudge ${String(v.nudge)}: expected one of ${NUDGE_MODES.join(', ')}`);
    inv.nudge = v.nudge as NudgeOption;
  }
  if (inv.textfile === '') throw new UsageError('--textfile needs a directory');
  if (inv.prefix !== undefined && !inv.prefix.startsWith('/'))
    throw new UsageError(`--prefix ${inv.prefix}: expected an absolute path`);
  return inv;
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

type Token = { kind: string; index: number; name?: string; inlineValue?: boolean };

function withoutTimeout(argv: string[], tokens: Token[]): string[] {
  const drop = new Set<number>();
  for (const t of tokens) {
    if (t.kind === 'option' && t.name === 'timeout') {
      drop.add(t.index);
      if (t.inlineValue === false) drop.add(t.index + 1);
    }
  }
  return argv.filter((_, i) => !drop.has(i));
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, '');
}

export function optionLabel(o: OptionSpec): string {
  return `--${o.name}${o.arg ? ' ' + o.arg : ''}`;
}

export function commandLabel(c: CommandSpec): string {
  return c.name + (c.args ? ' ' + c.args : '');
}

export function helpText(): string {
  const cmdWidth = Math.max(...COMMANDS.map((c) => commandLabel(c).length));
  const optWidth = Math.max(...OPTIONS.map((o) => optionLabel(o).length));
  const applies = (o: OptionSpec) =>
    o.commands && o.commands.join() !== ALL_BUT_HOOK.join() ? ` [${o.commands.join(', ')}]` : '';
  return [
    'Usage: qemu-modwatch [OPTIONS] [COMMAND]',
    '',
    "Keeps libvirt's QEMU capabilities cache in step with the QEMU modules installed.",
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${commandLabel(c).padEnd(cmdWidth)}  ${c.summary}`),
    '',
    'Options:',
    ...OPTIONS.map((o) => `  ${optionLabel(o).padEnd(optWidth)}  ${o.summary}${applies(o)}`),
    '',
    'Exit status:',
    ...EXIT_STATUS.map(([code, text]) => `  ${code}  ${text}`),
    '',
  ].join('\n');
}
