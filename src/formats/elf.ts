// Bounded ELF reader: pulls the GNU build-id and QEMU's `qemu_stamp_<hex>`
// dynamic symbol out of a module file.
//
// Module directories are writable by package managers and sometimes by
// users, and a scan must survive whatever it finds there, so every size and
// offset taken from the file is checked before use, every read is capped,
// and every structure that could repeat is walked a bounded number of times.
// Any problem with the file surfaces as an ElfError with a one-line reason.

import * as fs from 'node:fs';

export interface ElfInfo {
  /** NT_GNU_BUILD_ID note descriptor, lowercase hex, or null if none. */
  buildId: string | null;
  /** Suffix of the first dynamic symbol named `qemu_stamp_*`, or null. */
  stamp: string | null;
}

export class ElfError extends Error {
  override name = 'ElfError';
}

// Limits, generous for real modules and emulators (tens of sections, a few
// thousand dynamic symbols) yet small enough that a hostile file cannot
// make one call allocate or read much.
const MAX_SECTIONS = 4096;
const MAX_SEGMENTS = 4096;
const MAX_REGION_BYTES = 16 * 1024 * 1024;
const MAX_TOTAL_BYTES = 64 * 1024 * 1024;
const MAX_SYMBOLS = 1_000_000;
const MAX_NOTES = 4096;
const MAX_BUILD_ID_BYTES = 1024;
const HASH_CHAIN_CHUNK = 1024;

const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ELFDATA2MSB = 2;
const EV_CURRENT = 1;
const EM_S390 = 22;
const EM_ALPHA = 0x9026;

const SHT_NULL = 0;
const SHT_STRTAB = 3;
const SHT_NOTE = 7;
const SHT_NOBITS = 8;
const SHT_DYNSYM = 11;

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_NOTE = 4;

const SHN_XINDEX = 0xffff;

const DT_NULL = 0n;
const DT_HASH = 4n;
const DT_STRTAB = 5n;
const DT_SYMTAB = 6n;
const DT_STRSZ = 10n;
const DT_SYMENT = 11n;
const DT_GNU_HASH = 0x6ffffef5n;

const NT_GNU_BUILD_ID = 3;
const GNU_NOTE_NAME = Buffer.from('GNU\0', 'latin1');
const STAMP_PREFIX = Buffer.from('qemu_stamp_', 'latin1');

interface Context {
  fd: number;
  fileSize: number;
  is64: boolean;
  le: boolean;
  machine: number;
  bytesRead: number;
  notesWalked: number;
}

interface Header {
  phoff: bigint;
  shoff: bigint;
  phentsize: number;
  phnum: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

interface Section {
  type: number;
  offset: bigint;
  size: bigint;
  link: number;
  addralign: bigint;
  entsize: bigint;
}

interface Segment {
  type: number;
  offset: bigint;
  vaddr: bigint;
  filesz: bigint;
  align: bigint;
}

/** Sequential field reader that knows the file's class and byte order. */
class Cursor {
  constructor(
    private readonly buf: Buffer,
    private readonly ctx: Context,
    public pos = 0,
  ) {}

