import * as fs from 'node:fs';
import { stateFiles, type Paths } from '../host/paths';

// What `install` placed (install/install.ts writes it), so that uninstall
// removes exactly that, and check knows the admin's hook install --chain
// moved aside.

export interface Manifest {
  schema: 1;
  version: string;
  installedAt: string;
  layout: 'dropin' | 'single';
  files: { path: string; sha256: string; mode: number }[];
  symlinks: { path: string; target: string }[];
  /**
   * An admin's own single-file hook, moved aside and run first by our
   * wrapper; ctimeMs, its ctime just before the move (which changed it):
   * it has been a hook since at least then. Absent in older manifests.
   */
  chained: { hook: string; savedAs: string; ctimeMs?: number }[];
  /** Whether install created the config (uninstall --purge removes it either way). */
  configCreated: boolean;
}

export function readManifest(paths: Paths): Manifest | null {
  try {
    const m = JSON.parse(fs.readFileSync(paths.host(stateFiles(paths).installManifest), 'utf8')) as Manifest;
    return m && m.schema === 1 && Array.isArray(m.files) ? m : null;
  } catch {
    return null;
  }
}

/** The ctime before the move of the admin's hook install --chain moved aside from `hook`; null when not known. */
export function chainedCtimeMs(paths: Paths, hook: string): number | null {
  const c = readManifest(paths)?.chained?.find((x) => x.hook === hook);
  return typeof c?.ctimeMs === 'number' && Number.isFinite(c.ctimeMs) ? c.ctimeMs : null;
}
