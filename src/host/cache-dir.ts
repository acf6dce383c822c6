import * as fs from 'node:fs';
import * as path from 'node:path';
import { RACY_MARGIN_NS } from '../core/compare';
import type { CacheEntry, CacheView } from '../core/types';
import { readCacheHeader } from '../formats/cache-header';
import { errCode, lstatOrNull, NotRegularError, openRegular } from '../os/file-info';
import type { Paths } from './paths';

// libvirt's QEMU capabilities cache: one `<sha256 of emulator path>.xml`
// per emulator, read here; the one place that deletes entries is
// app/carry-out.ts.

export const CACHE_NAME_RE = /^[0-9a-f]{64}\.xml$/;

/** Header fields of one entry, and the stat key of the file they came from. */
export interface MemoEntry {
  key: string;
  emulator: string;
  qemuctime: number | null;
  qemumoddirmtime: number | null;
  selfvers: number | null;
}

/** Cache file name -> what its header said. */
export type CacheMemo = Map<string, MemoEntry>;

export function statKey(st: fs.BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

export function memoEntry(
  key: string,
  e: Pick<CacheEntry, 'emulator' | 'qemuctime' | 'qemumoddirmtime' | 'selfvers'>,
): MemoEntry | null {
  if (e.emulator === null) return null;
  return {
    key,
    emulator: e.emulator,
    qemuctime: e.qemuctime,
    qemumoddirmtime: e.qemumoddirmtime,
    selfvers: e.selfvers,
  };
}

/**
 * With a memo: `known` headers are taken for files whose stat data are
 * unchanged (cache-memo.ts), and every header this view holds, read or
 * taken, goes into `seen`, for the caller to save.
 */
export function readCacheView(paths: Paths, memo?: { known: CacheMemo; seen: CacheMemo }): CacheView {
  const dir = paths.hostNoFollow(paths.cacheDir);
  const view: CacheView = { dir: paths.cacheDir, exists: false, entries: [], error: null };
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    if (errCode(e) !== 'ENOENT') view.error = `cannot stat ${paths.cacheDir}: ${errCode(e)}`;
    return view;
  }
  if (st.isSymbolicLink()) {
    view.error = `${paths.cacheDir} is a symlink; it is not read or changed`;
    return view;
  }
  if (!st.isDirectory()) {
    view.error = `${paths.cacheDir} is not a directory`;
    return view;
  }
  view.exists = true;
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => CACHE_NAME_RE.test(n))
      .sort();
  } catch (e) {
    view.error = `cannot list ${paths.cacheDir}: ${errCode(e)}`;
    return view;
  }
  for (const name of names) {
    const entry =
      (memo && fromMemo(path.join(dir, name), name, memo)) ?? readEntry(path.join(dir, name), name, memo?.seen);
    if (entry) view.entries.push(entry);
  }
  return view;
}

/** The entry as the memo has it, when the file is a regular one with the stat data the memo names. */
function fromMemo(file: string, name: string, memo: { known: CacheMemo; seen: CacheMemo }): CacheEntry | null {
  const known = memo.known.get(name);
  if (!known) return null;
  // lstat: a symlink is never taken for the file it names; nothing is opened here.
  const st = lstatOrNull(file);
  if (!st?.isFile() || statKey(st) !== known.key) return null;
  memo.seen.set(name, known);
  const { emulator, qemuctime, qemumoddirmtime, selfvers } = known;
  return {
    file: name,
    mtimeNs: st.mtimeNs.toString(),
    size: Number(st.size),
    emulator,
    qemuctime,
    qemumoddirmtime,
    selfvers,
    error: null,
  };
}

function readEntry(file: string, name: string, seen?: CacheMemo): CacheEntry | null {
  const entry: CacheEntry = {
    file: name,
    mtimeNs: '0',
    size: 0,
    emulator: null,
    qemuctime: null,
    qemumoddirmtime: null,
    selfvers: null,
    error: null,
  };
  let fd: number;
  let key = '';
  let settled = false;
  try {
    // Whoever can write here (a QEMU process running as libvirt's user may)
    // could plant a symlink or a device node under an entry's name.
    const opened = openRegular(file, { noFollow: true });
    fd = opened.fd;
    key = statKey(opened.st);
    // Remembered only once its ctime (the kernel sets it on every write) is
    // older than the scan's racy margin: times may be too coarse to tell a second write.
    settled = opened.st.ctimeNs < BigInt(Date.now()) * 1_000_000n - RACY_MARGIN_NS;
    entry.mtimeNs = opened.st.mtimeNs.toString();
    entry.size = Number(opened.st.size);
  } catch (e) {
    const code = errCode(e);
    if (code === 'ENOENT') return null;
    if (e instanceof NotRegularError) {
      entry.error = e.symlink ? 'a symlink, not a cache entry; left alone' : 'not a regular file; left alone';
      const st = lstatOrNull(file);
      if (st) entry.mtimeNs = st.mtimeNs.toString();
    } else {
      entry.error = `cannot open: ${code}`;
    }
    return entry;
  }
  try {
    const header = readCacheHeader(fd, entry.size);
    entry.emulator = header.emulator;
    entry.qemuctime = header.qemuctime;
    entry.qemumoddirmtime = header.qemumoddirmtime;
    entry.selfvers = header.selfvers;
    const remembered = settled ? memoEntry(key, entry) : null;
    if (seen && remembered) seen.set(name, remembered);
  } catch (e) {
    entry.error = e instanceof Error ? e.message : String(e);
  } finally {
    fs.closeSync(fd);
  }
  return entry;
}
