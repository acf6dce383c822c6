// Types of host-snapshot.mjs (plain JavaScript: the runner loads it without a TypeScript loader).
export type HostPath = string | { dir: string; match: RegExp };
export type Snapshot = Map<string, string>;
export const TEMP_PREFIXES: string[];
export function hostPaths(): HostPath[];
export function snapshot(paths?: HostPath[], tmp?: string): Snapshot;
export function differences(before: Snapshot, after: Snapshot): string[];
