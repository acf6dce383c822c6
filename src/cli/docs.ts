import { COMMANDS, EXIT_STATUS, OPTIONS, commandLabel, type CommandName, type OptionSpec } from './options';

// The man page qemu-modwatch(8) and the bash completion, generated at build
// time (build/gen-docs.mjs) from the same table --help prints, so none of
// the three can name an option the program does not have.

const ALL: CommandName[] = COMMANDS.map((c) => c.name);

/** Roff-escapes running text: backslashes, and a leading dot or quote that would start a request. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/gm, '\\&$1');
}

function optionTerm(o: OptionSpec): string {
  const name = `\\-\\-${o.name.replace(/-/g, '\\-')}`;
  return o.arg ? `.BI "${name} " ${o.arg}` : `.B ${name}`;
}

function appliesTo(o: OptionSpec): string {
  const cmds = o.commands ?? ALL.filter((c) => c !== 'hook');
  return cmds.length >= ALL.length - 1 ? '' : ` (${cmds.join(', ')})`;
}

export function manPage(version: string): string {
  const out: string[] = [
    '.\\" Generated from src/cli/options.ts by build/gen-docs.mjs; do not edit.',
    `.TH QEMU\\-MODWATCH 8 "" "qemu\\-modwatch ${roff(version)}" "System Administration"`,
    '.SH NAME',
    "qemu\\-modwatch \\- keep libvirt's QEMU capabilities cache in step with the installed QEMU modules",
    '.SH SYNOPSIS',
    '.B qemu\\-modwatch',
    '.RI [ OPTIONS ]',
    '.RI [ COMMAND ]',
    '.SH DESCRIPTION',
    roff(
      'libvirt caches what each QEMU emulator can do. QEMU loads part of its devices, displays and block ' +
        'drivers from modules, ' +
        'and libvirt notices only some of the ways those modules change: it compares the mtime of one ' +
        'module directory and the ctime of the emulator. ' +
        'qemu-modwatch fingerprints the module directories and emulators, compares them with a recorded baseline, ' +
        'and deletes the capabilities cache entries that no longer describe what QEMU would load.',
    ),
    '.PP',
    roff(
      'Installed as libvirt hooks it acts at every daemon start and before every guest start. ' +
        'Run by hand or by monitoring it reports module changes, stale cache entries and whether libvirt ' +
        'will re-probe them by itself, ' +
        'modules QEMU will refuse, and running guests whose later module loads (a hot-plug) will fail.',
    ),
    '.SH COMMANDS',
  ];
  for (const c of COMMANDS) {
    out.push('.TP', `.B ${roff(commandLabel(c))}`, roff(c.details));
  }
  out.push('.SH OPTIONS');
  for (const o of OPTIONS) {
    out.push(
      '.TP',
      optionTerm(o),
      roff(o.summary + appliesTo(o) + (o.values ? `. Values: ${o.values.join(', ')}.` : '')),
    );
  }
  out.push(
    '.SH OUTPUT FORMATS',
    '.TP',
    '.B text',
    roff(
      'For people: module directories, emulators, changes, cache entries, running guests, findings and the next step.',
    ),
    '.TP',
    '.B json',
    roff(
      'One JSON object; its keys are only ever added, never renamed. The JSON Schema is ' +
        'docs/report.schema.json in the source.',
    ),
    '.TP',
    '.B nagios',
    roff(
      'A monitoring plugin\'s output: one line "QEMU-MODWATCH STATUS - summary | perfdata" with the perfdata ' +
        "'modules', 'module_dirs', 'changed', 'stale_caches', 'stale_caches_served', 'refused_modules', " +
        "'guests', 'guests_at_risk' and 'guests_emulator_replaced', " +
        'then one line per finding. Exit status 0, 1, 2 or 3.',
    ),
    '.TP',
    '.B prometheus',
    roff(
      "Metrics in Prometheus' text format, all named qemu_modwatch_*: module counts per directory, pending " +
        'changes, stale cache entries, ' +
        'modules QEMU will refuse, guests at risk, the time of the check ' +
        '(qemu_modwatch_last_check_timestamp_seconds) and qemu_modwatch_info with the version. ' +
        "With --textfile they are written atomically for node_exporter's textfile collector.",
    ),
    '.SH EXIT STATUS',
  );
  for (const [code, text] of EXIT_STATUS) out.push('.TP', `.B ${code}`, roff(text));
  out.push(
    '.SH ENVIRONMENT',
    '.TP',
    '.B QEMU_MODWATCH_ROOT',
    roff('Same as --root, for callers that cannot pass options.'),
    '.TP',
    '.B QEMU_MODULE_DIR',
    roff("QEMU's own variable: a module directory QEMU loads from first; it is fingerprinted too."),
    '.SH FILES',
    '.TP',
    '.I /etc/qemu\\-modwatch.conf',
    roff(
      "Configuration: extra module directories and emulators, the policy on change, the nudge, libvirt's " +
        'module directory.',
    ),
    '.TP',
    '.I /var/lib/qemu\\-modwatch/state.json',
    roff('The baseline and the last action taken.'),
    '.TP',
    '.I /var/cache/libvirt/qemu/capabilities/',
    roff("libvirt's QEMU capabilities cache: one <sha256 of the emulator path>.xml per emulator."),
    '.TP',
    '.I /run/libvirt/qemu/*.pid',
    roff("libvirt's pid files of running guests; /proc is read for their binaries and for other QEMU processes."),
    '.TP',
    '.I /etc/libvirt/hooks/qemu.d/, /etc/libvirt/hooks/daemon.d/',
    roff('Where the hook dispatchers are installed.'),
    '.SH SEE ALSO',
    '.BR libvirtd (8),',
    '.BR virsh (1),',
    '.BR qemu (1)',
    '',
  );
  return out.join('\n');
}

/** bash completion: commands first, then the options that go with the command given. */
export function bashCompletion(): string {
  const byCommand = ALL.map((c) => {
    const opts = OPTIONS.filter((o) => !o.commands || o.commands.includes(c)).map((o) => `--${o.name}`);
    return `    ${c}) opts="${opts.join(' ')}" ;;`;
  });
  const noCommand = OPTIONS.filter((o) => !o.commands || o.commands.includes('check')).map((o) => `--${o.name}`);
  const valueCases = OPTIONS.filter((o) => o.type === 'string').map((o) => {
    const action = o.values
      ? `COMPREPLY=($(compgen -W "${o.values.join(' ')}" -- "$cur"))`
      : o.complete === 'dir'
        ? 'COMPREPLY=($(compgen -d -- "$cur"))'
        : o.complete === 'file'
          ? 'COMPREPLY=($(compgen -f -- "$cur"))'
          : 'COMPREPLY=()';
    return `    --${o.name}) ${action}; return 0 ;;`;
  });
  const valued = OPTIONS.filter((o) => o.type === 'string').map((o) => `--${o.name}`);
  return `# bash completion for qemu-modwatch
# Generated from src/cli/options.ts by build/gen-docs.mjs; do not edit.
_qemu_modwatch() {
  local cur prev cmd i word
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
${valueCases.join('\n')}
  esac
  cmd=
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    case "$word" in
      ${valued.join('|')}) i=$((i + 1)) ;;
      -*) ;;
      *) cmd="$word"; break ;;
    esac
  done
  if [ "$cmd" = hook ]; then
    [ "$i" -eq $((COMP_CWORD - 1)) ] && COMPREPLY=($(compgen -W "qemu daemon" -- "$cur"))
    return 0
  fi
  local opts
  case "$cmd" in
${byCommand.join('\n')}
    *) opts="${noCommand.join(' ')}" ;;
  esac
  if [[ "$cur" == -* || -n "$cmd" ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "${ALL.join(' ')} $opts" -- "$cur"))
  fi
  return 0
}
complete -F _qemu_modwatch qemu-modwatch
`;
}
