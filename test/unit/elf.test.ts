import t, { type Test } from 'tap';
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ElfError, readElfInfo, type ElfInfo } from '../../src/formats/elf';
import { makeElf, randomHex, type MakeElfOptions } from '../fixtures/elf';

const REAL_MODULE_DIR = '/usr/lib/x86_64-linux-gnu/qemu';
const STAMP = 'f1b4c2639e440a9f989736fb1ad6d8336564df2e';
const BUILD_ID = '80f82b3318d6c9975c62b67e777430df8c199a86';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'modwatch-elf-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
function writeTemp(buf: Buffer): string {
  const file = path.join(dir, `f${fileCounter++}.so`);
  fs.writeFileSync(file, buf);
  return file;
}

function readFile(file: string): ElfInfo {
  const fd = fs.openSync(file, 'r');
  try {
    return readElfInfo(fd, fs.fstatSync(fd).size);
  } finally {
    fs.closeSync(fd);
  }
}

function readBuf(buf: Buffer): ElfInfo {
  return readFile(writeTemp(buf));
}

/** The ElfError a buffer provokes; anything else thrown fails the caller's test loudly. */
function errorOf(buf: Buffer): ElfError | undefined {
  try {
    readBuf(buf);
    return undefined;
  } catch (err) {
    if (err instanceof ElfError) return err;
    throw err;
  }
}

function rejects(t: Test, buf: Buffer, pattern: RegExp, what: string): void {
  const err = errorOf(buf);
  t.ok(err, `${what}: throws ElfError`);
  if (err) t.match(err.message, pattern, `${what}: ${err.message}`);
}

function tool(cmd: string, args: string[]): string | null {
  // Big binaries (node itself) list tens of thousands of symbols.
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  return r.error || r.status !== 0 ? null : r.stdout;
}

const haveBinutils = tool('readelf', ['--version']) !== null && tool('nm', ['--version']) !== null;

function buildIdFromReadelf(file: string): string | null {
  const out = tool('readelf', ['-n', '-W', file]);
  if (out === null) throw new Error(`readelf -n failed on ${file}`);
  return /Build ID: ([0-9a-f]+)/.exec(out)?.[1] ?? null;
}

/** First qemu_stamp_ symbol in symbol-table order (-p: nm sorts by name otherwise). */
function stampFromNm(file: string): string | null {
  const out = tool('nm', ['-D', '-p', file]);
  if (out === null) throw new Error(`nm -D failed on ${file}`);
  return /^.* qemu_stamp_(\S*)$/m.exec(out)?.[1] ?? null;
}

/** readelf -D -s reads symbols through PT_DYNAMIC, like the reader's fallback. */
function stampFromDynamicView(file: string): string | null {
  const out = tool('readelf', ['-D', '-s', '-W', file]);
  if (out === null) throw new Error(`readelf -D -s failed on ${file}`);
  return / qemu_stamp_(\S*)$/m.exec(out)?.[1] ?? null;
}

// Field positions for the 64-bit little-endian files the hostile tests patch.
const E_PHOFF = 0x20;
const E_SHOFF = 0x28;
const E_EHSIZE = 0x34;
const E_SHENTSIZE = 0x3a;
const E_SHNUM = 0x3c;
const SHDR = 64;
const SH_TYPE = 4;
const SH_OFFSET = 24;
const SH_SIZE = 32;
const SH_LINK = 40;
const SH_ADDRALIGN = 48;
const SHT_NOTE = 7;
const SHT_DYNSYM = 11;
const SHT_STRTAB = 3;

/** Position of the header of the first section of a type. */
function shdrPos(buf: Buffer, type: number): number {
  const shoff = Number(buf.readBigUInt64LE(E_SHOFF));
  for (let i = 0; i < buf.readUInt16LE(E_SHNUM); i++) {
    const pos = shoff + i * SHDR;
    if (buf.readUInt32LE(pos + SH_TYPE) === type) return pos;
  }
  throw new Error(`no section of type ${type}`);
}

function sectionOffset(buf: Buffer, type: number): number {
  return Number(buf.readBigUInt64LE(shdrPos(buf, type) + SH_OFFSET));
}

function module64(extra: MakeElfOptions = {}): Buffer {
  return makeElf({ buildId: BUILD_ID, stamp: STAMP, symbols: ['qemu_module_dummy', 'qemu_stamp'], ...extra });
}

