// Bounded reader of the module table (`qemu_modinfo[]`) built into a QEMU
// emulator ELF file: which module provides which QOM types, for which target.

import * as os from 'node:os';
import { ElfError, readElfIdent, readExact } from './elf';

// The emulator is never run, so its pointers are resolved the way the
// dynamic loader would: from RELATIVE relocations (PIE) or from the bytes in
// place (non-PIE, RELR). Emulator files sit in directories that package
// managers and sometimes users write to, so as in elf.ts every size, offset
// and pointer from the file is checked before use and every repeated
// structure is walked a bounded number of times.

export interface ModinfoEntry {
  name: string;
  arch: string | null;
  objs: string[];
  deps: string[];
}

// Generous for real emulators (QEMU 7.2: 67 entries, 3 objs at most, 122k
// relocations, 20k dynamic symbols) yet small enough that a hostile file
// cannot make one call allocate or read much.
const MAX_ENTRIES = 4096;
const MAX_STRING_BYTES = 256;
const MAX_ARRAY_ITEMS = 256;
/** Across all of a table's objs and deps; the real table has about 150. */
const MAX_TOTAL_ITEMS = 65536;
const MAX_SECTIONS = 4096;
const MAX_SEGMENTS = 4096;
const MAX_SYMBOLS = 1_000_000;
const MAX_REGION_BYTES = 16 * 1024 * 1024;
const MAX_TOTAL_BYTES = 64 * 1024 * 1024;
/** Held in memory whole: the real table is 2.9 MB (122k entries). */
const MAX_RELOC_BYTES = 24 * 1024 * 1024;
/** Relocations kept because they fall in a range we look at; real files keep a few hundred. */
const MAX_KEPT_RELOCS = 1 << 16;
/** Strings and array slots are read through a small block cache: they cluster in .rodata and .data. */
const BLOCK_BYTES = 16 * 1024;

const EV_CURRENT = 1;
const ET_EXEC = 2;
const ET_DYN = 3;
const EM_X86_64 = 62;
const EM_AARCH64 = 183;
const R_X86_64_RELATIVE = 8;
const R_AARCH64_RELATIVE = 1027;
/** R_*_NONE is 0 on both machines. */
const R_NONE = 0;

const SHT_NULL = 0;
const SHT_STRTAB = 3;
const SHT_RELA = 4;
const SHT_NOBITS = 8;
const SHT_DYNSYM = 11;
const SHT_GNU_HASH = 0x6ffffff6;
const SHF_ALLOC = 2;
const SHN_UNDEF = 0;
const PT_LOAD = 1;

const EHDR_SIZE = 64;
const SHDR_SIZE = 64;
const PHDR_SIZE = 56;
const SYM_SIZE = 24;
const RELA_SIZE = 24;
const PTR = 8;
/** struct QemuModinfo { name, arch, objs, deps, opts }: five pointers on LP64. */
const ENTRY_SIZE = 5 * PTR;
const SYMBOL_NAME = Buffer.from('qemu_modinfo\0', 'latin1');

/**
 * Stands for a 64-bit value above 2^53. Such a value can be no address or
 * offset we could use, and Infinity fails every range check it meets, so
 * the rest of the code can do plain Number arithmetic.
 */
const UNSAFE = Infinity;
/** Marks a slot whose relocation is not RELATIVE: its value depends on symbol lookup. */
const NOT_RELATIVE = -1;
const TWO_32 = 0x1_0000_0000;
const HOST_LE = os.endianness() === 'LE';

interface Context {
  fd: number;
  fileSize: number;
  bytesRead: number;
  blocks: Map<number, Buffer>;
  segments: Segment[];
}

interface Section {
  type: number;
  flags: number;
  offset: number;
  size: number;
  link: number;
  entsize: number;
}

interface Segment {
  offset: number;
  vaddr: number;
  filesz: number;
}

/** Half-open [start, end) virtual address range. */
type Range = [number, number];

