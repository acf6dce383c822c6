import { isInvalidating } from '../core/compare';
import { EXIT_CODE, moduleVerdicts, type Assessment, type Finding, type Level } from '../core/decide';
import { upgradeDirOf } from '../core/qemu-rules';
import type { EmulatorState, ModuleAtRisk } from '../core/guests';
import { dirsUsedBy } from '../core/stale';
import type { Assessed } from '../app/look';
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
    modules: {
      name: string;
      size: number;
      buildId: string | null;
      stamp: string | null;
      sha256: string | null;
      refused: boolean;
      /** Of a build no installed emulator has, and loaded by none of them. */
      leftover: boolean;
      error: string | null;
    }[];
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
    /** QEMU's version and the distro package version it was built as, from the binary. */
    version: string | null;
    packageVersion: string | null;
    /** The one upgrade-copy directory it looks in. */
    upgradeCopyDir: string | null;
    /** How many modules its module table names; null when it has none we can read. */
    moduleTableEntries: number | null;
    error: string | null;
  }[];
  changes: { dir: string; module: string; kind: string; buildIdBefore: string | null; buildIdAfter: string | null }[];
  /** Upgrade copies that came or went: no installed emulator loads them, so they are no module change. */
  upgradeCopyChanges: { dir: string; module: string; kind: string }[];
  emulatorChanges: { path: string; kind: string; stampBefore: string | null; stampAfter: string | null }[];
  cache: {
    dir: string;
    exists: boolean;
    error: string | null;
    entries: {
      file: string;
      emulator: string | null;
      stale: boolean;
      reasons: string[];
      libvirtNotices: boolean;
      /** Which of libvirt's own checks makes it re-probe; null when none does. */
      libvirtReason: string | null;
      /** What libvirt does with the entry on its next lookup, left alone. */
      libvirtOutcome: LibvirtOutcome;
      error: string | null;
    }[];
  };
  /** Whether running QEMU processes were looked for (/proc readable). */
  guestsChecked: boolean;
  guests: {
    pid: number;
    domain: string | null;
    sources: string[];
    emulator: string | null;
    emulatorState: EmulatorState;
    stamp: string | null;
    stampOnDisk: string | null;
    searchDirs: string[];
    atRisk: boolean | null;
    modulesAtRisk: ModuleAtRisk[];
    servedByUpgradeCopy: { name: string; file: string }[];
    upgradeCopyDir: string | null;
    refusalAborts: boolean | null;
    loadedModules: string[];
    error: string | null;
  }[];
  /** The numbers every output shows (nagios perfdata, metrics). */
  counts: {
    modules: number;
    moduleDirs: number;
    changed: number;
    staleCacheEntries: number;
    staleCacheEntriesServed: number;
    refusedModules: number;
    leftoverModules: number;
    guests: number;
    guestsAtRisk: number;
    guestsEmulatorReplaced: number;
  };
  /** What to do next, with the exact command. */
  advice: string[];
  findings: Finding[];
}

/** fresh: served and right; reprobes: libvirt's own checks catch it; serves-stale: wrong until someone acts. */
export type LibvirtOutcome = 'fresh' | 'reprobes' | 'serves-stale' | 'unreadable';

export function buildReport(o: Assessed, a: Assessment, now = new Date()): Report {
  const r = reportBody(o, a, now);
  r.advice = advice(r);
  return r;
}