// ------------------------------------------------------------ generated files

/** Every combination of the given option values. */
function combinations<T extends Record<string, readonly unknown[]>>(axes: T): Array<{ [K in keyof T]: T[K][number] }> {
  let out: Array<Record<string, unknown>> = [{}];
  for (const [key, values] of Object.entries(axes)) {
    out = out.flatMap((partial) => values.map((v) => ({ ...partial, [key]: v })));
  }
  return out as Array<{ [K in keyof T]: T[K][number] }>;
}

t.test('generated modules round-trip through every layout', async (t) => {
  const layouts = combinations({
    class: [32, 64] as const,
    endian: ['le', 'be'] as const,
    noSectionHeaders: [false, true],
    hash: ['gnu', 'sysv'] as const,
    type: ['dyn', 'exec'] as const,
    withBuildId: [false, true],
    withStamp: [false, true],
  });
  for (const { withBuildId, withStamp, ...layout } of layouts) {
    const buildId = withBuildId ? randomHex(20) : null;
    const stamp = withStamp ? randomHex(20) : null;
    const opts = { ...layout, buildId, stamp, symbols: ['a', 'qemu_stam'] };
    t.strictSame(readBuf(makeElf(opts)), { buildId, stamp }, JSON.stringify(opts));
  }
});

t.test('stamp selection', async (t) => {
  t.strictSame(
    readBuf(makeElf({ symbols: ['qemu_stamp_first'], stamp: 'second' })).stamp,
    'first',
    'first in table order wins',
  );
  t.strictSame(
    readBuf(makeElf({ symbols: ['qemu_stamp', 'qemu_stampx', 'xqemu_stamp_1'] })).stamp,
    null,
    'near misses ignored',
  );
  t.strictSame(readBuf(makeElf({ stamp: '' })).stamp, '', 'bare prefix gives empty suffix');
  t.strictSame(
    readBuf(makeElf({ rodata: [`qemu_stamp_${STAMP}`, '/usr/lib/qemu'] })).stamp,
    null,
    'strings in .rodata are not symbols',
  );
  t.strictSame(readBuf(makeElf({ symbols: [] })), { buildId: null, stamp: null }, 'empty symbol table');
  t.strictSame(readBuf(makeElf({ buildId: '' })).buildId, null, 'empty build-id note is no build-id');
  t.strictSame(readBuf(makeElf({ buildId: 'ABCDEF01' })).buildId, 'abcdef01', 'build-id is lowercase');
});

t.test('notes in an 8-aligned section are padded to 8', async (t) => {
  // What x86-64 linkers emit for .note.gnu.property: a 12-byte header and a
  // 4-byte name end at 16, so the descriptor starts at 16 either way, but a
  // 20-byte descriptor is padded to 24 before the next note.
  const property = Buffer.alloc(16 + 16);
  property.writeUInt32LE(4, 0);
  property.writeUInt32LE(16, 4);
  property.writeUInt32LE(5, 8); // NT_GNU_PROPERTY_TYPE_0
  property.write('GNU\0', 12, 'latin1');
  const other = Buffer.alloc(16 + 24); // a foreign note whose descriptor needs padding
  other.writeUInt32LE(4, 0);
  other.writeUInt32LE(20, 4);
  other.writeUInt32LE(3, 8);
  other.write('Go\0\0', 12, 'latin1');
  const id = Buffer.alloc(16 + 24);
  id.writeUInt32LE(4, 0);
  id.writeUInt32LE(20, 4);
  id.writeUInt32LE(3, 8);
  id.write('GNU\0', 12, 'latin1');
  Buffer.from(BUILD_ID, 'hex').copy(id, 16);
  const notes = Buffer.concat([property, other, id]);

  const base = module64();
  const at = Math.ceil(base.length / 8) * 8;
  const buf = Buffer.concat([base, Buffer.alloc(at - base.length), notes]);
  const sh = shdrPos(buf, SHT_NOTE);
  buf.writeBigUInt64LE(BigInt(at), sh + SH_OFFSET);
  buf.writeBigUInt64LE(BigInt(notes.length), sh + SH_SIZE);
  buf.writeBigUInt64LE(8n, sh + SH_ADDRALIGN);
  t.equal(readBuf(buf).buildId, BUILD_ID);
  if (haveBinutils) t.equal(buildIdFromReadelf(writeTemp(buf)), BUILD_ID, 'readelf reads it the same way');
});

