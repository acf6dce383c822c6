import * as fs from 'node:fs';
import { noFacts, type BinaryFacts } from '../core/types';
import { readModinfo } from './modinfo';

// What an emulator file tells us without running it: its QEMU build stamp
// (the string QEMU compares every module's `qemu_stamp_<hex>` symbol
// against) and the module directories compiled into it.

export interface EmulatorContents extends BinaryFacts {
  target: string | null;
  moduleDir: string | null;
}

const CHUNK = 1024 * 1024;
/** Strings we look for are short; keeping this much of the previous chunk finds them across a boundary. */
const OVERLAP = 4096;
const MAX_EMULATOR_BYTES = 1024 * 1024 * 1024;
const MAX_SCRIPT_BYTES = 64 * 1024;
const STAMP_PREFIX = Buffer.from('qemu_stamp_');
const QEMU_DIR_SUFFIX = Buffer.from('/qemu\0');
const UPGRADE_TEMPLATES = [Buffer.from('/var/run/qemu/'), Buffer.from('/run/qemu/')];
/**
 * QEMU's -version text: "QEMU emulator version " QEMU_FULL_VERSION, that is "7.2.22 (Debian
 * 1:7.2+dfsg-7+deb12u18+b3)".
 */
const VERSION_PREFIX = Buffer.from('QEMU emulator version ');

export function readEmulator(fd: number, size: number): EmulatorContents {
  const head = Buffer.alloc(4);
  const n = fs.readSync(fd, head, 0, 4, 0);
  if (n >= 2 && head[0] === 0x23 && head[1] === 0x21) return readWrapper(fd, size);
  if (n === 4 && head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) return scanBinary(fd, size);
  return { ...noFacts('other'), target: null, moduleDir: null };
}

function scanBinary(fd: number, size: number): EmulatorContents {
  if (size > MAX_EMULATOR_BYTES) throw new Error('larger than 1 GiB');
  let stamp: string | null = null;
  let full: { version: string; pkgVersion: string } | null = null;
  const dirs = new Set<string>();
  let usesUpgradeDirs = false;
  const buf = Buffer.allocUnsafe(CHUNK + OVERLAP);
  let carried = 0;
  let pos = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, carried, CHUNK, pos);
    if (n === 0) break;
    pos += n;
    const view = buf.subarray(0, carried + n);
    stamp ??= findStamp(view);
    full ??= findVersion(view);
    for (const d of findQemuDirs(view)) dirs.add(d);
    usesUpgradeDirs ||= UPGRADE_TEMPLATES.some((t) => view.indexOf(t) >= 0);
    carried = Math.min(OVERLAP, view.length);
    view.copy(buf, 0, view.length - carried);
  }
  let modinfo: BinaryFacts['modinfo'] = null;
  try {
    modinfo = readModinfo(fd, size)?.map((m) => ({ name: m.name, arch: m.arch })) ?? null;
  } catch {
    // A table we cannot read is a table we do not know: every module counts, as before.
  }
  return {
    kind: 'elf',
    stamp,
    dirsInBinary: [...dirs].sort(),
    usesUpgradeDirs,
    version: full?.version ?? null,
    pkgVersion: full?.pkgVersion ?? null,
    modinfo,
    target: null,
    moduleDir: null,
  };
}

/** "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)" after the -version prefix, up to the end of its line. */
function findVersion(view: Buffer): { version: string; pkgVersion: string } | null {
  const i = view.indexOf(VERSION_PREFIX);
  if (i < 0) return null;
  const start = i + VERSION_PREFIX.length;
  let end = start;
  while (end < view.length && end - start < 256 && view[end] !== 0 && view[end] !== 0x0a) end++;
  const m = /^(\d+\.\d+\.\d+)(?: \((.*)\))?$/.exec(view.toString('latin1', start, end));
  return m ? { version: m[1]!, pkgVersion: m[2] ?? '' } : null;
}

function findStamp(view: Buffer): string | null {
  for (let i = view.indexOf(STAMP_PREFIX); i >= 0; i = view.indexOf(STAMP_PREFIX, i + 1)) {
    let j = i + STAMP_PREFIX.length;
    while (j < view.length && isHex(view[j]!)) j++;
    // QEMU's stamp is a SHA-1 in hex; anything shorter is some other string.
    if (j - i - STAMP_PREFIX.length >= 40 && (j === view.length || view[j] === 0)) {
      return view.toString('latin1', i + STAMP_PREFIX.length, j);
    }
  }
  return null;
}

/** NUL-terminated absolute paths ending in /qemu: CONFIG_QEMU_MODDIR among them. */
function findQemuDirs(view: Buffer): string[] {
  const out: string[] = [];
  for (let i = view.indexOf(QEMU_DIR_SUFFIX); i >= 0; i = view.indexOf(QEMU_DIR_SUFFIX, i + 1)) {
    let start = i;
    while (start > 0 && i - start < 512 && isPathByte(view[start - 1]!)) start--;
    if (view[start] === 0x2f && (start === 0 || view[start - 1] === 0)) {
      out.push(view.toString('latin1', start, i + QEMU_DIR_SUFFIX.length - 1));
    }
  }
  return out;
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);
}
function isPathByte(c: number): boolean {
  return c > 0x20 && c < 0x7f;
}

function readWrapper(fd: number, size: number): EmulatorContents {
  const buf = Buffer.alloc(Math.min(size, MAX_SCRIPT_BYTES));
  const n = fs.readSync(fd, buf, 0, buf.length, 0);
  const script = parseWrapperScript(buf.subarray(0, n).toString('utf8'));
  return { ...noFacts('wrapper'), ...script };
}

/**
 * Finds what a wrapper script execs and the QEMU_MODULE_DIR it sets, when
 * they are literal: `exec /path/qemu "$@"`, or `exe=/path; exec "$exe"`
 * (Debian's qemu-system-i386). Anything computed is left unknown rather
 * than guessed.
 */
export function parseWrapperScript(script: string): { target: string | null; moduleDir: string | null } {
  const vars = new Map<string, string>();
  let target: string | null = null;
  let moduleDir: string | null = null;
  for (const rawLine of script.split('\n')) {
    const line = rawLine.replace(/(^|\s)#.*$/, '').trim();
    if (!line) continue;
    for (const m of line.matchAll(
      /(?:^|[\s;])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=("[^"$`]*"|'[^']*'|[^\s;"'$`]+)/g,
    )) {
      const value = unquote(m[2]!);
      if (!vars.has(m[1]!)) vars.set(m[1]!, value);
      if (m[1] === 'QEMU_MODULE_DIR' && value.startsWith('/')) moduleDir ??= value;
    }
    const exec = /(?:^|[\s;])exec\s+(.*)$/.exec(line);
    if (exec && target === null) target = execTarget(exec[1]!, vars);
  }
  return { target, moduleDir };
}

function execTarget(rest: string, vars: Map<string, string>): string | null {
  const words = rest.split(/\s+/).filter(Boolean);
  let i = 0;
  if (words[i] === 'env' || words[i] === '/usr/bin/env') i++;
  while (i < words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i]!)) i++;
  const word = words[i];
  if (!word) return null;
  const ref = /^"?\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?"?$/.exec(word);
  const value = ref ? (vars.get(ref[1]!) ?? null) : unquote(word);
  return value && value.startsWith('/') && !/[$`*?]/.test(value) ? value : null;
}

function unquote(s: string): string {
  return (s.startsWith('"') && s.endsWith('"')) || (s.startsWith("'") && s.endsWith("'")) ? s.slice(1, -1) : s;
}
