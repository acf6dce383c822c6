import { EXIT_CODE, refusedModules, type Assessment, type Finding, type Level } from '../core/decide';
import { dirsUsedBy } from '../core/stale';
import type { Observed } from '../system/observe';
import { VERSION } from '../version';

// The one description of a check that every output format renders. Its
// JSON form is the documented machine interface (README, "JSON output"):
// keys are only ever added, never renamed.

export const REPORT_SCHEMA = 1;

export interface Report {
  tool: 'qemu-modwatch';
  version: string;
  schema: number;
  status: Level;
  exitCode: number;
  checkedAt: string;
  baseline: { state: 'ok' | 'none' | 'corrupt'; takenAt: string | null; problem: string | null };
  stampsChecked: boolean;
  moduleDirs: {
    path: string;
    source: string;
    moduleCount: number;
    error: string | null;
    modules: { name: string; size: number; buildId: string | null; stamp: string | null; sha256: string | null; refused: boolean; error: string | null }[];
  }[];
  missingDirs: string[];
  emulators: {
    path: string;
    source: string;
    kind: string;
    stamp: string | null;
    target: string | null;
    moduleDir: string | null;
    usesModuleDirs: string[] | null;
    error: string | null;
  }[];
  changes: { dir: string; module: string; kind: string; buildIdBefore: string | null; buildIdAfter: string | null }[];
  cache: {
    dir: string;
    exists: boolean;
    error: string | null;
    entries: { file: string; emulator: string | null; stale: boolean; reasons: string[]; libvirtNotices: boolean; error: string | null }[];
  };
  findings: Finding[];
}

export function buildReport(o: Observed, a: Assessment, now = new Date()): Report {
  const fp = o.fingerprint;
  const dirPaths = new Set(fp.dirs.map((d) => d.path));
  const refused = refusedModules(fp);
  const isRefused = (dir: string, name: string) => refused?.some((m) => m.dir === dir && m.name === name) ?? false;
  return {
    tool: 'qemu-modwatch',
    version: VERSION,
    schema: REPORT_SCHEMA,
    status: a.status,
    exitCode: EXIT_CODE[a.status],
    checkedAt: now.toISOString(),
    baseline: {
      state: o.state.kind,
      takenAt: o.baseline ? nsToIso(o.baseline.takenAtNs) : null,
      problem: o.state.kind === 'corrupt' ? o.state.reason : null,
    },
    stampsChecked: refused !== null,
    moduleDirs: fp.dirs.map((d) => ({
      path: d.path,
      source: d.source,
      moduleCount: d.modules.length,
      error: d.error,
      modules: d.modules.map((m) => ({
        name: m.name, size: m.size, buildId: m.buildId, stamp: m.stamp, sha256: m.sha256, refused: isRefused(d.path, m.name), error: m.error,
      })),
    })),
    missingDirs: fp.missingDirs,
    emulators: fp.emulators.map((e) => {
      const usage = dirsUsedBy(e.path, fp);
      return {
        path: e.path,
        source: e.source,
        kind: e.kind,
        stamp: e.stamp,
        target: e.target,
        moduleDir: e.moduleDir,
        usesModuleDirs: usage.sure ? [...usage.dirs].filter((d) => dirPaths.has(d)).sort() : null,
        error: e.error,
      };
    }),
    changes: o.comparison.changes.map((c) => ({
      dir: c.dir,
      module: c.name,
      kind: c.kind,
      buildIdBefore: c.before?.buildId ?? null,
      buildIdAfter: c.after?.buildId ?? null,
    })),
    cache: {
      dir: o.cache.dir,
      exists: o.cache.exists,
      error: o.cache.error,
      entries: o.cache.entries.map((entry, i) => {
        const s = a.staleness[i]!;
        return { file: entry.file, emulator: entry.emulator, stale: s.stale, reasons: s.reasons, libvirtNotices: s.libvirtNotices, error: entry.error };
      }),
    },
    findings: a.findings,
  };
}

export function nsToIso(ns: string): string {
  return new Date(Number(BigInt(ns) / 1_000_000n)).toISOString();
}
