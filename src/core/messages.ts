import { type ModuleChange } from './compare';
import type { Observation } from './decide';

// What a run says: the journal line, the refusal libvirt shows, the last
// action's summary. Pure, over what was planned and what was done.

export type Priority = 'err' | 'warning' | 'notice' | 'info';

export interface LogLine {
  priority: Priority;
  message: string;
  /** Extra journal fields, upper-case names without the QEMU_MODWATCH_ prefix. */
  fields?: Record<string, string>;
}

/** What carrying out a plan did: cache entries deleted, paths nudged, errors (none when everything was done). */
export interface Done {
  deleted: string[];
  nudged: string[];
  errors: string[];
}

const MAX_LISTED = 5;

/** A few items of a list that can be long (one per module or cache entry), and how many more. */
export function listed(items: string[]): string {
  const more = items.length > MAX_LISTED ? `; and ${items.length - MAX_LISTED} more` : '';
  return `${items.slice(0, MAX_LISTED).join('; ')}${more}`;
}

export function problemText(notes: string[]): string {
  return notes.length === 0 ? '' : `; problems: ${listed(notes)}`;
}

/** What kept this run from seeing everything: worth a line, since it can hide a change. */
export function problems(o: Pick<Observation, 'fingerprint' | 'cache'>, changes: ModuleChange[]): string[] {
  const out: string[] = [];
  for (const d of o.fingerprint.dirs) if (d.error) out.push(`${d.error}, its modules were not checked`);
  for (const c of changes) if (c.after?.error) out.push(`${c.dir}/${c.name}: ${c.after.error}`);
  if (o.cache.error) out.push(o.cache.error);
  for (const e of o.cache.entries) if (e.error) out.push(`cache entry ${e.file}: ${e.error}`);
  return out;
}

export function byKind(changes: ModuleChange[]): Record<'added' | 'removed' | 'replaced', string[]> {
  const pick = (k: string) => changes.filter((c) => c.kind === k).map((c) => `${c.dir}/${c.name}`);
  return { added: pick('added'), removed: pick('removed'), replaced: pick('replaced') };
}

/** Names listed per kind of change: a line stays readable (and within syslog's size) after a big upgrade. */
const MAX_NAMES = 20;

/** "added hw-usb-smartcard.so; replaced hw-display-qxl.so", or what else made entries stale. */
export function changeText(changes: ModuleChange[]): string {
  const k = byKind(changes);
  const base = (p: string) => p.slice(p.lastIndexOf('/') + 1);
  const names = (list: string[]) =>
    list.length > MAX_NAMES
      ? `${list.slice(0, MAX_NAMES).map(base).join(', ')} and ${list.length - MAX_NAMES} more`
      : list.map(base).join(', ');
  const parts = (['added', 'removed', 'replaced'] as const)
    .filter((x) => k[x].length)
    .map((x) => `${x} ${names(k[x])}`);
  return parts.length ? `QEMU modules changed (${parts.join('; ')})` : 'stale capabilities cache entries';
}

/**
 * "deleted 2 capabilities cache entries, nudged /usr/bin/qemu-system-x86_64": the journal's and the last
 * action's words.
 */
export function actionText(done: Done): string {
  return (
    `deleted ${done.deleted.length} capabilities cache ` +
    `entries${done.nudged.length ? `, nudged ${done.nudged.join(', ')}` : ''}`
  );
}
