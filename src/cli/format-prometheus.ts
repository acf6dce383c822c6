import { FINDING_CODES, EXIT_CODE } from '../core/decide';
import { VERSION } from '../version';
import type { Report } from './report';

// Metrics in the Prometheus text exposition format, for node_exporter's
// textfile collector: qemu_modwatch_ prefix, base units (seconds), HELP
// and TYPE for every family, label values escaped. Series that may be zero
// are always written, so an alert on them never sees "no data".

const PREFIX = 'qemu_modwatch_';

interface Family {
  name: string;
  help: string;
  samples: { labels?: Record<string, string>; value: number }[];
}

export function formatPrometheus(r: Report): string {
  const c = r.counts;
  const one = (value: number) => [{ value }];
  const families: Family[] = [
    {
      name: 'info',
      help: 'Version of qemu-modwatch that wrote these metrics.',
      samples: [{ labels: { version: r.version }, value: 1 }],
    },
    { name: 'check_success', help: 'Whether the check ran to the end (1) or could not check (0).', samples: one(1) },
    {
      name: 'check_status',
      help: 'Result of the check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the exit status of --check).',
      samples: one(EXIT_CODE[r.status]),
    },
    {
      name: 'last_check_timestamp_seconds',
      help: 'When the check ran, seconds since the epoch.',
      samples: one(Date.parse(r.checkedAt) / 1000),
    },
    {
      name: 'baseline_timestamp_seconds',
      help: 'When the baseline was recorded, seconds since the epoch (absent without a baseline).',
      samples: r.baseline.takenAt ? one(Date.parse(r.baseline.takenAt) / 1000) : [],
    },
    {
      name: 'modules',
      help: 'QEMU modules found, per module directory.',
      samples: r.moduleDirs.map((d) => ({ labels: { dir: d.path, source: d.source }, value: d.moduleCount })),
    },
    {
      name: 'refused_modules',
      help:
        'Modules QEMU will refuse to load (an installed emulator that loads them is of another build), ' +
        'per module directory.',
      samples: r.moduleDirs
        .filter((d) => d.source !== 'upgrade')
        .map((d) => ({ labels: { dir: d.path }, value: d.modules.filter((m) => m.refused).length })),
    },
    {
      name: 'leftover_modules',
      help:
        'Modules of a build no installed emulator has that no installed emulator loads either (nothing ' +
        'refuses them), per module directory.',
      samples: r.moduleDirs
        .filter((d) => d.source !== 'upgrade')
        .map((d) => ({ labels: { dir: d.path }, value: d.modules.filter((m) => m.leftover).length })),
    },
    {
      name: 'pending_changes',
      help: 'Module changes since the baseline, by kind (metadata-only changes do not invalidate).',
      samples: (['added', 'removed', 'replaced', 'metadata'] as const).map((kind) => ({
        labels: { kind },
        value: r.changes.filter((x) => x.kind === kind).length,
      })),
    },
    { name: 'cache_entries', help: "libvirt's QEMU capabilities cache entries.", samples: one(r.cache.entries.length) },
    {
      name: 'stale_cache_entries',
      help:
        'Stale capabilities cache entries, by what libvirt does with them on its own: re-probe, or keep ' +
        'serving them (needs qemu-modwatch refresh).',
      samples: [
        { labels: { libvirt: 'reprobes' }, value: c.staleCacheEntries - c.staleCacheEntriesServed },
        { labels: { libvirt: 'serves_stale' }, value: c.staleCacheEntriesServed },
      ],
    },
    { name: 'guests', help: 'Running QEMU processes found.', samples: one(c.guests) },
    {
      name: 'guests_at_risk',
      help: 'Running guests whose later module loads (hot-plug) will fail.',
      samples: one(c.guestsAtRisk),
    },
    {
      name: 'guests_at_risk_of_abort',
      help:
        'Running guests at risk whose QEMU aborts on the module load after a refused one (QEMU 7.2 to ' +
        '10.x): a hot-plug can kill them.',
      samples: one(r.guests.filter((g) => g.atRisk && g.refusalAborts).length),
    },
    {
      name: 'guests_emulator_replaced',
      help: 'Running guests whose emulator binary was replaced or removed since they started.',
      samples: one(c.guestsEmulatorReplaced),
    },
    {
      name: 'guest_modules_at_risk',
      help: 'Per running guest: modules it would fail to load later.',
      samples: r.guests
        .filter((g) => g.atRisk !== null)
        .map((g) => ({ labels: guestLabels(g), value: g.modulesAtRisk.length })),
    },
    {
      name: 'guest_emulator_replaced',
      help: 'Per running guest: 1 when its emulator binary was replaced or removed since it started.',
      samples: r.guests.map((g) => ({
        labels: guestLabels(g),
        value: g.emulatorState === 'replaced' || g.emulatorState === 'deleted' ? 1 : 0,
      })),
    },
    {
      name: 'findings',
      help: 'Findings of the check, by code (README lists the codes).',
      samples: FINDING_CODES.map((code) => ({
        labels: { code },
        value: r.findings.filter((f) => f.code === code).length,
      })),
    },
  ];
  return render(families);
}

/** What the textfile says when no check could be made: the alert sees a failure, not stale numbers. */
export function prometheusFailure(now = new Date()): string {
  return render([
    {
      name: 'info',
      help: 'Version of qemu-modwatch that wrote these metrics.',
      samples: [{ labels: { version: VERSION }, value: 1 }],
    },
    {
      name: 'check_success',
      help: 'Whether the check ran to the end (1) or could not check (0).',
      samples: [{ value: 0 }],
    },
    {
      name: 'check_status',
      help: 'Result of the check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the exit status of --check).',
      samples: [{ value: 3 }],
    },
    {
      name: 'last_check_timestamp_seconds',
      help: 'When the check ran, seconds since the epoch.',
      samples: [{ value: now.getTime() / 1000 }],
    },
  ]);
}

function guestLabels(g: Report['guests'][number]): Record<string, string> {
  return { domain: g.domain ?? '', pid: String(g.pid) };
}

function render(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    const name = PREFIX + f.name;
    out.push(`# HELP ${name} ${escapeHelp(f.help)}`, `# TYPE ${name} gauge`);
    for (const s of f.samples) out.push(`${name}${labels(s.labels)} ${number(s.value)}`);
  }
  return out.join('\n') + '\n';
}

function labels(l: Record<string, string> | undefined): string {
  if (!l || Object.keys(l).length === 0) return '';
  return `{${Object.entries(l)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(',')}}`;
}

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function number(v: number): string {
  return Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN';
}