/**
 * Reads the module table of the emulator open on `fd`, whose size the
 * caller has measured (fstat). null when the binary has no table: not a
 * modular build, not ELF64 little-endian x86_64/aarch64, or no
 * `qemu_modinfo` symbol. Throws ElfError, and nothing else, on a file that
 * is not ELF or is malformed. Reads only at explicit positions, so the
 * descriptor's file position is left alone.
 */
export function readModinfo(fd: number, fileSize: number): ModinfoEntry[] | null {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new ElfError(`invalid file size ${String(fileSize)}`);
  }
  try {
    return parse({ fd, fileSize, bytesRead: 0, blocks: new Map(), segments: [] });
  } catch (err) {
    if (err instanceof ElfError) throw err;
    // Same contract as readElfInfo: a parser bug must not escape as some
    // other error type and abort the caller's pass over all emulators.
    const reason = err instanceof Error ? err.message : String(err);
    throw new ElfError(`internal modinfo parser error: ${reason}`, { cause: err });
  }
}

function parse(ctx: Context): ModinfoEntry[] | null {
  const { ident: head, is64, le } = readElfIdent(ctx.fd, ctx.fileSize);
  // A well-formed file we have no pointer layout for is simply not ours.
  if (!is64 || !le) return null;
  if (head.length < EHDR_SIZE) throw new ElfError('truncated ELF header');

  const type = head.readUInt16LE(16);
  const machine = head.readUInt16LE(18);
  if (head.readUInt32LE(20) !== EV_CURRENT) throw new ElfError(`unsupported ELF version ${head.readUInt32LE(20)}`);
  if (head.readUInt16LE(52) !== EHDR_SIZE) throw new ElfError(`bad ELF header size ${head.readUInt16LE(52)}`);
  if (type !== ET_EXEC && type !== ET_DYN) return null;
  const relative = machine === EM_X86_64 ? R_X86_64_RELATIVE : machine === EM_AARCH64 ? R_AARCH64_RELATIVE : null;
  if (relative === null) return null;

  const sections = readSectionHeaders(ctx, u64(head, 40), head.readUInt16LE(58), head.readUInt16LE(60));
  // sstrip'd files keep only the loader's view; a qemu_modinfo may be in
  // there, so saying "no table" would be a guess.
  if (sections.length === 0) throw new ElfError('no section headers; cannot locate qemu_modinfo');
  ctx.segments = readLoadSegments(ctx, u64(head, 32), head.readUInt16LE(54), head.readUInt16LE(56));

  const symbol = findSymbol(ctx, sections);
  if (symbol === null) return null;
  return readTable(ctx, sections, relative, symbol.value, symbol.size);
}

// ---------------------------------------------------------------- I/O

/** Little-endian u64 as a Number, or UNSAFE when it does not fit exactly. */
function u64(buf: Buffer, pos: number): number {
  const hi = buf.readUInt32LE(pos + 4);
  return hi > 0x1fffff ? UNSAFE : hi * TWO_32 + buf.readUInt32LE(pos);
}

/** An address or offset for a message. */
function hex(n: number): string {
  return n === UNSAFE ? '(above 2^53)' : `0x${n.toString(16)}`;
}

/** u64 from two little-endian words; see u64. */
function w64(words: Uint32Array, i: number): number {
  const hi = words[i + 1]!;
  return hi > 0x1fffff ? UNSAFE : hi * TWO_32 + words[i]!;
}

/**
 * The buffer as little-endian 32-bit words, for the two walks over tens of
 * thousands of entries: typed-array loads stay cheap even before the JIT
 * has warmed up, and a hook runs in a fresh process each time. On a
 * big-endian host the buffer's bytes are swapped in place, so read it only
 * through the words afterwards.
 */
function leWords(buf: Buffer): Uint32Array {
  if (buf.byteOffset % 4 !== 0) buf = Buffer.from(buf);
  const words = buf.subarray(0, buf.length - (buf.length % 4));
  if (!HOST_LE) words.swap32();
  return new Uint32Array(words.buffer, words.byteOffset, words.length / 4);
}

