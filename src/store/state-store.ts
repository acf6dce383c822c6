import * as fs from 'node:fs';
import type { Fingerprint, LastAction } from '../core/types';
import { writeFileAtomic } from '../os/atomic-file';
import { VERSION } from '../version';

const STATE_SCHEMA = 1;
/** A state file larger than this is garbage, not a baseline. */
const MAX_STATE_BYTES = 64 * 1024 * 1024;

export interface State {
  schema: number;
  /** Version of qemu-modwatch that wrote it. */
  writtenBy: string;
  baseline: Fingerprint;
  lastAction: LastAction | null;
}

export type LoadedState = { kind: 'none' } | { kind: 'ok'; state: State } | { kind: 'corrupt'; reason: string };

export function loadState(file: string): LoadedState {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return { kind: 'corrupt', reason: `${file} is not a regular file` };
    if (st.size > MAX_STATE_BYTES) return { kind: 'corrupt', reason: `${file} is larger than 64 MiB` };
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') return { kind: 'none' };
    return { kind: 'corrupt', reason: `cannot read ${file}: ${err.code ?? err.message}` };
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return {
      kind: 'corrupt',
      reason: `${file} is not valid JSON (${text.length === 0 ? 'empty' : 'truncated or damaged'})`,
    };
  }
  const problem = validateState(data);
  return problem ? { kind: 'corrupt', reason: `${file}: ${problem}` } : { kind: 'ok', state: data as State };
}

/**
 * How every run records: the baseline and the last action, under this
 * schema, as written by this version unless the caller keeps the writer
 * (invalidate changes only the last action).
 */
export function recordState(
  file: string,
  what: { baseline: Fingerprint; lastAction: LastAction | null; writtenBy?: string | undefined },
): void {
  const writtenBy = 'writtenBy' in what ? what.writtenBy : VERSION;
  writeState(file, {
    schema: STATE_SCHEMA,
    writtenBy: writtenBy as string,
    baseline: what.baseline,
    lastAction: what.lastAction,
  });
}

export function writeState(file: string, state: State): void {
  writeFileAtomic(file, JSON.stringify(state) + '\n', { mode: 0o644 });
}

// Validates enough of the shape that the rest of the program can trust it:
// a hand-edited or half-written state must become "no baseline", not a crash.
function validateState(data: unknown): string | null {
  if (!isObject(data)) return 'not a JSON object';
  if (data.schema !== STATE_SCHEMA) return `unknown schema version ${JSON.stringify(data.schema) ?? 'missing'}`;
  if (data.writtenBy !== undefined && typeof data.writtenBy !== 'string') return 'writtenBy is not a string';
  const b = data.baseline;
  if (!isObject(b)) return 'no baseline';
  if (!isTime(b.takenAtNs)) return 'baseline.takenAtNs is not a time in nanoseconds';
  if (!Array.isArray(b.dirs) || !Array.isArray(b.emulators) || !isStringArray(b.missingDirs)) {
    return 'baseline lacks dirs, emulators or missingDirs';
  }
  for (const d of b.dirs) {
    if (
      !isObject(d) ||
      typeof d.path !== 'string' ||
      !DIR_SOURCES.includes(d.source as string) ||
      !Array.isArray(d.modules)
    ) {
      return 'a baseline directory entry is malformed';
    }
    if (!isTime(d.mtimeNs) || !isTime(d.ctimeNs) || !isNullableString(d.error))
      return `directory ${d.path} is malformed`;
    for (const m of d.modules) {
      if (
        !isObject(m) ||
        typeof m.name !== 'string' ||
        !isStatTuple(m) ||
        !isNullableString(m.buildId) ||
        !isNullableString(m.stamp) ||
        !isNullableString(m.sha256) ||
        !isNullableString(m.error)
      ) {
        return `a module entry in ${d.path} is malformed`;
      }
    }
  }
  for (const e of b.emulators) {
    if (
      !isObject(e) ||
      typeof e.path !== 'string' ||
      !isStatTuple(e) ||
      !isNullableString(e.stamp) ||
      !isStringArray(e.dirsInBinary) ||
      typeof e.kind !== 'string' ||
      typeof e.mode !== 'number' ||
      !isNullableString(e.target) ||
      !isNullableString(e.moduleDir) ||
      typeof e.usesUpgradeDirs !== 'boolean' ||
      !isNullableString(e.error)
    ) {
      return 'an emulator entry is malformed';
    }
  }
  const a = data.lastAction;
  if (a !== null && a !== undefined) {
    if (
      !isObject(a) ||
      typeof a.at !== 'string' ||
      Number.isNaN(Date.parse(a.at)) ||
      typeof a.trigger !== 'string' ||
      typeof a.summary !== 'string' ||
      !isStringArray(a.deleted) ||
      !isStringArray(a.nudged)
    ) {
      return 'lastAction is malformed';
    }
  }
  return null;
}

const DIR_SOURCES = ['env', 'default', 'upgrade', 'config', 'wrapper'];

function isStringArray(v: unknown): boolean {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}
/** Nanoseconds since the epoch that a Date can show: at most 22 digits. */
function isTime(v: unknown): boolean {
  return typeof v === 'string' && /^\d{1,22}$/.test(v) && BigInt(v) / 1_000_000n <= 8_640_000_000_000_000n;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function isDecimal(v: unknown): boolean {
  return typeof v === 'string' && /^\d{1,30}$/.test(v);
}
function isNullableString(v: unknown): boolean {
  return v === null || typeof v === 'string';
}
function isStatTuple(v: Record<string, unknown>): boolean {
  return typeof v.size === 'number' && isTime(v.mtimeNs) && isTime(v.ctimeNs) && isDecimal(v.ino) && isDecimal(v.dev);
}
