import t from 'tap';
import { formatNagios, nagiosFailure, perfdata } from '../../src/cli/format-nagios';
import { escapeLabel, prometheusFailure } from '../../src/cli/format-prometheus';
import { parseCommandLine, UsageError } from '../../src/cli/options';
import type { Report } from '../../src/cli/report';
import { PERFDATA_RE, parseNagios, parsePrometheus } from '../fixtures/outputs';

// The monitoring formats' small rules, and the option parser, without files.

const counts = {
  modules: 3,
  moduleDirs: 1,
  changed: 0,
  staleCacheEntries: 0,
  staleCacheEntriesServed: 0,
  refusedModules: 0,
  guests: 0,
  guestsAtRisk: 0,
  guestsEmulatorReplaced: 0,
};

function report(findings: Report['findings'], status: Report['status'] = 'WARNING'): Report {
  return { status, findings, advice: ['Run it | now'], counts, moduleDirs: [] } as unknown as Report;
}

t.test('perfdata follows the guidelines', async (t) => {
  t.equal(perfdata({ label: 'changed', value: 2, warn: '0', min: 0 }), "'changed'=2;0;;0");
  t.equal(perfdata({ label: 'modules', value: 0, min: 0 }), "'modules'=0;;;0");
  t.equal(perfdata({ label: 'refused_modules', value: 1, crit: '0', min: 0 }), "'refused_modules'=1;;0;0");
  t.equal(perfdata({ label: 'x', value: 5 }), "'x'=5");
  for (const p of ["'changed'=2;0;;0", "'modules'=0;;;0", "'a b'=1.5s;1:2;~:3;0;10", 'plain=3c'])
    t.match(p, PERFDATA_RE);
  for (const p of ["'bad=1", "'x'=abc", "'x'=1;;;;;;"]) t.notMatch(p, PERFDATA_RE);
});

t.test('the status line: short summary, no pipe in text, details after', async (t) => {
  // A kind of finding that is never summed up: each stays a line of its own.
  const many = Array.from({ length: 60 }, (_, i) => ({
    level: 'WARNING' as const,
    code: 'unreadable-module' as const,
    message: `module ${i} | replaced\nagain`,
  }));
  const out = formatNagios(report(many));
  const n = parseNagios(out);
  t.equal(n.status, 'WARNING');
  t.ok(n.summary.length < 80, n.summary);
  t.equal(n.details.length, 51, 'at most 50 detail lines and a count of the rest');
  t.match(n.details[50], /^\.\.\. and 11 more$/);
  t.match(n.details[0], /^WARNING: module 0 \/ replaced\\x0aagain$/);
  t.equal(n.perf.modules!.value, 3);
  // One upgrade: its per-module findings are one detail line.
  const upgrade = Array.from({ length: 37 }, (_, i) => ({
    level: 'WARNING' as const,
    code: 'module-changed' as const,
    message: `m${i}.so replaced`,
  }));
  const u = parseNagios(formatNagios(report(upgrade)));
  t.same(
    u.details.filter((d) => d.startsWith('WARNING')),
    ["WARNING: 37 modules changed since the baseline ('qemu-modwatch --check --verbose' lists them)"],
  );
  const long = nagiosFailure('x'.repeat(200));
  t.match(long, /^QEMU-MODWATCH UNKNOWN - x{76}\.\.\.\n$/);
});

t.test('Prometheus label values and the failure metrics', async (t) => {
  t.equal(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  const p = parsePrometheus(prometheusFailure(new Date(1_700_000_000_000)));
  t.same(
    p.samples.map((s) => [s.name, s.value]),
    [
      ['qemu_modwatch_info', 1],
      ['qemu_modwatch_check_success', 0],
      ['qemu_modwatch_check_status', 3],
      ['qemu_modwatch_last_check_timestamp_seconds', 1_700_000_000],
    ],
  );
});

t.test('options: formats, per-command options, --timeout stripped for the timed child', async (t) => {
  const p = (s: string) => parseCommandLine(s ? s.split(' ') : []);
  t.equal(p('').command, 'check');
  t.equal(p('--json').format, 'json');
  t.equal(p('--format nagios').format, 'nagios');
  t.equal(p('--format=prometheus --check').format, 'prometheus');
  t.same(p('--root /r --timeout 2 check --format nagios').untimedArgs, ['--root', '/r', 'check', '--format', 'nagios']);
  t.same(p('--timeout=2.5 status').untimedArgs, ['status']);
  t.equal(p('--timeout=2.5 status').timeout, 2.5);
  t.equal(p('invalidate --emulator /usr/bin/q --dry-run --nudge none').nudge, 'none');
  t.same(
    p('--root /r hook qemu --timeout prepare begin -').hookArgs,
    ['qemu', '--timeout', 'prepare', 'begin', '-'],
    "libvirt's argv is not parsed",
  );
  for (const bad of [
    '--format xml',
    '--json --format nagios',
    'refresh --format nagios',
    'status --textfile /x',
    'check --emulator /x',
    '--timeout 0',
    '--timeout abc',
    'accept --check',
    'invalidate --emulator rel',
  ]) {
    let err: unknown = null;
    try {
      p(bad);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof UsageError, `${bad}: ${String(err)}`);
  }
});