/** Charges `len` bytes to the per-call budget after checking [offset, offset+len) against the file. */
function charge(ctx: Context, offset: number, len: number, what: string): void {
  if (offset > ctx.fileSize) throw new ElfError(`${what} offset ${hex(offset)} beyond end of file`);
  if (offset + len > ctx.fileSize) throw new ElfError(`truncated ${what}`);
  if (ctx.bytesRead + len > MAX_TOTAL_BYTES) throw new ElfError('total bytes read exceeds limit');
  ctx.bytesRead += len;
}

function readRegion(ctx: Context, offset: number, size: number, what: string): Buffer {
  if (size > MAX_REGION_BYTES) throw new ElfError(`${what} size ${size} exceeds limit`);
  charge(ctx, offset, size, what);
  return readExact(ctx.fd, offset, size, what);
}

/** The file block holding `offset`, cut short at the end of the file. */
function block(ctx: Context, index: number): Buffer {
  let b = ctx.blocks.get(index);
  if (b === undefined) {
    const start = index * BLOCK_BYTES;
    const len = Math.min(BLOCK_BYTES, ctx.fileSize - start);
    charge(ctx, start, len, 'data block');
    b = readExact(ctx.fd, start, len, 'data block');
    ctx.blocks.set(index, b);
  }
  return b;
}

/** Up to `len` bytes at `offset` (fewer only at the end of the file), through the block cache. */
function bytesAt(ctx: Context, offset: number, len: number): Buffer {
  const end = Math.min(offset + len, ctx.fileSize);
  if (offset >= end) throw new ElfError(`offset ${hex(offset)} beyond end of file`);
  const first = Math.floor(offset / BLOCK_BYTES);
  const last = Math.floor((end - 1) / BLOCK_BYTES);
  const start = offset - first * BLOCK_BYTES;
  if (first === last) return block(ctx, first).subarray(start, start + (end - offset));
  const parts: Buffer[] = [];
  for (let i = first; i <= last; i++) parts.push(block(ctx, i));
  return Buffer.concat(parts).subarray(start, start + (end - offset));
}

// ---------------------------------------------------------------- headers

function readSectionHeaders(ctx: Context, shoff: number, shentsize: number, shnum: number): Section[] {
  if (shoff === 0) return [];
  if (shentsize !== SHDR_SIZE) throw new ElfError(`bad section header size ${shentsize}`);
  let count = shnum;
  if (count === 0) {
    // Extended numbering: from 0xff00 sections on, the count lives in section 0's sh_size.
    const first = readRegion(ctx, shoff, SHDR_SIZE, 'section header table');
    count = u64(first, 32);
  }
  if (count === 0) return [];
  if (count > MAX_SECTIONS) throw new ElfError(`section header count ${count} exceeds limit`);
  const table = readRegion(ctx, shoff, count * SHDR_SIZE, 'section header table');
  const sections: Section[] = [];
  for (let i = 0; i < count; i++) {
    const p = i * SHDR_SIZE;
    const s: Section = {
      type: table.readUInt32LE(p + 4),
      flags: table.readUInt32LE(p + 8), // the low word holds every flag we test
      offset: u64(table, p + 24),
      size: u64(table, p + 32),
      link: table.readUInt32LE(p + 40),
      entsize: u64(table, p + 56),
    };
    if (s.type !== SHT_NULL && s.type !== SHT_NOBITS && s.offset + s.size > ctx.fileSize) {
      throw new ElfError(`section ${i} extends beyond end of file`);
    }
    sections.push(s);
  }
  return sections;
}

function readLoadSegments(ctx: Context, phoff: number, phentsize: number, phnum: number): Segment[] {
  if (phnum === 0 || phoff === 0) return [];
  if (phentsize !== PHDR_SIZE) throw new ElfError(`bad program header size ${phentsize}`);
  if (phnum > MAX_SEGMENTS) throw new ElfError(`program header count ${phnum} exceeds limit`);
  const table = readRegion(ctx, phoff, phnum * PHDR_SIZE, 'program header table');
  const segments: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const p = i * PHDR_SIZE;
    if (table.readUInt32LE(p) !== PT_LOAD) continue;
    const seg = { offset: u64(table, p + 8), vaddr: u64(table, p + 16), filesz: u64(table, p + 32) };
    // Every mapped address is then exact, and so is every range end derived from one.
    if (!Number.isSafeInteger(seg.offset + seg.filesz) || !Number.isSafeInteger(seg.vaddr + seg.filesz)) continue;
    segments.push(seg);
  }
  return segments;
}