  u16(): number {
    const v = this.ctx.le ? this.buf.readUInt16LE(this.pos) : this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    const v = this.ctx.le ? this.buf.readUInt32LE(this.pos) : this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** Elf_Addr / Elf_Off / Elf_Xword: class-sized, kept exact as a bigint. */
  word(): bigint {
    if (!this.ctx.is64) return BigInt(this.u32());
    const v = this.ctx.le ? this.buf.readBigUInt64LE(this.pos) : this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
}

/**
 * Reads the build-id and QEMU stamp of the ELF file open on `fd`, whose size
 * the caller has measured (fstat). Reads only at explicit positions, so the
 * descriptor's file position is left alone. Throws ElfError, and nothing
 * else, when the file is not a readable ELF file.
 */
export function readElfInfo(fd: number, fileSize: number): ElfInfo {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new ElfError(`invalid file size ${String(fileSize)}`);
  }
  try {
    return parse(fd, fileSize);
  } catch (err) {
    if (err instanceof ElfError) throw err;
    // A parser bug must become a per-module error rather than abort a scan
    // of a whole directory; the prefix keeps such bugs recognisable.
    const reason = err instanceof Error ? err.message : String(err);
    throw new ElfError(`internal parser error: ${reason}`, { cause: err });
  }
}

function parse(fd: number, fileSize: number): ElfInfo {
  const ctx: Context = { fd, fileSize, is64: false, le: true, machine: 0, bytesRead: 0, notesWalked: 0 };
  const header = readHeader(ctx);
  const sections = readSectionHeaders(ctx, header);
  // Stripped-to-the-bone files (sstrip) keep only program headers, so the
  // loader's view is the only one left.
  if (sections.length === 0) return infoFromSegments(ctx, header);
  return {
    buildId: buildIdFromSections(ctx, sections),
    stamp: stampFromSections(ctx, sections),
  };
}

// ---------------------------------------------------------------- I/O

/**
 * Reads [offset, offset+size) after checking it against the file, the
 * per-read cap and the per-call budget. BigInt arithmetic means hostile
 * 64-bit values can neither overflow nor lose precision.
 */
function readRegion(ctx: Context, offset: bigint, size: bigint, what: string): Buffer {
  const fileSize = BigInt(ctx.fileSize);
  if (offset > fileSize) throw new ElfError(`${what} offset 0x${offset.toString(16)} beyond end of file`);
  if (size > BigInt(MAX_REGION_BYTES)) throw new ElfError(`${what} size ${size} exceeds limit`);
  if (offset + size > fileSize) throw new ElfError(`truncated ${what}`);
  const len = Number(size);
  if (ctx.bytesRead + len > MAX_TOTAL_BYTES) throw new ElfError('total bytes read exceeds limit');
  ctx.bytesRead += len;
  return readExact(ctx.fd, Number(offset), len, what);
}

/** Exactly `length` bytes at `position` (into `into` when given), or an ElfError naming `what`. */
export function readExact(fd: number, position: number, length: number, what: string, into?: Buffer): Buffer {
  const buf = into ?? Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      n = fs.readSync(fd, buf, done, length - done, position + done);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
      throw new ElfError(`read error (${code}) in ${what}`, { cause: err });
    }
    // The file shrank after the caller measured it.
    if (n === 0) throw new ElfError(`truncated ${what}`);
    done += n;
  }
  return buf;
}

// ---------------------------------------------------------------- headers

/**
 * The first 64 bytes of an ELF file (fewer for a shorter file), checked
 * for ELF's magic, a known class, byte order and version; ElfError else.
 */
export function readElfIdent(fd: number, fileSize: number): { ident: Buffer; is64: boolean; le: boolean } {
  const ident = readExact(fd, 0, Math.min(fileSize, 64), 'ELF header');
  if (ident.length < 4 || ident[0] !== 0x7f || ident.toString('latin1', 1, 4) !== 'ELF') {
    throw new ElfError('not an ELF file');
  }
  if (ident.length < 16) throw new ElfError('truncated ELF header');
  const elfClass = ident[4];
  const data = ident[5];
  if (elfClass !== ELFCLASS32 && elfClass !== ELFCLASS64) throw new ElfError(`unsupported ELF class ${elfClass}`);
  if (data !== ELFDATA2LSB && data !== ELFDATA2MSB) throw new ElfError(`unsupported ELF data encoding ${data}`);
  if (ident[6] !== EV_CURRENT) throw new ElfError(`unsupported ELF version ${ident[6]}`);
  return { ident, is64: elfClass === ELFCLASS64, le: data === ELFDATA2LSB };
}

