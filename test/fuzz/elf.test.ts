import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { ElfError, readElfInfo } from '../../src/formats/elf';
import { makeElf } from '../fixtures/elf';
import { b64, byteMutation, fuzz, mutate, unb64 } from './harness';

// readElfInfo, fuzzed through the structure of real ELF files: the fields
// a hostile module would lie in (offsets, sizes, counts, links, dynamic
// tags, hash table headers, note sizes) set to the values that break
// arithmetic (0, all ones, 2^31, 2^63, the file size and its neighbours).
// test/unit/elf.test.ts fills random byte runs; this one knows where the
// fields are, in both classes and byte orders, with and without sections.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-fuzz-elf-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'module.so');

const BASES: Buffer[] = [];
for (const cls of [32, 64] as const) {
  for (const endian of ['le', 'be'] as const) {
    for (const noSectionHeaders of [false, true]) {
      for (const hash of ['gnu', 'sysv'] as const) {
        BASES.push(
          makeElf({
            class: cls,
            endian,
            noSectionHeaders,
            hash,
            buildId: '80f82b3318d6c9975c62b67e777430df8c199a86',
            stamp: 'f1b4c2639e440a9f989736fb1ad6d8336564df2e',
            symbols: ['qemu_module_dummy', 'qemu_stamp', 'a', 'bb'],
            rodata: ['/usr/lib/x86_64-linux-gnu/qemu'],
          }),
        );
      }
    }
  }
}

interface Field {
  at: number;
  width: 1 | 2 | 4 | 8;
}

/** Where the interesting fields of an ELF file are (read from the unmutated file). */
function fields(buf: Buffer): Field[] {
  const is64 = buf[4] === 2;
  const le = buf[5] === 1;
  const w = is64 ? 8 : 4;
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const word = (o: number) => (is64 ? Number(le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o)) : u32(o));
  const out: Field[] = [];
  const f = (at: number, width: Field['width']) => at + width <= buf.length && out.push({ at, width });
  const W = w as 4 | 8;
  // ELF header.
  for (const at of [4, 5, 6]) f(at, 1);
  (f(16, 2), f(18, 2), f(20, 4), f(24, W), f(24 + w, W), f(24 + 2 * w, W), f(24 + 3 * w, 4));
  for (let i = 0; i < 6; i++) f(28 + 3 * w + 2 * i, 2);
  const phoff = word(24 + w);
  const shoff = word(24 + 2 * w);
  const phnum = u16(28 + 3 * w + 6);
  const shnum = u16(28 + 3 * w + 10);
  const phent = is64 ? 56 : 32;
  const shent = is64 ? 64 : 40;
  // Program headers, and what PT_DYNAMIC and the hash tables hold.
  const loads: { off: number; vaddr: number; filesz: number }[] = [];
  let dynamic: { off: number; size: number } | null = null;
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phent;
    if (p + phent > buf.length) break;
    const type = u32(p);
    const [off, vaddr, filesz] = is64
      ? [word(p + 8), word(p + 16), word(p + 32)]
      : [word(p + 4), word(p + 8), word(p + 16)];
    for (const [at, width] of is64
      ? [
          [0, 4],
          [8, 8],
          [16, 8],
          [32, 8],
          [48, 8],
        ]
      : [
          [0, 4],
          [4, 4],
          [8, 4],
          [16, 4],
          [28, 4],
        ])
      f(p + at!, width as 4 | 8);
    if (type === 1) loads.push({ off, vaddr, filesz });
    if (type === 2) dynamic = { off, size: filesz };
  }
  const map = (addr: number) => loads.find((l) => addr >= l.vaddr && addr < l.vaddr + l.filesz);
  if (dynamic) {
    for (let at = dynamic.off; at + 2 * w <= Math.min(buf.length, dynamic.off + dynamic.size); at += 2 * w) {
      (f(at, W), f(at + w, W));
      const tag = word(at);
      const val = word(at + w);
      const l = map(val);
      // DT_HASH: nbucket, nchain. DT_GNU_HASH: nbuckets, symoffset, bloom size, bloom shift, first bucket.
      if (l && (tag === 4 || tag === 0x6ffffef5)) for (let k = 0; k < 5; k++) f(l.off + val - l.vaddr + 4 * k, 4);
    }
  }
  // Section headers, the first note of each note section, the names of the first dynamic symbols.
  for (let i = 0; i < shnum; i++) {
    const s = shoff + i * shent;
    if (s + shent > buf.length) break;
    (f(s, 4),
      f(s + 4, 4),
      f(s + 8 + 2 * w, W),
      f(s + 8 + 3 * w, W),
      f(s + 8 + 4 * w, 4),
      f(s + 16 + 4 * w, W),
      f(s + 16 + 5 * w, W));
    const type = u32(s + 4);
    const off = word(s + 8 + 2 * w);
    if (type === 7) (f(off, 4), f(off + 4, 4), f(off + 8, 4));
    if (type === 11) for (let k = 1; k < 6; k++) f(off + k * (is64 ? 24 : 16), 4);
  }
  return out;
}