/** File offset of a virtual address, and how many file bytes of its PT_LOAD follow it; null if unmapped. */
function mapAddress(ctx: Context, va: number): { offset: number; available: number } | null {
  for (const p of ctx.segments) {
    if (va < p.vaddr) continue;
    const delta = va - p.vaddr;
    if (delta < p.filesz) return { offset: p.offset + delta, available: p.filesz - delta };
  }
  return null;
}

function mapOrThrow(ctx: Context, va: number, what: string): { offset: number; available: number } {
  const m = mapAddress(ctx, va);
  if (m === null) throw new ElfError(`${what} address ${hex(va)} is not in any loadable segment`);
  return m;
}

// ---------------------------------------------------------------- symbol

/** The first defined dynamic symbol named qemu_modinfo. QEMU exports it (-rdynamic) for its modules. */
function findSymbol(ctx: Context, sections: Section[]): { value: number; size: number } | null {
  const index = sections.findIndex((s) => s.type === SHT_DYNSYM);
  const dynsym = sections[index];
  if (dynsym === undefined || dynsym.size === 0) return null;
  if (dynsym.entsize !== SYM_SIZE) throw new ElfError(`bad dynamic symbol size ${dynsym.entsize}`);
  const strtab = sections[dynsym.link];
  if (dynsym.link === 0 || strtab === undefined) {
    throw new ElfError(`dynamic symbol table sh_link ${dynsym.link} out of range`);
  }
  if (strtab.type !== SHT_STRTAB) throw new ElfError('dynamic symbol table sh_link is not a string table');
  const count = Math.floor(dynsym.size / SYM_SIZE);
  if (count > MAX_SYMBOLS) throw new ElfError(`symbol count ${count} exceeds limit`);
  const hash = sections.find((s) => s.type === SHT_GNU_HASH && s.link === index);
  return hash !== undefined ? hashLookup(ctx, hash, dynsym, strtab, count) : scanSymbols(ctx, dynsym, strtab, count);
}

/**
 * Looks the symbol up through .gnu.hash, as the loader would: a few small
 * reads instead of the whole 1 MB of .dynsym and .dynstr.
 */
function hashLookup(
  ctx: Context,
  hash: Section,
  dynsym: Section,
  strtab: Section,
  count: number,
): { value: number; size: number } | null {
  if (hash.size < 16) throw new ElfError('truncated GNU hash table');
  const head = bytesAt(ctx, hash.offset, 16);
  const nbuckets = head.readUInt32LE(0);
  const symoffset = head.readUInt32LE(4);
  const bloomWords = head.readUInt32LE(8);
  const buckets = 16 + bloomWords * PTR;
  const chain = buckets + nbuckets * 4;
  if (chain > hash.size) throw new ElfError('GNU hash buckets extend beyond their section');
  if (nbuckets === 0) return null;

  const h = gnuHash(SYMBOL_NAME.subarray(0, SYMBOL_NAME.length - 1));
  let i = bytesAt(ctx, hash.offset + buckets + (h % nbuckets) * 4, 4).readUInt32LE(0);
  if (i === 0) return null;
  if (i < symoffset) throw new ElfError('GNU hash bucket points below symoffset');
  for (; ; i++) {
    if (i >= count) throw new ElfError('GNU hash chain runs past the symbol table');
    const at = chain + (i - symoffset) * 4;
    if (at + 4 > hash.size) throw new ElfError('GNU hash chain runs past its section');
    const hv = bytesAt(ctx, hash.offset + at, 4).readUInt32LE(0);
    if ((hv | 1) === (h | 1)) {
      const sym = bytesAt(ctx, dynsym.offset + i * SYM_SIZE, SYM_SIZE);
      const name = sym.readUInt32LE(0);
      if (
        name + SYMBOL_NAME.length <= strtab.size &&
        bytesAt(ctx, strtab.offset + name, SYMBOL_NAME.length).equals(SYMBOL_NAME) &&
        sym.readUInt16LE(6) !== SHN_UNDEF
      ) {
        return { value: u64(sym, 8), size: u64(sym, 16) };
      }
    }
    if ((hv & 1) === 1) return null;
  }
}