t.test('an empty extended section count falls back to program headers', async (t) => {
  const buf = module64();
  buf.writeUInt16LE(0, E_SHNUM); // section 0's sh_size, the extended count, is 0 too
  t.strictSame(readBuf(buf), { buildId: BUILD_ID, stamp: STAMP });
});

t.test('padTo pads without changing what is read', async (t) => {
  const buf = makeElf({ stamp: STAMP, buildId: BUILD_ID, padTo: 100_000 });
  t.equal(buf.length, 100_000);
  t.strictSame(readBuf(buf), { buildId: BUILD_ID, stamp: STAMP });
});

t.test(
  'generator output agrees with binutils',
  { skip: haveBinutils ? false : 'readelf/nm not installed' },
  async (t) => {
    for (const cls of [32, 64] as const) {
      for (const endian of ['le', 'be'] as const) {
        for (const hash of ['gnu', 'sysv'] as const) {
          const label = `${cls}-${endian}-${hash}`;
          const buildId = randomHex(20);
          const stamp = randomHex(20);
          const opts = { class: cls, endian, hash, buildId, stamp, symbols: ['x'], rodata: ['/usr/lib/qemu'] };
          const full = writeTemp(makeElf(opts));
          t.equal(buildIdFromReadelf(full), buildId, `${label}: readelf -n`);
          t.equal(stampFromNm(full), stamp, `${label}: nm -D`);
          t.equal(stampFromDynamicView(full), stamp, `${label}: readelf -D -s`);
          const sections = tool('readelf', ['-S', '-W', full]) ?? '';
          t.match(sections, /\.dynsym/, `${label}: readelf -S lists .dynsym`);
          t.notMatch(sections, /warning|error/i, `${label}: readelf -S has no complaints`);
          t.strictSame(readFile(full), { buildId, stamp }, `${label}: reader agrees`);

          const bare = writeTemp(makeElf({ ...opts, noSectionHeaders: true }));
          t.equal(buildIdFromReadelf(bare), buildId, `${label} no sections: readelf -n`);
          t.equal(stampFromDynamicView(bare), stamp, `${label} no sections: readelf -D -s`);
          t.strictSame(readFile(bare), { buildId, stamp }, `${label} no sections: reader agrees`);
        }
      }
    }
  },
);

t.test('generating 10,000 modules is fast', async (t) => {
  const start = performance.now();
  for (let i = 0; i < 10_000; i++) makeElf({ buildId: BUILD_ID, stamp: STAMP, symbols: ['a', 'b'] });
  const ms = performance.now() - start;
  t.ok(ms < 10_000, `took ${ms.toFixed(0)} ms`);
});

// ------------------------------------------------------------ real modules

const realModules = fs.existsSync(REAL_MODULE_DIR)
  ? fs.readdirSync(REAL_MODULE_DIR).filter((n) => n.endsWith('.so'))
  : [];
const realModulesSkip = !fs.existsSync(REAL_MODULE_DIR)
  ? `${REAL_MODULE_DIR} does not exist on this host`
  : realModules.length === 0
    ? `no *.so modules in ${REAL_MODULE_DIR}`
    : !haveBinutils
      ? 'readelf/nm not installed'
      : false;

t.test('real QEMU modules agree with readelf and nm', { skip: realModulesSkip }, async (t) => {
  for (const name of realModules) {
    const file = path.join(REAL_MODULE_DIR, name);
    const expected = { buildId: buildIdFromReadelf(file), stamp: stampFromNm(file) };
    t.strictSame(readFile(file), expected, name);

    // The same module with its section header table removed, as sstrip
    // leaves it: now everything comes from program headers and DT_GNU_HASH.
    const stripped = fs.readFileSync(file);
    stripped.writeBigUInt64LE(0n, E_SHOFF);
    stripped.fill(0, E_SHENTSIZE, E_SHENTSIZE + 6);
    t.strictSame(readBuf(stripped), expected, `${name} without section headers`);
  }
  const qxl = path.join(REAL_MODULE_DIR, 'hw-display-qxl.so');
  if (fs.existsSync(qxl) && readFile(qxl).buildId === BUILD_ID) {
    t.equal(readFile(qxl).stamp, STAMP, 'known qxl stamp');
  }
});

