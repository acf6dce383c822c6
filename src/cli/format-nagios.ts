import { escapeControl } from '../core/text';
import { headline, summedFindings } from './format-text';
import type { Report } from './report';

// A monitoring plugin's output (Monitoring Plugins development guidelines):
// one status line "SERVICE STATUS - summary | perfdata", details on the
// lines after it, exit 0/1/2/3. '|' starts perfdata for Nagios, so it never
// appears in text.

export const SERVICE = 'QEMU-MODWATCH';
const MAX_SUMMARY = 79;
const MAX_DETAIL_LINES = 50;

interface Perf {
  label: string;
  value: number;
  warn?: string;
  crit?: string;
  min?: number;
}

export function formatNagios(r: Report): string {
  const c = r.counts;
  // Threshold "0": alert when the value is above 0, as the exit status does.
  const perf: Perf[] = [
    { label: 'modules', value: c.modules, min: 0 },
    { label: 'module_dirs', value: c.moduleDirs, min: 0 },
    { label: 'changed', value: c.changed, warn: '0', min: 0 },
    { label: 'stale_caches', value: c.staleCacheEntries, warn: '0', min: 0 },
    { label: 'stale_caches_served', value: c.staleCacheEntriesServed, warn: '0', min: 0 },
    { label: 'refused_modules', value: c.refusedModules, crit: '0', min: 0 },
    { label: 'guests', value: c.guests, min: 0 },
    { label: 'guests_at_risk', value: c.guestsAtRisk, warn: '0', min: 0 },
    { label: 'guests_emulator_replaced', value: c.guestsEmulatorReplaced, warn: '0', min: 0 },
  ];
  const details = [
    ...summedFindings(r, false).map((f) => `${f.level}: ${f.message}`),
    ...r.advice.map((a) => `Next: ${a}`),
  ].map(clean);
  const shown = details.slice(0, MAX_DETAIL_LINES);
  if (details.length > shown.length) shown.push(`... and ${details.length - shown.length} more`);
  return (
    [`${SERVICE} ${r.status} - ${summary(headline(r))} | ${perf.map(perfdata).join(' ')}`, ...shown].join('\n') + '\n'
  );
}

/** The line a plugin prints when it could not check at all. */
export function nagiosFailure(message: string): string {
  return `${SERVICE} UNKNOWN - ${summary(message)}\n`;
}

export function perfdata(p: Perf): string {
  const fields = [`${p.value}`, p.warn ?? '', p.crit ?? '', p.min === undefined ? '' : `${p.min}`];
  while (fields.length > 1 && fields[fields.length - 1] === '') fields.pop();
  return `'${p.label}'=${fields.join(';')}`;
}

function summary(text: string): string {
  const s = clean(text);
  return s.length <= MAX_SUMMARY ? s : s.slice(0, MAX_SUMMARY - 3) + '...';
}

function clean(text: string): string {
  return escapeControl(text).replace(/\|/g, '/');
}
