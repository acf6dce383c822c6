import type { Observation, Seen } from '../core/decide';
import type { Look } from '../core/plan';
import type { EmulatorSource, LastAction } from '../core/types';
import { readCacheView } from '../host/cache-dir';
import type { CacheMemo } from '../host/cache-dir';
import { loadCacheMemo } from '../store/cache-memo';
import type { Config } from '../host/config';
import type { Paths } from '../host/paths';
import { HOOKS_DIR, stateFiles } from '../host/paths';
import { scanGuests } from '../host/processes';
import { scanModuleDirs, takeFingerprint } from '../host/scan';
import { guestModuleDirs } from '../core/guests';
import { loadState, type LoadedState } from '../store/state-store';
import { loadDaemonHooks } from '../store/daemon-hooks';
import { loadHooksInstalledAfter } from '../store/hooks-installed-after';
import { chainedCtimeMs } from '../store/install-manifest';
import { daemonsOutsideRoot, hookFilesFacts, reloadFacts, runningQemuDaemons } from '../host/daemons';
import type { HooksLoadedFacts } from '../core/hooks-loaded';

export interface Context {
  paths: Paths;
  config: Config;
  env: NodeJS.ProcessEnv;
}

export interface Looked extends Seen {
  loaded: LoadedState;
  /** Whether running guests were looked for and /proc could be read. */
  guestsChecked: boolean;
  /** The cache headers remembered before this run, and those it holds now (cache-memo.ts). */
  cacheMemo: { known: CacheMemo; seen: CacheMemo };
}

/** A look once assessed: the comparison with the baseline added (core/decide.ts assessSeen). */
export type Assessed = Looked & Pick<Observation, 'comparison'>;

export interface LookOptions {
  /** Also look at running QEMU processes and libvirt daemons (check does, also after refresh's run; hooks need not). */
  guests?: boolean;
}

/** look: everything read from the system and the state file; nothing compared (assess does), nothing changed. */
export function look(
  ctx: Context,
  extraEmulators: { path: string; source: EmulatorSource }[] = [],
  opts: LookOptions = {},
): Looked {
  const loaded = loadState(ctx.paths.host(stateFiles(ctx.paths).state));
  const baseline = loaded.kind === 'ok' ? loaded.state.baseline : null;
  const cacheMemo = { known: loadCacheMemo(ctx.paths.host(stateFiles(ctx.paths).cacheMemo)), seen: new Map() };
  const cache = readCacheView(ctx.paths, cacheMemo);
  const fromCache = cache.entries.flatMap((e) => (e.emulator ? [{ path: e.emulator, source: 'cache' as const }] : []));
  const fingerprint = takeFingerprint({
    paths: ctx.paths,
    config: ctx.config,
    env: ctx.env,
    extraEmulators: [...fromCache, ...extraEmulators],
    baseline,
  });
  const libvirtModdir = ctx.config.libvirtModdir ?? fingerprint.dirs.find((d) => d.source === 'default')?.path ?? null;
  const guests = opts.guests ? scanGuests(ctx.paths, fingerprint) : null;
  const scanned = new Set(fingerprint.dirs.map((d) => d.path));
  const guestDirPaths = (guests?.guests ?? []).flatMap((g) => [
    ...(g.moduleDirEnv ? [g.moduleDirEnv] : []),
    ...guestModuleDirs(g),
  ]);
  return {
    guests: guests?.guests ?? null,
    guestDirs: scanModuleDirs(
      ctx.paths,
      ctx.config,
      guestDirPaths.filter((p) => !scanned.has(p)),
    ),
    guestsChecked: guests?.checked ?? false,
    cacheMemo,
    loaded,
    fingerprint,
    baseline,
    state: loaded.kind === 'corrupt' ? { kind: 'corrupt', reason: loaded.reason } : { kind: loaded.kind },
    cache,
    libvirtModdir,
    hooksLoaded: opts.guests ? lookHooksLoaded(ctx) : null,
  };
}

/** What tells whether the running libvirt daemons can be running our hooks (core/hooks-loaded.ts). */
export function lookHooksLoaded(ctx: Context): HooksLoadedFacts & { problems: string[] } {
  const { runs, problems } = loadDaemonHooks(ctx.paths);
  const installed = loadHooksInstalledAfter(ctx.paths);
  if (installed.problem) problems.push(installed.problem);
  const chainedBefore = chainedCtimeMs(ctx.paths, `${HOOKS_DIR}/qemu`);
  return {
    hooks: { ...hookFilesFacts(ctx.paths, chainedBefore), installedAfterMs: installed.afterMs },
    daemons: runningQemuDaemons(ctx.paths),
    runs,
    reload: reloadFacts(ctx.paths),
    daemonsOutsideRoot: daemonsOutsideRoot(ctx.paths),
    problems,
  };
}

/** What the plan needs of a look, once assessed (the comparison added). */
export function lookFacts(l: Assessed): Look {
  const { fingerprint, baseline, state, comparison, cache, libvirtModdir } = l;
  const lastAction = lastActionOf(l);
  return { fingerprint, baseline, state, comparison, cache, libvirtModdir, lastAction };
}

/** The last action the state file holds; null without a usable state. */
export function lastActionOf(l: Looked): LastAction | null {
  return l.loaded.kind === 'ok' ? l.loaded.state.lastAction : null;
}