function readHeader(ctx: Context): Header {
  const { ident, is64, le } = readElfIdent(ctx.fd, ctx.fileSize);
  ctx.is64 = is64;
  ctx.le = le;

  const ehsize = ctx.is64 ? 64 : 52;
  if (ident.length < ehsize) throw new ElfError('truncated ELF header');
  const c = new Cursor(ident, ctx, 16);
  c.u16(); // e_type: modules are ET_DYN, emulators ET_EXEC or ET_DYN; both are fine
  ctx.machine = c.u16();
  const version = c.u32();
  if (version !== EV_CURRENT) throw new ElfError(`unsupported ELF version ${version}`);
  c.word(); // e_entry
  const phoff = c.word();
  const shoff = c.word();
  c.u32(); // e_flags
  const actualEhsize = c.u16();
  if (actualEhsize !== ehsize) throw new ElfError(`bad ELF header size ${actualEhsize}`);
  return {
    phoff,
    shoff,
    phentsize: c.u16(),
    phnum: c.u16(),
    shentsize: c.u16(),
    shnum: c.u16(),
    shstrndx: c.u16(),
  };
}

function readSectionHeaders(ctx: Context, header: Header): Section[] {
  if (header.shoff === 0n) return [];
  const entsize = ctx.is64 ? 64 : 40;
  if (header.shentsize !== entsize) throw new ElfError(`bad section header size ${header.shentsize}`);

  let count = BigInt(header.shnum);
  if (count === 0n) {
    // Extended numbering: with 0xff00 or more sections the real count is
    // kept in the sh_size of section 0.
    const first = readRegion(ctx, header.shoff, BigInt(entsize), 'section header table');
    count = parseSection(new Cursor(first, ctx)).size;
  }
  if (count === 0n) return [];
  if (count > BigInt(MAX_SECTIONS)) throw new ElfError(`section header count ${count} exceeds limit`);
  const table = readRegion(ctx, header.shoff, count * BigInt(entsize), 'section header table');
  const sections: Section[] = [];
  for (let i = 0; i < Number(count); i++) {
    sections.push(parseSection(new Cursor(table, ctx, i * entsize)));
  }
  checkSectionTable(ctx, header, sections);
  return sections;
}

/**
 * Cheap whole-table sanity checks. Real files always pass them, while a
 * table of garbage almost never does, so garbage is reported as such
 * instead of looking like a file that merely lacks a build-id and stamp.
 */
function checkSectionTable(ctx: Context, header: Header, sections: Section[]): void {
  const { shstrndx } = header;
  if (shstrndx !== SHN_XINDEX && shstrndx >= sections.length) {
    throw new ElfError(`section name table index ${shstrndx} out of range`);
  }
  const fileSize = BigInt(ctx.fileSize);
  sections.forEach((s, i) => {
    if (s.type === SHT_NULL || s.type === SHT_NOBITS) return;
    if (s.offset + s.size > fileSize) throw new ElfError(`section ${i} extends beyond end of file`);
  });
}

function parseSection(c: Cursor): Section {
  c.u32(); // sh_name: sections are recognised by type, names are not trusted
  const type = c.u32();
  c.word(); // sh_flags
  c.word(); // sh_addr
  const offset = c.word();
  const size = c.word();
  const link = c.u32();
  c.u32(); // sh_info
  const addralign = c.word();
  const entsize = c.word();
  return { type, offset, size, link, addralign, entsize };
}

function readProgramHeaders(ctx: Context, header: Header): Segment[] {
  if (header.phnum === 0 || header.phoff === 0n) return [];
  const entsize = ctx.is64 ? 56 : 32;
  if (header.phentsize !== entsize) throw new ElfError(`bad program header size ${header.phentsize}`);
  // PN_XNUM would need section 0, which a file without sections lacks.
  if (header.phnum > MAX_SEGMENTS) throw new ElfError(`program header count ${header.phnum} exceeds limit`);
  const table = readRegion(ctx, header.phoff, BigInt(header.phnum * entsize), 'program header table');
  const segments: Segment[] = [];
  for (let i = 0; i < header.phnum; i++) {
    segments.push(parseSegment(new Cursor(table, ctx, i * entsize), ctx.is64));
  }
  return segments;
}