t.test(
  'other ELF binaries on this host agree with readelf and nm',
  { skip: haveBinutils ? false : 'readelf/nm not installed' },
  async (t) => {
    const candidates = [process.execPath, '/bin/ls', '/usr/bin/qemu-system-x86_64', '/usr/bin/qemu-img'];
    const isElf = (file: string): boolean => {
      const magic = Buffer.alloc(4);
      try {
        const fd = fs.openSync(file, 'r');
        try {
          fs.readSync(fd, magic, 0, 4, 0);
        } finally {
          fs.closeSync(fd);
        }
      } catch {
        return false;
      }
      return magic.toString('latin1') === '\x7fELF';
    };
    const files = candidates.filter(isElf);
    if (files.length === 0) t.skip('no ELF binaries found', () => {});
    for (const file of files) {
      t.strictSame(readFile(file), { buildId: buildIdFromReadelf(file), stamp: stampFromNm(file) }, file);
    }
  },
);

// ------------------------------------------------------------ hostile input

t.test('hostile inputs throw ElfError', async (t) => {
  const good = module64();

  rejects(t, Buffer.alloc(0), /not an ELF file/, 'empty file');
  rejects(t, Buffer.from('\x7fEL', 'latin1'), /not an ELF file/, '3 bytes');
  rejects(t, Buffer.from('#!/bin/sh\nexec qemu "$@"\n'), /not an ELF file/, 'shell script');
  const wrongMagic = Buffer.from(good);
  wrongMagic[1] = 0x45 ^ 0x20;
  rejects(t, wrongMagic, /not an ELF file/, 'wrong magic');
  rejects(t, good.subarray(0, 10), /truncated ELF header/, 'truncated identification');
  rejects(t, good.subarray(0, 40), /truncated ELF header/, 'truncated header');

  const patch = (edit: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    edit(b);
    return b;
  };
  rejects(
    t,
    patch((b) => (b[4] = 3)),
    /unsupported ELF class 3/,
    'bad class',
  );
  rejects(
    t,
    patch((b) => (b[5] = 0)),
    /unsupported ELF data encoding 0/,
    'bad data encoding',
  );
  rejects(
    t,
    patch((b) => (b[6] = 2)),
    /unsupported ELF version 2/,
    'bad ident version',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(7, 20)),
    /unsupported ELF version 7/,
    'bad e_version',
  );
  rejects(
    t,
    patch((b) => b.writeUInt16LE(52, E_EHSIZE)),
    /bad ELF header size 52/,
    'e_ehsize of the other class',
  );
  rejects(
    t,
    patch((b) => b.writeUInt16LE(40, E_SHENTSIZE)),
    /bad section header size 40/,
    'e_shentsize of the other class',
  );
  rejects(
    t,
    patch((b) => (b[4] = 1)),
    /bad ELF header size/,
    '64-bit file claiming class 32',
  );

  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(BigInt(good.length + 100), E_SHOFF)),
    /beyond end of file/,
    'e_shoff beyond EOF',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(0xffffffffffffffc0n, E_SHOFF)),
    /beyond end of file/,
    'e_shoff near 2^64',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(2n ** 53n + 8n, E_SHOFF)),
    /beyond end of file/,
    'e_shoff above MAX_SAFE_INTEGER',
  );
  rejects(
    t,
    patch((b) => b.writeUInt16LE(0xffff, E_SHNUM)),
    /section header count 65535 exceeds limit/,
    'e_shnum huge',
  );
  rejects(
    t,
    patch((b) => b.writeUInt16LE(50, E_SHNUM)),
    /truncated section header table/,
    'e_shnum past EOF',
  );
  rejects(t, good.subarray(0, good.length - 10), /truncated section header table/, 'file cut inside section headers');
  rejects(
    t,
    patch((b) => {
      // Extended numbering: the count lives in section 0's sh_size.
      b.writeUInt16LE(0, E_SHNUM);
      b.writeBigUInt64LE(70_000n, Number(b.readBigUInt64LE(E_SHOFF)) + SH_SIZE);
    }),
    /section header count 70000 exceeds limit/,
    'extended section count huge',
  );

  rejects(
    t,
    patch((b) => {
      const sh = shdrPos(b, SHT_DYNSYM);
      b.writeBigUInt64LE(0xffffffffffffff00n, sh + SH_OFFSET);
      b.writeBigUInt64LE(0x200n, sh + SH_SIZE);
    }),
    /beyond end of file/,
    'section offset+size overflowing 64 bits',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(0xffffffffffffffffn, shdrPos(b, SHT_STRTAB) + SH_SIZE)),
    /section 4 extends beyond end of file/,
    'section size 2^64-1',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(BigInt(good.length), shdrPos(b, SHT_STRTAB) + SH_SIZE)),
    /section 4 extends beyond end of file/,
    'string table past EOF',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(16n, shdrPos(b, SHT_DYNSYM) + 56)),
    /bad dynamic symbol size 16/,
    'sh_entsize of the other class',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(99, shdrPos(b, SHT_DYNSYM) + SH_LINK)),
    /sh_link 99 out of range/,
    'sh_link out of range',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0, shdrPos(b, SHT_DYNSYM) + SH_LINK)),
    /sh_link 0 out of range/,
    'sh_link zero',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(1, shdrPos(b, SHT_DYNSYM) + SH_LINK)),
    /not a string table/,
    'sh_link to a note',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0x10000, sectionOffset(b, SHT_DYNSYM) + 24)),
    /symbol 1 name offset 65536 beyond string table/,
    'dynstr index beyond table',
  );
  rejects(
    t,
    patch((b) => {
      // Cut the string table in the middle of the stamp symbol's name.
      const strtab = b.subarray(sectionOffset(b, SHT_STRTAB));
      const nameAt = strtab.indexOf('qemu_stamp_f');
      b.writeBigUInt64LE(BigInt(nameAt + 20), shdrPos(b, SHT_STRTAB) + SH_SIZE);
    }),
    /name is not terminated/,
    'unterminated stamp name',
  );

  const notePos = sectionOffset(good, SHT_NOTE);
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0xffffffff, notePos)),
    /note extends beyond its section/,
    'note namesz 2^32-1',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0xfffffffd, notePos + 4)),
    /note extends beyond its section/,
    'note descsz near 2^32',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0x7fffffff, notePos)),
    /note extends beyond its section/,
    'note namesz 2^31-1',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(0xffffffffffffffffn, shdrPos(b, SHT_NOTE) + SH_OFFSET)),
    /beyond end of file/,
    'note offset 2^64-1',
  );

  const random = Buffer.alloc(4096);
  let seed = 12345;
  for (let i = 0; i < random.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    random[i] = seed >>> 24;
  }
  const headerThenNoise = Buffer.concat([good.subarray(0, 64), random]);
  headerThenNoise.writeBigUInt64LE(64n, E_SHOFF); // section table = noise
  headerThenNoise.writeUInt16LE(60, E_SHNUM);
  rejects(t, headerThenNoise, /beyond end of file|out of range|exceeds limit/, 'valid header followed by random bytes');

  const dirFd = fs.openSync(dir, 'r');
  try {
    t.throws(() => readElfInfo(dirFd, 4096), ElfError, 'a directory');
    t.throws(() => readElfInfo(dirFd, 4096), { message: /read error \(EISDIR\)/ });
  } finally {
    fs.closeSync(dirFd);
  }
  const shrunk = writeTemp(good);
  const fd = fs.openSync(shrunk, 'r');
  try {
    // The file shrinks between the caller's stat and the read.
    fs.truncateSync(shrunk, good.length - 100);
    t.throws(
      () => readElfInfo(fd, good.length),
      { name: 'ElfError', message: /truncated section header table/ },
      'file shrank',
    );
    for (const size of [-1, NaN, 1.5, 2 ** 60]) {
      t.throws(() => readElfInfo(fd, size), { name: 'ElfError', message: /invalid file size/ }, `fileSize ${size}`);
    }
  } finally {
    fs.closeSync(fd);
  }
});

