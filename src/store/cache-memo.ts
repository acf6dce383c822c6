import * as fs from 'node:fs';
import { CACHE_NAME_RE, type CacheMemo, type MemoEntry } from '../host/cache-dir';
import { writeFileAtomic } from '../os/atomic-file';

// What the capabilities cache entries' headers said, each under the stat
// data of the file it was read from. libvirt replaces an entry by writing a
// new file and renaming it into place, so the same device, inode, size,
// mtime and ctime mean the same header: a run takes it from here instead of
// parsing the file again (the parse, saxes' first, is a good part of a
// --check's cost over start-up, BENCHMARKS.md). Only a cache: a memo that
// cannot be read or is odd in any way is ignored and the files are read.

const MEMO_SCHEMA = 1;
const MAX_MEMO_BYTES = 1024 * 1024;

export function loadCacheMemo(file: string): CacheMemo {
  const memo: CacheMemo = new Map();
  let data: unknown;
  try {
    const st = fs.statSync(file, { throwIfNoEntry: false });
    if (!st?.isFile() || st.size > MAX_MEMO_BYTES) return memo;
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return memo;
  }
  if (!isObject(data) || data.schema !== MEMO_SCHEMA || !isObject(data.entries)) return memo;
  for (const [name, v] of Object.entries(data.entries)) {
    if (!CACHE_NAME_RE.test(name) || !isObject(v)) return new Map();
    const { key, emulator, qemuctime, qemumoddirmtime, selfvers } = v;
    if (typeof key !== 'string' || typeof emulator !== 'string' || emulator === '') return new Map();
    if (![qemuctime, qemumoddirmtime, selfvers].every(isSecondsOrNull)) return new Map();
    memo.set(name, { key, emulator, qemuctime, qemumoddirmtime, selfvers } as MemoEntry);
  }
  return memo;
}

/** Writes what a run holds when it differs from what it loaded; never fails a run (the next one reads the headers). */
export function saveCacheMemo(file: string, memo: { known: CacheMemo; seen: CacheMemo }): void {
  const { known, seen } = memo;
  const same = (a: MemoEntry, b: MemoEntry | undefined) =>
    !!b &&
    a.key === b.key &&
    a.emulator === b.emulator &&
    a.qemuctime === b.qemuctime &&
    a.qemumoddirmtime === b.qemumoddirmtime &&
    a.selfvers === b.selfvers;
  if (seen.size === known.size && [...seen].every(([name, e]) => same(e, known.get(name)))) return;
  const entries = Object.fromEntries([...seen].sort(([a], [b]) => (a < b ? -1 : 1)));
  try {
    writeFileAtomic(file, JSON.stringify({ schema: MEMO_SCHEMA, entries }) + '\n', { durable: false });
  } catch {
    // A full or read-only disk: the headers are read again next time.
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSecondsOrNull(v: unknown): boolean {
  return v === null || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
}