function gnuHash(name: Buffer): number {
  let h = 5381;
  for (const c of name) h = (h * 33 + c) >>> 0;
  return h;
}

/** Without a GNU hash table (old or unusual linkers), every symbol is looked at. */
function scanSymbols(
  ctx: Context,
  dynsym: Section,
  strtab: Section,
  count: number,
): { value: number; size: number } | null {
  const symbols = leWords(readRegion(ctx, dynsym.offset, count * SYM_SIZE, 'dynamic symbol table'));
  const strings = readRegion(ctx, strtab.offset, strtab.size, 'dynamic string table');
  const first = SYMBOL_NAME[0];
  const words = SYM_SIZE / 4;
  // Elf64_Sym: st_name, then st_info, st_other and st_shndx in one word, st_value, st_size.
  for (let w = words; w < count * words; w += words) {
    const name = symbols[w]!;
    // Checking one byte first keeps the 20k-symbol walk cheap.
    if (strings[name] !== first || name + SYMBOL_NAME.length > strings.length) continue;
    if (strings.compare(SYMBOL_NAME, 0, SYMBOL_NAME.length, name, name + SYMBOL_NAME.length) !== 0) continue;
    if (symbols[w + 1]! >>> 16 === SHN_UNDEF) continue;
    return { value: w64(symbols, w + 2), size: w64(symbols, w + 4) };
  }
  return null;
}

// ---------------------------------------------------------------- relocations

/** One dynamic relocation section as little-endian words, and how many leading entries are in r_offset order. */
interface RelocTable {
  words: Uint32Array;
  count: number;
  sorted: number;
}

/** Elf64_Rela as words: r_offset (0, 1), r_info with the type in its low word (2, 3), r_addend (4, 5). */
const RELA_WORDS = RELA_SIZE / 4;

/**
 * Reads the dynamic relocation sections. Linkers sort the RELATIVE
 * relocations (-z combreloc, the default) and put them first, so the slots
 * the table needs can mostly be found by binary search; measuring the
 * sorted prefix here costs integer compares only.
 */
function loadRelocations(ctx: Context, sections: Section[]): RelocTable[] {
  // RELR and REL keep their addends in place, which the raw-slot fallback reads.
  const relas = sections.filter((s) => s.type === SHT_RELA && (s.flags & SHF_ALLOC) !== 0 && s.size > 0);
  let bytes = 0;
  for (const s of relas) {
    if (s.entsize !== RELA_SIZE) throw new ElfError(`bad relocation entry size ${s.entsize}`);
    if (s.size % RELA_SIZE !== 0)
      throw new ElfError(`relocation section size ${s.size} is not a multiple of ${RELA_SIZE}`);
    bytes += s.size;
  }
  if (bytes > MAX_RELOC_BYTES) throw new ElfError(`relocation tables of ${bytes} bytes exceed limit`);
  return relas.map((s) => {
    charge(ctx, s.offset, s.size, 'relocation table');
    // Not zero-filled: readExact fills it or throws.
    const words = leWords(readExact(ctx.fd, s.offset, s.size, 'relocation table', Buffer.allocUnsafeSlow(s.size)));
    const count = s.size / RELA_SIZE;
    let sorted = count === 0 ? 0 : 1;
    for (let w = RELA_WORDS; sorted < count; sorted++, w += RELA_WORDS) {
      const high = words[w + 1]!;
      const prevHigh = words[w + 1 - RELA_WORDS]!;
      if (high < prevHigh || (high === prevHigh && words[w]! < words[w - RELA_WORDS]!)) break;
    }
    return { words, count, sorted };
  });
}

