import * as path from 'node:path';
import { groupByDirAndKind } from '../core/compare';
import { fewOf, short } from '../core/decide';
import { escapeControl as esc } from '../core/text';
import type { Report } from './report';

// Output for people: short, aligned, the worst news first. One upgrade is
// a line per emulator and per guest, not one per module: --verbose (and
// the JSON) list every module.

export interface TextOptions {
  /** Every module of a change or finding on a line of its own. */
  verbose?: boolean;
}

/** More items than this of one kind in one directory are summed up in one line unless --verbose. */
const LISTED = 4;

export function formatText(r: Report, opts: TextOptions = {}): string {
  const out: string[] = [];
  const verbose = opts.verbose === true;
  const problems = summedFindings(r, verbose);
  out.push(`qemu-modwatch ${r.status}: ${headline(r)}`);

  if (r.findings.some((f) => f.code === 'no-qemu')) {
    out.push('', 'QEMU is not installed on this host; nothing to watch.');
    return out.join('\n') + '\n';
  }

  out.push('', 'Module directories');
  out.push(
    ...table(
      r.moduleDirs.map((d) => [
        esc(d.path),
        d.source,
        d.error ? 'unreadable' : `${d.moduleCount} modules`,
        stampSummary(r, d),
      ]),
    ),
  );
  for (const m of r.missingDirs) out.push(`  ${esc(m)}  (configured, missing)`);

  out.push('', 'Emulators');
  out.push(...table(r.emulators.map((e) => [esc(e.path), e.kind, emulatorDetail(e)])));

  if (r.baseline.state === 'ok') {
    out.push('', `Changes since the baseline of ${r.baseline.takenAt}`);
    if (r.changes.length === 0 && r.emulatorChanges.length === 0 && r.upgradeCopyChanges.length === 0)
      out.push('  none');
    for (const e of r.emulatorChanges) out.push(`  ${emulatorChange(r, e)}`);
    out.push(...table(changeRows(r, verbose)));
    for (const [dir, kinds] of groupByDirAndKind(named(r.upgradeCopyChanges))) {
      const what = [...kinds].map(([kind, names]) => `${names.length} ${kind}`).join(', ');
      out.push(
        `  upgrade copies in ${esc(dir)}: ${what} (for running guests of an older build; no installed ` +
          `emulator loads them)`,
      );
    }
  } else {
    out.push(
      '',
      r.baseline.state === 'none' ? 'No baseline recorded yet.' : `Baseline unusable: ${esc(r.baseline.problem ?? '')}`,
    );
  }

  out.push('', `Capabilities cache ${esc(r.cache.dir)}`);
  if (!r.cache.exists) out.push(`  ${r.cache.error ? esc(r.cache.error) : 'not there (libvirt has not probed yet)'}`);
  else if (r.cache.entries.length === 0) out.push('  empty');
  out.push(
    ...table(
      r.cache.entries.map((e) => [
        e.file.slice(0, 12) + '…',
        esc(e.emulator ?? '?'),
        e.error ? 'unreadable' : e.stale ? 'STALE' : 'fresh',
        LIBVIRT[e.libvirtOutcome],
        esc(e.error ?? e.reasons[0] ?? ''),
      ]),
    ),
  );

  out.push('', 'Running guests');
  if (!r.guestsChecked) out.push('  not checked (no /proc to read)');
  else if (r.guests.length === 0) out.push('  none');
  out.push(
    ...table(
      r.guests.map((g) => [
        esc(g.domain ?? '-'),
        `pid ${g.pid}`,
        esc(g.emulator ?? '?'),
        EMULATOR_STATE[g.emulatorState],
        guestRisk(g, verbose),
      ]),
    ),
  );

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

function guestRisk(g: Report['guests'][number], verbose: boolean): string {
  if (g.atRisk === null) return `not checked: ${esc(g.error ?? 'build stamp unknown')}`;
  const copies = g.upgradeCopyDir ? esc(g.upgradeCopyDir) : 'its upgrade copies';
  const served = g.servedByUpgradeCopy.length ? `; ${g.servedByUpgradeCopy.length} served by ${copies}` : '';
  if (!g.atRisk) return `later module loads work${served}`;
  const names = g.modulesAtRisk.map((m) => esc(m.name));
  const shadowed = g.modulesAtRisk.filter((m) => m.shadowedCopy).length;
  const hidden = shadowed ? `; ${shadowed} of their copies in ${copies} shadowed by the new files` : '';
  const abort = g.refusalAborts ? '; a hot-plug can kill it (QEMU aborts after a refused module)' : '';
  return `AT RISK: ${verbose ? names.join(', ') : fewOf(names)} would fail${abort}${hidden}${served}`;
}

function emulatorChange(r: Report, e: Report['emulatorChanges'][number]): string {
  const name = esc(path.posix.basename(e.path));
  if (e.kind !== 'rebuilt') return `${name} ${e.kind} (${esc(e.path)})`;
  const uses = r.emulators.find((x) => x.path === e.path)?.usesModuleDirs ?? null;
  const replaced = r.changes.filter((c) => c.kind === 'replaced' && (uses === null || uses.includes(c.dir))).length;
  return (
    `${name} upgraded: build ${short(e.stampBefore)} -> ${short(e.stampAfter)}, ${replaced} ` +
    `module${replaced === 1 ? '' : 's'} replaced`
  );
}

/** One row a module, or one row a directory and kind where there are many and --verbose is not given. */
function changeRows(r: Report, verbose: boolean): string[][] {
  const rows: string[][] = [];
  for (const [dir, kinds] of groupByDirAndKind(named(r.changes))) {
    for (const [kind, names] of kinds) {
      if (verbose || names.length <= LISTED) {
        for (const c of r.changes.filter((x) => x.dir === dir && x.kind === kind))
          rows.push([kind, esc(path.join(c.dir, c.module)), buildIds(c)]);
      } else {
        rows.push([kind, `${names.length} modules in ${esc(dir)}`, `${esc(fewOf(names))} (--verbose lists them)`]);
      }
    }
  }
  return rows;
}

/** The report's changes as the core groups them (its `module` is the core's `name`). */
const named = (changes: { dir: string; kind: string; module: string }[]) =>
  changes.map((c) => ({ dir: c.dir, kind: c.kind, name: c.module }));

/**
 * The findings to show, the OK ones left out. Without --verbose, the
 * per-module ones of a whole upgrade (changed, refused, leftover) become one
 * line per directory where there are many.
 */
export function summedFindings(r: Report, verbose: boolean): { level: string; message: string; code: string }[] {
  const problems = r.findings.filter((f) => f.level !== 'OK');
  if (verbose) return problems;
  const out: { level: string; message: string; code: string }[] = [];
  const summed = new Set<string>();
  for (const f of problems) {
    const group = PER_MODULE[f.code];
    if (!group) {
      out.push(f);
      continue;
    }
    const all = problems.filter((x) => x.code === f.code);
    if (all.length <= LISTED) {
      out.push(f);
      continue;
    }
    if (summed.has(f.code)) continue;
    summed.add(f.code);
    out.push({
      level: f.level,
      code: f.code,
      message: `${all.length} ${group} ('qemu-modwatch --check --verbose' lists them)`,
    });
  }
  return out;
}

const PER_MODULE: Record<string, string> = {
  'module-changed': 'modules changed since the baseline',
  'stamp-mismatch': 'modules QEMU will refuse to load: not from the build of the emulator that loads them',
  'leftover-module': 'modules of a build no installed emulator has, loaded by none: leftovers',
};

export function headline(r: Report): string {
  if (r.findings.some((f) => f.code === 'no-qemu')) return 'QEMU is not installed, nothing to watch';
  const count = (code: string) => r.findings.filter((f) => f.code === code).length;
  const parts: string[] = [];
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (count('stamp-mismatch')) parts.push(`${plural(count('stamp-mismatch'), 'module')} QEMU will refuse`);
  if (count('module-changed')) parts.push(`${plural(count('module-changed'), 'module')} changed`);
  if (count('stale-cache-entry'))
    parts.push(`${plural(count('stale-cache-entry'), 'stale cache entry')}`.replace('entrys', 'entries'));
  if (count('guest-at-risk')) parts.push(`${plural(count('guest-at-risk'), 'guest')} at risk`);
  if (count('guest-emulator-replaced'))
    parts.push(`${plural(count('guest-emulator-replaced'), 'guest')} on a replaced emulator`);
  const headed = ['stamp-mismatch', 'module-changed', 'stale-cache-entry', 'guest-at-risk', 'guest-emulator-replaced'];
  const other = r.findings.filter((f) => f.level !== 'OK' && !headed.includes(f.code)).length;
  if (other) parts.push(plural(other, 'other problem'));
  if (parts.length) return parts.join(', ');
  const modules = r.moduleDirs.reduce((n, d) => n + d.moduleCount, 0);
  return (
    `${plural(modules, 'module')} in ${plural(r.moduleDirs.length, 'directory')}`.replace('directorys', 'directories') +
    ', no changes'
  );
}

function stampSummary(r: Report, d: Report['moduleDirs'][number]): string {
  if (d.source === 'upgrade') {
    const users = r.emulators.filter((e) => e.upgradeCopyDir === d.path).map((e) => esc(path.posix.basename(e.path)));
    return users.length
      ? `upgrade copy that ${users.join(', ')} would load from`
      : 'upgrade copy for running guests of another build';
  }
  if (d.moduleCount === 0) return '';
  if (!r.stampsChecked) return 'stamps not checked';
  const refused = d.modules.filter((m) => m.refused).length;
  const leftover = d.modules.filter((m) => m.leftover).length;
  const parts = [
    ...(refused ? [`${refused} QEMU will refuse`] : []),
    ...(leftover ? [`${leftover} leftover${leftover === 1 ? '' : 's'} no emulator loads`] : []),
  ];
  return parts.length ? parts.join(', ') : "all from an installed emulator's build";
}

function emulatorDetail(e: Report['emulators'][number]): string {
  if (e.error) return `unreadable: ${esc(e.error)}`;
  if (e.kind === 'wrapper')
    return e.target
      ? `execs ${esc(e.target)}${e.moduleDir ? `, QEMU_MODULE_DIR=${esc(e.moduleDir)}` : ''}`
      : 'target not literal';
  if (e.kind === 'missing') return `named by ${e.source === 'cache' ? 'a cache entry' : e.source}, not on disk`;
  const version = e.version ? `QEMU ${esc(e.version)}${e.packageVersion ? ` (${esc(e.packageVersion)})` : ''}, ` : '';
  return `${version}${e.stamp ? `stamp ${e.stamp.slice(0, 12)}` : 'no build stamp'}`;
}

function buildIds(c: Report['changes'][number]): string {
  if (c.kind === 'replaced')
    return `build-id ${c.buildIdBefore?.slice(0, 12) ?? 'none'} -> ${c.buildIdAfter?.slice(0, 12) ?? 'none'}`;
  const id = c.buildIdAfter ?? c.buildIdBefore;
  return id ? `build-id ${id.slice(0, 12)}` : '';
}

/** Left-aligned columns, two spaces apart, indented by two. */
export function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) =>
    ('  ' + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).trimEnd(),
  );
}