t.test('size limits hold for sections that fit in the file', async (t) => {
  // Padding makes the claimed sizes plausible, so only the caps stop them.
  const big = module64({ padTo: 33 << 20 });
  const patch = (edit: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(big);
    edit(b);
    return b;
  };
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(32n << 20n, shdrPos(b, SHT_STRTAB) + SH_SIZE)),
    /dynamic string table size 33554432 exceeds limit/,
    'string table over 16 MiB',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(24n * 1_000_001n, shdrPos(b, SHT_DYNSYM) + SH_SIZE)),
    /symbol count 1000001 exceeds limit/,
    'too many symbols',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(24n * 999_999n, shdrPos(b, SHT_DYNSYM) + SH_SIZE)),
    /dynamic symbol table size 23999976 exceeds limit/,
    'symbol table over 16 MiB',
  );
});

t.test('limits on repeated structures', async (t) => {
  // 5000 empty notes: each is valid, only their number is hostile.
  const base = module64({ padTo: 0 });
  const notes = Buffer.concat([base, Buffer.alloc(5000 * 12)]);
  const sh = shdrPos(notes, SHT_NOTE);
  notes.writeBigUInt64LE(BigInt(base.length), sh + SH_OFFSET);
  notes.writeBigUInt64LE(5000n * 12n, sh + SH_SIZE);
  rejects(t, notes, /note count exceeds limit of 4096/, 'too many notes');

  // Four sections claiming the same 16 MiB note: each read is within its
  // cap, together they exceed the per-call budget.
  const big = 16 * 1024 * 1024;
  const huge = Buffer.concat([base, Buffer.alloc(big)]);
  huge.writeUInt32LE(big - 12, base.length + 4); // one note filling the region, type 0
  const shoff = Number(huge.readBigUInt64LE(E_SHOFF));
  for (let i = 1; i <= 4; i++) {
    const pos = shoff + i * SHDR;
    huge.writeUInt32LE(SHT_NOTE, pos + SH_TYPE);
    huge.writeBigUInt64LE(BigInt(base.length), pos + SH_OFFSET);
    huge.writeBigUInt64LE(BigInt(big), pos + SH_SIZE);
    huge.writeBigUInt64LE(4n, pos + SH_ADDRALIGN);
  }
  rejects(t, huge, /total bytes read exceeds limit/, 'overlapping 16 MiB sections');
});