function parseSegment(c: Cursor, is64: boolean): Segment {
  // Elf64_Phdr moved p_flags up next to p_type for alignment.
  const type = c.u32();
  if (is64) c.u32(); // p_flags
  const offset = c.word();
  const vaddr = c.word();
  c.word(); // p_paddr
  const filesz = c.word();
  c.word(); // p_memsz
  if (!is64) c.u32(); // p_flags
  const align = c.word();
  return { type, offset, vaddr, filesz, align };
}

// ---------------------------------------------------------------- notes

function buildIdFromSections(ctx: Context, sections: Section[]): string | null {
  for (const s of sections) {
    if (s.type !== SHT_NOTE || s.size === 0n) continue;
    const buildId = findBuildId(ctx, readRegion(ctx, s.offset, s.size, 'note section'), s.addralign);
    if (buildId !== null) return buildId;
  }
  return null;
}

function buildIdFromSegments(ctx: Context, segments: Segment[]): string | null {
  for (const p of segments) {
    if (p.type !== PT_NOTE || p.filesz === 0n) continue;
    const buildId = findBuildId(ctx, readRegion(ctx, p.offset, p.filesz, 'note segment'), p.align);
    if (buildId !== null) return buildId;
  }
  return null;
}

/**
 * Walks the notes in one note section or segment. Name and descriptor are
 * padded to 4 bytes, or to 8 when the container says so (as binutils does
 * for .note.gnu.property on 64-bit targets).
 */
function findBuildId(ctx: Context, buf: Buffer, containerAlign: bigint): string | null {
  const align = containerAlign === 8n ? 8 : 4;
  let pos = 0;
  // Fewer than 12 trailing bytes cannot hold a note header: padding.
  while (pos + 12 <= buf.length) {
    if (++ctx.notesWalked > MAX_NOTES) throw new ElfError(`note count exceeds limit of ${MAX_NOTES}`);
    const c = new Cursor(buf, ctx, pos);
    const namesz = c.u32();
    const descsz = c.u32();
    const type = c.u32();
    // Plain Number math: each term is below 2^33, so the sums stay exact.
    const nameStart = pos + 12;
    // Padding is to the alignment of the position within the container,
    // not of the size: an 8-aligned note's descriptor starts at 16, not 20.
    const descStart = alignUp(nameStart + namesz, align);
    if (descStart + descsz > buf.length) throw new ElfError('note extends beyond its section');
    if (type === NT_GNU_BUILD_ID && namesz === 4 && buf.compare(GNU_NOTE_NAME, 0, 4, nameStart, nameStart + 4) === 0) {
      if (descsz > MAX_BUILD_ID_BYTES) throw new ElfError(`build-id of ${descsz} bytes exceeds limit`);
      // An empty build-id identifies nothing; keep looking.
      if (descsz > 0) return buf.toString('hex', descStart, descStart + descsz);
    }
    pos = alignUp(descStart + descsz, align);
  }
  return null;
}

function alignUp(n: number, align: number): number {
  // Not bitwise: sizes can exceed 2^31.
  return Math.ceil(n / align) * align;
}

// ---------------------------------------------------------------- symbols

function symbolSize(ctx: Context): number {
  return ctx.is64 ? 24 : 16;
}

function stampFromSections(ctx: Context, sections: Section[]): string | null {
  const dynsym = sections.find((s) => s.type === SHT_DYNSYM);
  if (dynsym === undefined || dynsym.size === 0n) return null;
  if (dynsym.link === 0 || dynsym.link >= sections.length) {
    throw new ElfError(`dynamic symbol table sh_link ${dynsym.link} out of range`);
  }
  const strtab = sections[dynsym.link] as Section;
  if (strtab.type !== SHT_STRTAB) throw new ElfError('dynamic symbol table sh_link is not a string table');
  const entsize = symbolSize(ctx);
  if (dynsym.entsize !== BigInt(entsize)) throw new ElfError(`bad dynamic symbol size ${dynsym.entsize}`);

  const count = dynsym.size / BigInt(entsize);
  if (count > BigInt(MAX_SYMBOLS)) throw new ElfError(`symbol count ${count} exceeds limit`);
  const symbols = readRegion(ctx, dynsym.offset, count * BigInt(entsize), 'dynamic symbol table');
  const strings = readRegion(ctx, strtab.offset, strtab.size, 'dynamic string table');
  return findStamp(ctx, symbols, Number(count), strings);
}