const FIELDS = BASES.map(fields);

/** Values that break size and offset arithmetic. */
function hostile(choice: number, fileSize: number, random: number): bigint {
  const values = [
    0n,
    1n,
    2n,
    0x7fn,
    0xffn,
    0xffffn,
    0x7fffffffn,
    0x80000000n,
    0xffffffffn,
    1n << 63n,
    (1n << 64n) - 1n,
    BigInt(fileSize),
    BigInt(fileSize) - 1n,
    BigInt(fileSize) + 1n,
    BigInt(random),
  ];
  return values[choice % values.length]!;
}

function writeField(buf: Buffer, f: Field, value: bigint, le: boolean): void {
  const v = value & ((1n << BigInt(f.width * 8)) - 1n);
  if (f.width === 1) buf[f.at] = Number(v);
  else if (f.width === 2) le ? buf.writeUInt16LE(Number(v), f.at) : buf.writeUInt16BE(Number(v), f.at);
  else if (f.width === 4) le ? buf.writeUInt32LE(Number(v), f.at) : buf.writeUInt32BE(Number(v), f.at);
  else le ? buf.writeBigUInt64LE(v, f.at) : buf.writeBigUInt64BE(v, f.at);
}

interface Input {
  bytes: Buffer;
}

const input: fc.Arbitrary<Input> = fc
  .record({
    base: fc.nat({ max: BASES.length - 1 }),
    fieldLies: fc.array(fc.record({ field: fc.nat(), value: fc.nat(), random: fc.nat({ max: 0xffffffff }) }), {
      minLength: 1,
      maxLength: 4,
    }),
    bytes: fc.array(byteMutation, { maxLength: 2 }),
    truncate: fc.option(fc.nat(), { nil: undefined, freq: 5 }),
  })
  .map(({ base, fieldLies, bytes, truncate }) => {
    const src = BASES[base]!;
    const buf = Buffer.from(src);
    const fs_ = FIELDS[base]!;
    for (const lie of fieldLies)
      writeField(buf, fs_[lie.field % fs_.length]!, hostile(lie.value, buf.length, lie.random), src[5] === 1);
    let out = mutate(
      buf,
      bytes.map((m) => ({ ...m, kind: m.kind === 'token' ? 'set' : m.kind })),
    );
    if (truncate !== undefined) out = out.subarray(0, truncate % (out.length + 1));
    return { bytes: out };
  });

let parsed = 0;
let rejected = 0;

function check({ bytes }: Input): void {
  fs.writeFileSync(file, bytes);
  const fd = fs.openSync(file, 'r');
  try {
    const info = readElfInfo(fd, bytes.length);
    if (info.buildId !== null && !/^[0-9a-f]+$/.test(info.buildId))
      throw new Error(`build-id not lowercase hex: ${info.buildId}`);
    if (info.stamp !== null && typeof info.stamp !== 'string') throw new Error('stamp not a string');
    parsed++;
  } catch (e) {
    if (!(e instanceof ElfError)) throw e;
    // The safety net inside readElfInfo turns parser bugs into ElfErrors; a fuzz run must never need it.
    if (e.message.startsWith('internal parser error')) throw e;
    if (/[\r\n]/.test(e.message) || e.message.length > 200) throw new Error(`not a one-line reason: ${e.message}`);
    rejected++;
  } finally {
    fs.closeSync(fd);
  }
}

t.test('readElfInfo: lying headers', async (t) => {
  await fuzz(t, {
    name: 'elf',
    arbitrary: input,
    check,
    encode: (v) => ({ input: b64(v.bytes) }),
    decode: (r) => ({ bytes: unb64(r.input) }),
    ciRuns: 4000,
  });
  t.ok(parsed > 0 && rejected > 0, `both outcomes seen (${parsed} read, ${rejected} rejected)`);
});