t.test('hostile files without section headers', async (t) => {
  const good = makeElf({ buildId: BUILD_ID, stamp: STAMP, noSectionHeaders: true });
  t.strictSame(readBuf(good), { buildId: BUILD_ID, stamp: STAMP }, 'baseline');
  const phoff = Number(good.readBigUInt64LE(E_PHOFF));
  const PHDR = 56;
  const dynamicPh = phoff + PHDR; // generator order: LOAD, DYNAMIC, NOTE
  const dynOff = Number(good.readBigUInt64LE(dynamicPh + 8));
  const entry = (tag: number): number => {
    for (let p = dynOff; ; p += 16) {
      if (Number(good.readBigUInt64LE(p)) === tag) return p;
    }
  };
  const gnuHashOff = Number(good.readBigUInt64LE(entry(0x6ffffef5) + 8));
  const patch = (edit: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    edit(b);
    return b;
  };

  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(0xdead0000n, entry(5) + 8)),
    /dynamic string table address 0xdead0000 is not in any loadable segment/,
    'DT_STRTAB unmapped',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(0xffffffffn, entry(10) + 8)),
    /runs past the end of its segment/,
    'DT_STRSZ too big',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(0n, entry(10))),
    /DT_STRTAB without DT_STRSZ/,
    'DT_STRSZ missing',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(16n, entry(11) + 8)),
    /bad dynamic symbol size 16/,
    'DT_SYMENT wrong',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0xffffffff, gnuHashOff)),
    /GNU hash buckets runs past the end/,
    'GNU hash nbuckets huge',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(100, gnuHashOff + 4)),
    /bucket points below symoffset/,
    'GNU hash symoffset above buckets',
  );
  rejects(
    t,
    patch((b) => b.writeUInt32LE(0xffffff00, gnuHashOff + 16 + 8)),
    /exceeds limit/,
    'GNU hash bucket huge',
  );
  rejects(
    t,
    patch((b) => b.writeUInt16LE(5000, 0x38)),
    /program header count 5000 exceeds limit|truncated program header table/,
    'e_phnum huge',
  );
  rejects(
    t,
    patch((b) => b.writeBigUInt64LE(BigInt(b.length), dynamicPh + 32)),
    /truncated dynamic segment/,
    'PT_DYNAMIC past EOF',
  );

  const sysv = makeElf({ stamp: STAMP, hash: 'sysv', noSectionHeaders: true });
  const sysvHash = (() => {
    const d = Number(sysv.readBigUInt64LE(phoff + PHDR + 8));
    for (let p = d; ; p += 16) if (sysv.readBigUInt64LE(p) === 4n) return Number(sysv.readBigUInt64LE(p + 8));
  })();
  const badChain = Buffer.from(sysv);
  badChain.writeUInt32LE(2_000_000, sysvHash + 4);
  rejects(t, badChain, /symbol count 2000000 exceeds limit/, 'DT_HASH nchain huge');
});