function relocAddress(words: Uint32Array, i: number): number {
  // Inexact above 2^53, but rounding keeps the order, and every address we
  // look for is below 2^53.
  return words[i * RELA_WORDS + 1]! * TWO_32 + words[i * RELA_WORDS]!;
}

/**
 * Values of the pointer slots that RELATIVE relocations set, for slots
 * inside `ranges` (sorted, disjoint) only: the table needs a few hundred of
 * the ~120k relocations. A later relocation of the same slot wins, as it
 * does in the loader.
 */
function relocationsIn(tables: RelocTable[], relative: number, ranges: Range[]): Map<number, number> {
  const kept = new Map<number, number>();
  if (ranges.length === 0) return kept;
  const keep = (words: Uint32Array, i: number, at: number): void => {
    const type = words[i * RELA_WORDS + 2]!;
    if (type === R_NONE) return;
    kept.set(at, type === relative ? w64(words, i * RELA_WORDS + 4) : NOT_RELATIVE);
    if (kept.size > MAX_KEPT_RELOCS) throw new ElfError('too many relocations inside the module table');
  };
  const lo = ranges[0]![0];
  const hi = ranges[ranges.length - 1]![1];
  // The bounding box as word pairs, so that the walk over the unsorted
  // rest rejects entries with integer compares alone: combining words into
  // a double would allocate a heap number per entry until the JIT kicks in.
  const loHigh = Math.floor(lo / TWO_32);
  const hiHigh = Math.floor((hi - 1) / TWO_32);
  const loLow = lo % TWO_32;
  const hiLow = (hi - 1) % TWO_32;
  for (const { words, count, sorted } of tables) {
    for (const [start, end] of ranges) {
      let a = 0;
      let b = sorted;
      while (a < b) {
        const mid = (a + b) >>> 1;
        if (relocAddress(words, mid) < start) a = mid + 1;
        else b = mid;
      }
      for (let i = a; i < sorted; i++) {
        const at = relocAddress(words, i);
        if (at >= end) break;
        keep(words, i, at);
      }
    }
    for (let i = sorted, w = sorted * RELA_WORDS; i < count; i++, w += RELA_WORDS) {
      const high = words[w + 1]!;
      if (high < loHigh || high > hiHigh) continue;
      const low = words[w]!;
      if ((high === loHigh && low < loLow) || (high === hiHigh && low > hiLow)) continue;
      const at = high * TWO_32 + low;
      if (inRanges(ranges, at)) keep(words, i, at);
    }
  }
  return kept;
}

/** Sorts and merges ranges so that membership is one binary search. */
function mergeRanges(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

function inRanges(ranges: Range[], at: number): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = ranges[mid]!;
    if (at < r[0]) hi = mid - 1;
    else if (at >= r[1]) lo = mid + 1;
    else return true;
  }
  return false;
}

// ---------------------------------------------------------------- table

/**
 * The pointer in the slot at `va` as the loader leaves it (less the load
 * bias), or null for NULL. A relocated slot is never NULL, whatever its
 * addend: the loader adds the load address.
 */
function slot(relocs: Map<number, number>, va: number, raw: () => number): number | null {
  const r = relocs.get(va);
  if (r === NOT_RELATIVE) throw new ElfError(`pointer at ${hex(va)} has a non-RELATIVE relocation`);
  if (r !== undefined) return r;
  const v = raw();
  return v === 0 ? null : v;
}

function rawSlot(ctx: Context, va: number): number {
  const { offset, available } = mapOrThrow(ctx, va, 'pointer slot');
  if (available < PTR) throw new ElfError(`pointer slot at ${hex(va)} runs past its segment`);
  const b = bytesAt(ctx, offset, PTR);
  if (b.length < PTR) throw new ElfError(`truncated pointer slot at ${hex(va)}`);
  return u64(b, 0);
}