function findStamp(ctx: Context, symbols: Buffer, count: number, strings: Buffer): string | null {
  const entsize = symbolSize(ctx);
  // Symbol 0 is the reserved null symbol. st_name leads in both classes.
  for (let i = 1; i < count; i++) {
    const nameOffset = new Cursor(symbols, ctx, i * entsize).u32();
    if (nameOffset >= strings.length) {
      throw new ElfError(`symbol ${i} name offset ${nameOffset} beyond string table`);
    }
    const suffixStart = nameOffset + STAMP_PREFIX.length;
    if (suffixStart > strings.length) continue;
    if (strings.compare(STAMP_PREFIX, 0, STAMP_PREFIX.length, nameOffset, suffixStart) !== 0) continue;
    const end = strings.indexOf(0, suffixStart);
    if (end < 0) throw new ElfError(`symbol ${i} name is not terminated`);
    // latin1 maps each byte to one character, so distinct stamps stay distinct.
    return strings.toString('latin1', suffixStart, end);
  }
  return null;
}

// ---------------------------------------------------------------- segments

function infoFromSegments(ctx: Context, header: Header): ElfInfo {
  const segments = readProgramHeaders(ctx, header);
  return {
    buildId: buildIdFromSegments(ctx, segments),
    stamp: stampFromDynamic(ctx, segments),
  };
}

interface DynamicTags {
  symtab?: bigint;
  strtab?: bigint;
  strsz?: bigint;
  syment?: bigint;
  hash?: bigint;
  gnuHash?: bigint;
}

/**
 * Finds the dynamic symbol table the way the loader does: through
 * PT_DYNAMIC, with the symbol count taken from a hash table, since nothing
 * else in the dynamic section records it.
 */
function stampFromDynamic(ctx: Context, segments: Segment[]): string | null {
  const dynamic = segments.find((p) => p.type === PT_DYNAMIC);
  if (dynamic === undefined) return null;
  const tags = readDynamicTags(ctx, readRegion(ctx, dynamic.offset, dynamic.filesz, 'dynamic segment'));
  if (tags.symtab === undefined || tags.strtab === undefined) return null;
  if (tags.strsz === undefined) throw new ElfError('DT_STRTAB without DT_STRSZ');
  const entsize = symbolSize(ctx);
  if (tags.syment !== undefined && tags.syment !== BigInt(entsize)) {
    throw new ElfError(`bad dynamic symbol size ${tags.syment}`);
  }

  let count: number;
  if (tags.gnuHash !== undefined) count = countFromGnuHash(ctx, segments, tags.gnuHash);
  else if (tags.hash !== undefined) count = countFromSysvHash(ctx, segments, tags.hash);
  else return null;
  if (count > MAX_SYMBOLS) throw new ElfError(`symbol count ${count} exceeds limit`);

  const symbols = readMapped(ctx, segments, tags.symtab, BigInt(count * entsize), 'dynamic symbol table');
  const strings = readMapped(ctx, segments, tags.strtab, tags.strsz, 'dynamic string table');
  return findStamp(ctx, symbols, count, strings);
}

function readDynamicTags(ctx: Context, buf: Buffer): DynamicTags {
  const entsize = ctx.is64 ? 16 : 8;
  const tags: DynamicTags = {};
  const c = new Cursor(buf, ctx);
  for (let i = 0; i < Math.floor(buf.length / entsize); i++) {
    const tag = c.word();
    const value = c.word();
    if (tag === DT_NULL) break;
    // The loader takes the first of each; later duplicates are ignored.
    if (tag === DT_SYMTAB) tags.symtab ??= value;
    else if (tag === DT_STRTAB) tags.strtab ??= value;
    else if (tag === DT_STRSZ) tags.strsz ??= value;
    else if (tag === DT_SYMENT) tags.syment ??= value;
    else if (tag === DT_HASH) tags.hash ??= value;
    else if (tag === DT_GNU_HASH) tags.gnuHash ??= value;
  }
  return tags;
}