function reportBody(o: Assessed, a: Assessment, now: Date): Report {
  const fp = o.fingerprint;
  const dirPaths = new Set(fp.dirs.map((d) => d.path));
  const verdicts = moduleVerdicts(fp);
  const refused = verdicts?.refused ?? null;
  const leftover = verdicts?.leftover ?? null;
  const isIn = (list: { dir: string; name: string }[] | null, dir: string, name: string) =>
    list?.some((m) => m.dir === dir && m.name === name) ?? false;
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
        name: m.name,
        size: m.size,
        buildId: m.buildId,
        stamp: m.stamp,
        sha256: m.sha256,
        refused: isIn(refused, d.path, m.name),
        leftover: isIn(leftover, d.path, m.name),
        error: m.error,
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
        version: e.version,
        packageVersion: e.pkgVersion,
        upgradeCopyDir: upgradeDirOf(e),
        moduleTableEntries: e.modinfo?.length ?? null,
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
    upgradeCopyChanges: o.comparison.copyChanges.map((c) => ({ dir: c.dir, module: c.name, kind: c.kind })),
    emulatorChanges: o.comparison.emulatorChanges.map((e) => ({
      path: e.path,
      kind: e.kind,
      stampBefore: e.stampBefore,
      stampAfter: e.stampAfter,
    })),
    cache: {
      dir: o.cache.dir,
      exists: o.cache.exists,
      error: o.cache.error,
      entries: o.cache.entries.map((entry, i) => {
        const s = a.staleness[i]!;
        const libvirtOutcome: LibvirtOutcome = entry.error
          ? 'unreadable'
          : s.libvirtNotices
            ? 'reprobes'
            : s.stale
              ? 'serves-stale'
              : 'fresh';
        return {
          file: entry.file,
          emulator: entry.emulator,
          stale: s.stale,
          reasons: s.reasons,
          libvirtNotices: s.libvirtNotices,
          libvirtReason: s.libvirtReason,
          libvirtOutcome,
          error: entry.error,
        };
      }),
    },
    guestsChecked: o.guestsChecked,
    guests: a.guests.map((g) => ({
      pid: g.pid,
      domain: g.domain,
      sources: g.sources,
      emulator: g.emulator,
      emulatorState: g.emulatorState,
      stamp: g.stamp,
      stampOnDisk: g.stampOnDisk,
      searchDirs: g.searchDirs,
      atRisk: g.atRisk,
      modulesAtRisk: g.modules,
      servedByUpgradeCopy: g.servedByUpgradeCopy,
      upgradeCopyDir: g.upgradeCopyDir,
      refusalAborts: g.refusalAborts,
      loadedModules: g.loaded,
      error: g.error,
    })),
    counts: {
      modules: fp.dirs.reduce((n, d) => n + d.modules.length, 0),
      moduleDirs: fp.dirs.length,
      changed: o.comparison.changes.filter(isInvalidating).length,
      staleCacheEntries: a.staleness.filter((s) => s.stale).length,
      staleCacheEntriesServed: a.staleness.filter((s) => s.stale && !s.libvirtNotices).length,
      refusedModules: refused?.length ?? 0,
      leftoverModules: leftover?.length ?? 0,
      guests: a.guests.length,
      guestsAtRisk: a.guests.filter((g) => g.atRisk).length,
      guestsEmulatorReplaced: a.guests.filter((g) => g.emulatorState === 'replaced' || g.emulatorState === 'deleted')
        .length,
    },
    advice: [],
    findings: a.findings,
  };
}

/**
 * The next step, with the exact command. libvirt re-probes by itself only
 * what its own checks catch; everything else stays wrong until refresh
 * (or a hook) deletes the entries and nudges the daemon.
 */
function advice(r: Report): string[] {
  const out: string[] = [];
  const { staleCacheEntries: stale, staleCacheEntriesServed: served } = r.counts;
  const entries = (n: number) => `${n} stale capabilities cache ${n === 1 ? 'entry' : 'entries'}`;
  if (served > 0) {
    out.push(
      `Run 'qemu-modwatch refresh': libvirt keeps serving ${entries(served)} until they are deleted and the ` +
        `daemon is nudged.`,
    );
  } else if (stale > 0) {
    out.push(
      `libvirt re-probes the ${entries(stale)} by itself on its next lookup; 'qemu-modwatch refresh' does ` +
        `it now and records the baseline.`,
    );
  } else if (r.counts.changed > 0) {
    out.push(
      "Run 'qemu-modwatch accept' to record the current modules as the baseline (no cache entry needs invalidating).",
    );
  } else if (r.baseline.state !== 'ok' && r.counts.moduleDirs > 0) {
    out.push("Run 'qemu-modwatch accept' to record the current modules as the baseline.");
  }
  if (r.counts.refusedModules > 0) {
    out.push(
      'Install the modules of the same build as the emulator (finish or repeat the QEMU upgrade): QEMU ' +
        'refuses the others.',
    );
  }
  const restart = r.guests.filter((g) => g.atRisk || g.emulatorState === 'replaced' || g.emulatorState === 'deleted');
  if (restart.length > 0) {
    const names = restart.map((g) => g.domain ?? `pid ${g.pid}`).join(', ');
    out.push(
      `Restart or migrate ${restart.length === 1 ? 'this guest' : 'these guests'} to run the installed ` +
        `QEMU build: ${names}.`,
    );
  }
  return out;
}

export function nsToIso(ns: string): string {
  return new Date(Number(BigInt(ns) / 1_000_000n)).toISOString();
}