function readTable(ctx: Context, sections: Section[], relative: number, va: number, size: number): ModinfoEntry[] {
  // The table's extent comes from st_size; without one it could only be guessed.
  if (size === 0 || size % ENTRY_SIZE !== 0) {
    throw new ElfError(`qemu_modinfo size ${size} is not a positive multiple of ${ENTRY_SIZE}`);
  }
  if (size / ENTRY_SIZE > MAX_ENTRIES + 1)
    throw new ElfError(`qemu_modinfo of ${size / ENTRY_SIZE} entries exceeds limit`);
  const where = mapOrThrow(ctx, va, 'qemu_modinfo');
  if (where.available < size) throw new ElfError('qemu_modinfo runs past the end of its segment');
  const table = readRegion(ctx, where.offset, size, 'qemu_modinfo');
  const relocs = loadRelocations(ctx, sections);

  // The table's own slots first: only they tell where the arrays are.
  const tableRelocs = relocationsIn(relocs, relative, [[va, va + size]]);
  const tableSlot = (i: number, field: number): number | null => {
    const pos = i * ENTRY_SIZE + field * PTR;
    return slot(tableRelocs, va + pos, () => u64(table, pos));
  };
  const rows: Array<{ name: number; arch: number | null; objs: number | null; deps: number | null }> = [];
  for (let i = 0; ; i++) {
    if (i === size / ENTRY_SIZE) throw new ElfError('qemu_modinfo has no terminating entry');
    const name = tableSlot(i, 0);
    if (name === null) break;
    rows.push({ name, arch: tableSlot(i, 1), objs: tableSlot(i, 2), deps: tableSlot(i, 3) });
  }

  // Then the string arrays. Their lengths are unknown until their
  // relocations are, so take every slot up to the item limit plus the NULL.
  const arrayRanges: Range[] = [];
  for (const r of rows) {
    for (const a of [r.objs, r.deps]) {
      if (a === null) continue;
      const m = mapOrThrow(ctx, a, 'string array');
      arrayRanges.push([a, a + Math.min(m.available, (MAX_ARRAY_ITEMS + 1) * PTR)]);
    }
  }
  const arrayRelocs = relocationsIn(relocs, relative, mergeRanges(arrayRanges));
  const strings = new Map<number, string>();
  const str = (p: number): string => {
    let s = strings.get(p);
    if (s === undefined) {
      s = readString(ctx, p);
      strings.set(p, s);
    }
    return s;
  };
  let items = 0;
  const list = (a: number | null): string[] => {
    if (a === null) return [];
    const out: string[] = [];
    for (let k = 0; ; k++) {
      const p = slot(arrayRelocs, a + k * PTR, () => rawSlot(ctx, a + k * PTR));
      if (p === null) return out;
      if (k === MAX_ARRAY_ITEMS) throw new ElfError(`string array at ${hex(a)} exceeds ${MAX_ARRAY_ITEMS} items`);
      if (++items > MAX_TOTAL_ITEMS)
        throw new ElfError(`qemu_modinfo lists more than ${MAX_TOTAL_ITEMS} objs and deps`);
      out.push(str(p));
    }
  };
  return rows.map((r) => ({
    name: str(r.name),
    arch: r.arch === null ? null : str(r.arch),
    objs: list(r.objs),
    deps: list(r.deps),
  }));
}

/**
 * The NUL-terminated string at `va`. UTF-8, because QEMU builds module
 * file names from these bytes and readdir() names are decoded as UTF-8.
 */
function readString(ctx: Context, va: number): string {
  const { offset, available } = mapOrThrow(ctx, va, 'string');
  const b = bytesAt(ctx, offset, Math.min(available, MAX_STRING_BYTES + 1));
  const end = b.indexOf(0);
  if (end < 0) {
    if (b.length > MAX_STRING_BYTES) throw new ElfError(`string at ${hex(va)} exceeds ${MAX_STRING_BYTES} bytes`);
    throw new ElfError(`string at ${hex(va)} is not terminated`);
  }
  return b.toString('utf8', 0, end);
}