/** File offset of a virtual address, and how many file bytes follow it within its PT_LOAD. */
function mapAddress(segments: Segment[], addr: bigint, what: string): { offset: bigint; available: bigint } {
  for (const p of segments) {
    if (p.type !== PT_LOAD || addr < p.vaddr) continue;
    const delta = addr - p.vaddr;
    if (delta < p.filesz) return { offset: p.offset + delta, available: p.filesz - delta };
  }
  throw new ElfError(`${what} address 0x${addr.toString(16)} is not in any loadable segment`);
}

function readMapped(ctx: Context, segments: Segment[], addr: bigint, size: bigint, what: string): Buffer {
  if (size === 0n) return Buffer.alloc(0);
  const { offset, available } = mapAddress(segments, addr, what);
  if (size > available) throw new ElfError(`${what} runs past the end of its segment`);
  return readRegion(ctx, offset, size, what);
}

function hashWordSize(ctx: Context): number {
  // The two 64-bit targets whose SysV hash table uses 8-byte entries.
  return ctx.is64 && (ctx.machine === EM_S390 || ctx.machine === EM_ALPHA) ? 8 : 4;
}

function countFromSysvHash(ctx: Context, segments: Segment[], addr: bigint): number {
  const word = hashWordSize(ctx);
  const head = readMapped(ctx, segments, addr, BigInt(2 * word), 'hash table');
  const c = new Cursor(head, ctx);
  // nchain equals the number of symbols; nbucket (the first word) is not needed.
  if (word === 4) {
    c.u32();
    return c.u32();
  }
  c.word();
  const nchain = c.word();
  return nchain > BigInt(MAX_SYMBOLS) ? MAX_SYMBOLS + 1 : Number(nchain);
}

/**
 * The GNU hash table does not store the symbol count: it is one past the
 * last symbol of the chain that starts at the highest bucket.
 */
function countFromGnuHash(ctx: Context, segments: Segment[], addr: bigint): number {
  const head = new Cursor(readMapped(ctx, segments, addr, 16n, 'GNU hash table'), ctx);
  const nbuckets = head.u32();
  const symoffset = head.u32();
  const bloomSize = head.u32();
  const bucketsAddr = addr + 16n + BigInt(bloomSize) * (ctx.is64 ? 8n : 4n);
  const buckets = new Cursor(readMapped(ctx, segments, bucketsAddr, BigInt(nbuckets) * 4n, 'GNU hash buckets'), ctx);
  let last = 0;
  for (let i = 0; i < nbuckets; i++) last = Math.max(last, buckets.u32());
  // No bucket used: only the unhashed symbols below symoffset exist.
  if (last === 0) return symoffset;
  if (last < symoffset) throw new ElfError('GNU hash bucket points below symoffset');
  if (last >= MAX_SYMBOLS) throw new ElfError(`symbol count ${last} exceeds limit`);

  const chainAddr = bucketsAddr + BigInt(nbuckets) * 4n;
  let index = last;
  // The chain's end is marked by the low bit; read it in small chunks so a
  // long or unterminated chain costs little before the limit stops it.
  for (;;) {
    const at = chainAddr + BigInt(index - symoffset) * 4n;
    const { available } = mapAddress(segments, at, 'GNU hash chain');
    const entries = Math.min(HASH_CHAIN_CHUNK, Number(available / 4n));
    if (entries === 0) throw new ElfError('GNU hash chain runs past the end of its segment');
    const chunk = new Cursor(readMapped(ctx, segments, at, BigInt(entries * 4), 'GNU hash chain'), ctx);
    for (let i = 0; i < entries; i++, index++) {
      if ((chunk.u32() & 1) === 1) return index + 1;
      if (index + 1 >= MAX_SYMBOLS) throw new ElfError(`symbol count exceeds limit of ${MAX_SYMBOLS}`);
    }
  }
}
