import { statOrNull } from './file-info';
import type { LogLine, Priority } from '../core/messages';
import { escapeControl } from '../core/text';

// Warnings must reach the admin: libvirt keeps a hook's stderr at debug
// level only. The journal when there is one (structured fields), else
// syslog, else stderr. Node has no Unix datagram sockets, so `logger` is
// spawned; that happens only on the rare change or fault path.

export const IDENTIFIER = 'qemu-modwatch';
const PRIORITY_NUMBER: Record<Priority, number> = { err: 3, warning: 4, notice: 5, info: 6 };

/** A line for the log: what core/messages.ts says. */
export type LogEvent = LogLine;

export type LogTarget = 'journal' | 'syslog' | 'stderr';

/** Where a system path is on this machine (host/paths.ts's Paths): the log sockets are looked for under --root. */
export interface Rooted {
  host(p: string): string;
}

export function logTarget(paths: Rooted): LogTarget {
  if (statOrNull(paths.host('/run/systemd/journal/socket'))) return 'journal';
  if (statOrNull(paths.host('/dev/log'))) return 'syslog';
  return 'stderr';
}

export function log(paths: Rooted, event: LogEvent): void {
  const message = escapeControl(event.message);
  const target = logTarget(paths);
  if (target !== 'stderr' && sendToLogger(target, message, event)) return;
  process.stderr.write(`${IDENTIFIER}: ${event.priority}: ${message}\n`);
}

function sendToLogger(target: LogTarget, message: string, event: LogEvent): boolean {
  // Loaded only on this rare path: it costs every Node start milliseconds.
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const run = (args: string[], input: string) =>
    spawnSync('logger', args, { input, stdio: ['pipe', 'ignore', 'ignore'], timeout: 5000 }).status === 0;
  if (target === 'journal') {
    const lines = [
      `MESSAGE=${message}`,
      `SYSLOG_IDENTIFIER=${IDENTIFIER}`,
      `PRIORITY=${PRIORITY_NUMBER[event.priority]}`,
      ...Object.entries(event.fields ?? {}).map(([k, v]) => `QEMU_MODWATCH_${k}=${escapeControl(v)}`),
    ];
    return run(['--journald'], lines.join('\n') + '\n');
  }
  return run(['-t', IDENTIFIER, '-p', `daemon.${event.priority}`, '--', message], '');
}
