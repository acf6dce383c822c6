import * as path from 'node:path';
import { escapeControl as esc } from '../core/text';
import type { Report } from './report';

// Output for people: short, aligned, the worst news first.

export function formatText(r: Report): string {
  const out: string[] = [];
  const problems = r.findings.filter((f) => f.level !== 'OK');
  out.push(`qemu-modwatch ${r.status}: ${headline(r)}`);

  if (r.findings.some((f) => f.code === 'no-qemu')) {
    out.push('', 'QEMU is not installed on this host; nothing to watch.');
    return out.join('\n') + '\n';
  }

  out.push('', 'Module directories');
  out.push(...table(r.moduleDirs.map((d) => [esc(d.path), d.source, d.error ? 'unreadable' : `${d.moduleCount} modules`, stampSummary(r, d)])));
  for (const m of r.missingDirs) out.push(`  ${esc(m)}  (configured, missing)`);

  out.push('', 'Emulators');
  out.push(...table(r.emulators.map((e) => [esc(e.path), e.kind, emulatorDetail(e)])));

  if (r.baseline.state === 'ok') {
    out.push('', `Changes since the baseline of ${r.baseline.takenAt}`);
    if (r.changes.length === 0) out.push('  none');
    out.push(...table(r.changes.map((c) => [c.kind, esc(path.join(c.dir, c.module)), buildIds(c)])));
  } else {
    out.push('', r.baseline.state === 'none' ? 'No baseline recorded yet.' : `Baseline unusable: ${esc(r.baseline.problem ?? '')}`);
  }

  out.push('', `Capabilities cache ${esc(r.cache.dir)}`);
  if (!r.cache.exists) out.push(`  ${r.cache.error ? esc(r.cache.error) : 'not there (libvirt has not probed yet)'}`);
  else if (r.cache.entries.length === 0) out.push('  empty');
  out.push(...table(r.cache.entries.map((e) => [e.file.slice(0, 12) + '…', esc(e.emulator ?? '?'), e.error ? 'unreadable' : e.stale ? 'STALE' : 'fresh', LIBVIRT[e.libvirtOutcome], esc(e.error ?? e.reasons[0] ?? '')])));

  out.push('', 'Running guests');
  if (!r.guestsChecked) out.push('  not checked (no /proc to read)');
  else if (r.guests.length === 0) out.push('  none');
  out.push(...table(r.guests.map((g) => [esc(g.domain ?? '-'), `pid ${g.pid}`, esc(g.emulator ?? '?'), EMULATOR_STATE[g.emulatorState], guestRisk(g)])));

  if (problems.length) {
    out.push('', 'Findings');
    out.push(...table(problems.map((f) => [f.level, esc(f.message)])));
  }
  if (r.advice.length) out.push('', ...r.advice.map((a) => `Next: ${esc(a)}`));
  return out.join('\n') + '\n';
}

const LIBVIRT: Record<Report['cache']['entries'][number]['libvirtOutcome'], string> = {
  fresh: 'libvirt keeps it',
  reprobes: 'libvirt re-probes it by itself',
  'serves-stale': 'libvirt keeps serving it',
  unreadable: '',
};

const EMULATOR_STATE: Record<Report['guests'][number]['emulatorState'], string> = {
  current: 'emulator current',
  replaced: 'EMULATOR REPLACED',
  deleted: 'EMULATOR REMOVED',
  unknown: 'emulator unknown',
};

function guestRisk(g: Report['guests'][number]): string {
  if (g.atRisk === null) return `not checked: ${esc(g.error ?? 'build stamp unknown')}`;
  const served = g.servedByUpgradeCopy.length ? `; ${g.servedByUpgradeCopy.length} served by an upgrade copy` : '';
  if (!g.atRisk) return `later module loads work${served}`;
  return `AT RISK: ${g.modulesAtRisk.map((m) => esc(m.name)).join(', ')} would fail${served}`;
}

export function headline(r: Report): string {
  if (r.findings.some((f) => f.code === 'no-qemu')) return 'QEMU is not installed, nothing to watch';
  const count = (code: string) => r.findings.filter((f) => f.code === code).length;
  const parts: string[] = [];
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (count('stamp-mismatch')) parts.push(`${plural(count('stamp-mismatch'), 'module')} QEMU will refuse`);
  if (count('module-changed')) parts.push(`${plural(count('module-changed'), 'module')} changed`);
  if (count('stale-cache-entry')) parts.push(`${plural(count('stale-cache-entry'), 'stale cache entry')}`.replace('entrys', 'entries'));
  if (count('guest-at-risk')) parts.push(`${plural(count('guest-at-risk'), 'guest')} at risk`);
  if (count('guest-emulator-replaced')) parts.push(`${plural(count('guest-emulator-replaced'), 'guest')} on a replaced emulator`);
  const headed = ['stamp-mismatch', 'module-changed', 'stale-cache-entry', 'guest-at-risk', 'guest-emulator-replaced'];
  const other = r.findings.filter((f) => f.level !== 'OK' && !headed.includes(f.code)).length;
  if (other) parts.push(plural(other, 'other problem'));
  if (parts.length) return parts.join(', ');
  const modules = r.moduleDirs.reduce((n, d) => n + d.moduleCount, 0);
  return `${plural(modules, 'module')} in ${plural(r.moduleDirs.length, 'directory')}`.replace('directorys', 'directories') + ', no changes';
}

function stampSummary(r: Report, d: Report['moduleDirs'][number]): string {
  if (d.source === 'upgrade') return 'upgrade copy for running guests';
  if (d.moduleCount === 0) return '';
  if (!r.stampsChecked) return 'stamps not checked';
  const refused = d.modules.filter((m) => m.refused).length;
  return refused ? `${refused} not from an installed emulator's build` : "all from an installed emulator's build";
}

function emulatorDetail(e: Report['emulators'][number]): string {
  if (e.error) return `unreadable: ${esc(e.error)}`;
  if (e.kind === 'wrapper') return e.target ? `execs ${esc(e.target)}${e.moduleDir ? `, QEMU_MODULE_DIR=${esc(e.moduleDir)}` : ''}` : 'target not literal';
  if (e.kind === 'missing') return `named by ${e.source === 'cache' ? 'a cache entry' : e.source}, not on disk`;
  return e.stamp ? `stamp ${e.stamp.slice(0, 12)}` : 'no build stamp';
}

function buildIds(c: Report['changes'][number]): string {
  if (c.kind === 'replaced') return `build-id ${c.buildIdBefore?.slice(0, 12) ?? 'none'} -> ${c.buildIdAfter?.slice(0, 12) ?? 'none'}`;
  const id = c.buildIdAfter ?? c.buildIdBefore;
  return id ? `build-id ${id.slice(0, 12)}` : '';
}

/** Left-aligned columns, two spaces apart, indented by two. */
export function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => ('  ' + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).trimEnd());
}