// ------------------------------------------------------------ property-based

const BASES: Buffer[] = [];
for (const cls of [32, 64] as const) {
  for (const endian of ['le', 'be'] as const) {
    for (const noSectionHeaders of [false, true]) {
      BASES.push(
        makeElf({
          class: cls,
          endian,
          noSectionHeaders,
          buildId: BUILD_ID,
          stamp: STAMP,
          symbols: ['a', 'bb'],
          rodata: ['/x'],
        }),
      );
    }
  }
}

t.test('mutated and truncated modules only ever throw ElfError', async (t) => {
  const mutation = fc.record({
    pos: fc.nat(),
    // Wide writes of 0xff/0x7f make the extreme 32/64-bit values hostile files use.
    width: fc.constantFrom(1, 1, 1, 2, 4, 8),
    value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0, 0xff, 0x7f, 0x80)),
  });
  const file = path.join(dir, 'fuzz.so');
  let slowest = 0;
  let errors = 0;
  let successes = 0;
  fc.assert(
    fc.property(
      fc.nat({ max: BASES.length - 1 }),
      fc.array(mutation, { maxLength: 12 }),
      fc.option(fc.nat(), { nil: undefined }),
      (which, mutations, truncate) => {
        const base = BASES[which] as Buffer;
        let buf = Buffer.from(base);
        for (const m of mutations) {
          const pos = m.pos % buf.length;
          buf.fill(m.value, pos, Math.min(buf.length, pos + m.width));
        }
        if (truncate !== undefined) buf = buf.subarray(0, truncate % (buf.length + 1));
        fs.writeFileSync(file, buf);
        const start = performance.now();
        try {
          const info = readFile(file);
          successes++;
          if (typeof info.buildId !== 'string' && info.buildId !== null) return false;
          if (typeof info.stamp !== 'string' && info.stamp !== null) return false;
        } catch (err) {
          if (!(err instanceof ElfError)) throw err;
          // The safety net in readElfInfo must never be what catches a case.
          if (err.message.startsWith('internal parser error')) throw err;
          errors++;
        } finally {
          slowest = Math.max(slowest, performance.now() - start);
        }
        return performance.now() - start < 1000;
      },
    ),
    { seed: 42, numRuns: 2000 },
  );
  t.ok(errors > 0 && successes > 0, `both outcomes seen (${errors} errors, ${successes} parsed)`);
  t.ok(slowest < 1000, `slowest call ${slowest.toFixed(1)} ms`);
});

t.test('random generator options round-trip', async (t) => {
  const hex = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a).toString('hex'));
  const name = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.@]{0,40}$/);
  fc.assert(
    fc.property(
      fc.record({
        buildId: fc.option(hex, { nil: null }),
        stamp: fc.option(fc.stringMatching(/^[0-9a-f]{0,64}$/), { nil: null }),
        symbols: fc.array(
          name.filter((n) => !n.startsWith('qemu_stamp_')),
          { maxLength: 20 },
        ),
        class: fc.constantFrom(32 as const, 64 as const),
        endian: fc.constantFrom('le' as const, 'be' as const),
        rodata: fc.array(fc.string(), { maxLength: 5 }),
        type: fc.constantFrom('dyn' as const, 'exec' as const),
        noSectionHeaders: fc.boolean(),
        hash: fc.constantFrom('gnu' as const, 'sysv' as const),
        padTo: fc.option(fc.nat({ max: 8192 }), { nil: undefined }),
      }),
      (opts) => {
        const info = readBuf(makeElf(opts));
        return (
          info.buildId === (opts.buildId === null ? null : opts.buildId.toLowerCase()) && info.stamp === opts.stamp
        );
      },
    ),
    { seed: 42, numRuns: 500 },
  );
  t.pass('500 random layouts read back exactly');
});
