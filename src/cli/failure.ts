import { writeTextfile } from '../app/commands';
import { escapeControl } from '../core/text';
import type { Paths } from '../host/paths';
import { log } from '../os/log';
import type { Output } from './commands';
import { nagiosFailure } from './format-nagios';
import { prometheusFailure } from './format-prometheus';
import type { Invocation } from './options';

// How each command and output format says that it could not do its work:
// refresh runs inside package transactions and exits 0 whatever happens;
// monitoring gets UNKNOWN in the form it reads; everything else one line
// on stderr and exit code 3.

/** One line, and nothing a file or domain name could smuggle into a terminal. */
export function errorLine(message: string): string {
  return `qemu-modwatch: ${escapeControl(message.replace(/\s*\n\s*/g, ' '))}\n`;
}

/** Bad arguments: a monitoring plugin answers UNKNOWN on stdout, even to those. */
export function usageFailure(argv: string[], message: string): Output {
  const nagios = argv.some((a, i) => a === '--format=nagios' || (a === 'nagios' && argv[i - 1] === '--format'));
  return { stdout: nagios ? nagiosFailure(message) : '', stderr: errorLine(`${message} (try --help)`), exitCode: 3 };
}

/** A command could not do its work (bad config, timeout, our own bug). */
export function commandFailure(inv: Invocation, paths: Paths, message: string): Output {
  const oneLine = message.replace(/\s*\n\s*/g, ' ');
  if (inv.command === 'refresh') {
    log(paths, { priority: 'err', message: `refresh failed: ${oneLine}` });
    return { stdout: '', stderr: errorLine(`refresh failed: ${oneLine}`), exitCode: 0 };
  }
  if (inv.textfile) writeTextfile(inv.textfile, prometheusFailure());
  const stdout =
    inv.format === 'nagios'
      ? nagiosFailure(oneLine)
      : inv.format === 'prometheus' && !inv.textfile
        ? prometheusFailure()
        : '';
  return { stdout, stderr: errorLine(oneLine), exitCode: 3 };
}
