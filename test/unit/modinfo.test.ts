// Tests of the qemu_modinfo[] reader (src/formats/modinfo.ts): the real QEMU
// emulators on this host, patched copies of them, and hostile input.

import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ElfError } from '../../src/formats/elf';
import { readModinfo, type ModinfoEntry } from '../../src/formats/modinfo';
import { makeElf } from '../fixtures/elf';
import { prng } from '../reliability/helpers';

const X86_64 = '/usr/bin/qemu-system-x86_64';
// Debian's /usr/bin/qemu-system-i386 is a shell wrapper that execs this.
const I386 = '/usr/libexec/qemu-system-i386';
const MODULE_DIR = '/usr/lib/x86_64-linux-gnu/qemu';
// Shipped in the same package, but only qemu-system-s390x lists it.
const NOT_IN_X86_TABLES = new Set(['hw-s390x-virtio-gpu-ccw']);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-modinfo-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

let fileCounter = 0;
function writeTemp(buf: Buffer): string {
  const file = path.join(dir, `f${fileCounter++}`);
  fs.writeFileSync(file, buf);
  return file;
}

function readPath(file: string, size?: number): ModinfoEntry[] | null {
  const fd = fs.openSync(file, 'r');
  try {
    return readModinfo(fd, size ?? fs.fstatSync(fd).size);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes the buffer to a temp file, reads it, and removes the file again: copies of the emulator are 18 MB. */
function readBuf(buf: Buffer): ModinfoEntry[] | null {
  const file = writeTemp(buf);
  try {
    return readPath(file);
  } finally {
    fs.rmSync(file);
  }
}

type Outcome = 'null' | 'array' | 'ElfError';

/** What a read came to; any other exception escapes and fails the test that asked. */
function outcome(read: () => ModinfoEntry[] | null): { kind: Outcome; message?: string } {
  try {
    return { kind: read() === null ? 'null' : 'array' };
  } catch (err) {
    if (err instanceof ElfError) return { kind: 'ElfError', message: err.message };
    throw err;
  }
}

function rejects(t: Test, read: () => ModinfoEntry[] | null, pattern: RegExp, what: string): void {
  const o = outcome(read);
  t.equal(o.kind, 'ElfError', `${what}: throws ElfError`);
  if (o.message !== undefined) t.match(o.message, pattern, `${what}: ${o.message}`);
}

// ------------------------------------------------------------ an independent view of the file

/**
 * Where the table and its relocations sit in a 64-bit little-endian file,
 * worked out here without the reader so that the patch tests aim at the
 * right bytes.
 */
interface Layout {
  machineAt: number;
  segments: Array<{ offset: number; vaddr: number; filesz: number }>;
  relas: Array<{ offset: number; size: number }>;
  headers: Array<[number, number]>;
  symbolAt: number;
  tableVa: number;
  tableSize: number;
  tableAt: number;
}

const n64 = (buf: Buffer, pos: number): number => Number(buf.readBigUInt64LE(pos));

function layoutOf(buf: Buffer): Layout {
  const phoff = n64(buf, 0x20);
  const shoff = n64(buf, 0x28);
  const phnum = buf.readUInt16LE(0x38);
  const shnum = buf.readUInt16LE(0x3c);
  const segments = [];
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * 56;
    if (buf.readUInt32LE(p) === 1)
      segments.push({ offset: n64(buf, p + 8), vaddr: n64(buf, p + 16), filesz: n64(buf, p + 32) });
  }
  const sections = [];
  for (let i = 0; i < shnum; i++) {
    const p = shoff + i * 64;
    sections.push({
      type: buf.readUInt32LE(p + 4),
      flags: n64(buf, p + 8),
      offset: n64(buf, p + 24),
      size: n64(buf, p + 32),
      link: buf.readUInt32LE(p + 40),
    });
  }
  const dynsym = sections.find((s) => s.type === 11)!;
  const gnuHash = sections.find((s) => s.type === 0x6ffffff6);
  const dynstr = sections[dynsym.link]!;
  for (let p = dynsym.offset; p < dynsym.offset + dynsym.size; p += 24) {
    const at = dynstr.offset + buf.readUInt32LE(p);
    if (buf.toString('latin1', at, at + 13) !== 'qemu_modinfo\0') continue;
    const layout: Layout = {
      machineAt: 18,
      segments,
      relas: sections.filter((s) => s.type === 4 && (s.flags & 2) !== 0),
      headers: [
        [0, phoff + phnum * 56],
        [shoff, shoff + shnum * 64],
        ...(gnuHash ? [[gnuHash.offset, gnuHash.offset + 16] as [number, number]] : []),
      ],
      symbolAt: p,
      tableVa: n64(buf, p + 8),
      tableSize: n64(buf, p + 16),
      tableAt: 0,
    };
    layout.tableAt = fileOffset(layout, layout.tableVa);
    return layout;
  }
  throw new Error('no qemu_modinfo symbol');
}

function fileOffset(l: Layout, va: number): number {
  const seg = l.segments.find((s) => va >= s.vaddr && va < s.vaddr + s.filesz);
  if (seg === undefined) throw new Error(`0x${va.toString(16)} is not mapped`);
  return seg.offset + (va - seg.vaddr);
}

/** Calls fn with the file position of every Elf64_Rela entry, its r_offset, type and addend. */
function eachRela(
  buf: Buffer,
  l: Layout,
  fn: (at: number, offset: number, type: number, addend: bigint) => void,
): void {
  for (const s of l.relas) {
    for (let p = s.offset; p < s.offset + s.size; p += 24)
      fn(p, n64(buf, p), buf.readUInt32LE(p + 8), buf.readBigInt64LE(p + 16));
  }
}

/** RELATIVE relocations by slot address: the values the loader stores. */
function relativeSlots(buf: Buffer, l: Layout): Map<number, { at: number; value: number }> {
  const out = new Map<number, { at: number; value: number }>();
  eachRela(buf, l, (at, offset, type, addend) => {
    if (type === 8) out.set(offset, { at, value: Number(addend) });
  });
  return out;
}

// ------------------------------------------------------------ the real emulators

const haveX86 = fs.existsSync(X86_64);
const realX86 = haveX86 ? fs.readFileSync(X86_64) : Buffer.alloc(0);
const skipX86 = haveX86 ? false : `${X86_64} not installed`;

function byName(entries: ModinfoEntry[]): Map<string, ModinfoEntry> {
  return new Map(entries.map((e) => [e.name, e]));
}

function checkQemu72Table(t: Test, entries: ModinfoEntry[]): void {
  const names = byName(entries);
  t.equal(entries.length, 67, '67 entries');
  t.equal(names.size, entries.length, 'names are unique');
  t.strictSame(
    names.get('hw-display-qxl'),
    { name: 'hw-display-qxl', arch: null, objs: ['qxl-vga', 'qxl'], deps: ['ui-spice-core'] },
    'hw-display-qxl',
  );
  t.strictSame(
    names.get('accel-tcg-i386'),
    { name: 'accel-tcg-i386', arch: 'i386', objs: ['tcg-accel-ops'], deps: [] },
    'accel-tcg-i386',
  );
  t.equal(names.get('accel-tcg-x86_64')?.arch, 'x86_64', 'accel-tcg-x86_64 arch');
  t.strictSame(names.get('hw-usb-redirect')?.objs, ['usb-redir'], 'hw-usb-redirect objs');
  t.strictSame(names.get('ui-spice-app')?.deps, ['ui-spice-core', 'chardev-spice'], 'ui-spice-app deps');
  t.notOk(names.has('hw-s390x-virtio-gpu-ccw'), 'no s390x-only module');
  const qtest = entries.filter((e) => e.name.startsWith('accel-qtest-'));
  t.equal(qtest.length, 31, '31 qtest accelerators');
  t.ok(
    qtest.every((e) => e.arch === e.name.slice('accel-qtest-'.length)),
    'each accel-qtest-<target> has arch <target>',
  );
  t.ok(
    entries.every((e) => e.deps.every((d) => names.has(d))),
    'every dependency is itself an entry',
  );
  if (fs.existsSync(MODULE_DIR)) {
    const missing = fs
      .readdirSync(MODULE_DIR)
      .filter((f) => f.endsWith('.so'))
      .map((f) => f.slice(0, -3))
      .filter((m) => !NOT_IN_X86_TABLES.has(m) && !names.has(m));
    t.strictSame(missing, [], `every module in ${MODULE_DIR} has an entry`);
  }
}

t.test('qemu-system-x86_64 on this host', { skip: skipX86 }, async (t) => {
  const t0 = process.hrtime.bigint();
  const entries = readPath(X86_64);
  const first = Number(process.hrtime.bigint() - t0) / 1e6;
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t1 = process.hrtime.bigint();
    readPath(X86_64);
    times.push(Number(process.hrtime.bigint() - t1) / 1e6);
  }
  times.sort((a, b) => a - b);
  t.comment(
    `readModinfo(${X86_64}, ${realX86.length} bytes): first ${first.toFixed(2)} ms, median of 10 more ` +
      `${times[5]!.toFixed(2)} ms`,
  );
  t.ok(entries, 'has a table');
  if (entries) checkQemu72Table(t, entries);
});

t.test('qemu-system-i386 on this host', { skip: fs.existsSync(I386) ? false : `${I386} not installed` }, async (t) => {
  const entries = readPath(I386);
  t.ok(entries, 'has a table');
  if (entries) checkQemu72Table(t, entries);
});

t.test('binaries without a table', async (t) => {
  const tool = fs.existsSync('/usr/bin/qemu-img') ? '/usr/bin/qemu-img' : '/bin/ls';
  t.equal(readPath(tool), null, tool);
  const microvm = '/usr/bin/qemu-system-x86_64-microvm';
  if (fs.existsSync(microvm)) t.equal(readPath(microvm), null, `${microvm} (not a modular build)`);
  t.equal(readBuf(makeElf({ symbols: ['qemu_modinfox', 'qemu_modinf'] })), null, 'near-miss symbol names');
  t.equal(readBuf(makeElf({ class: 32, symbols: ['qemu_modinfo'] })), null, 'ELF32');
  t.equal(readBuf(makeElf({ endian: 'be', symbols: ['qemu_modinfo'] })), null, 'big-endian');
});

// ------------------------------------------------------------ patched copies

t.test('patched copies of qemu-system-x86_64', { skip: skipX86 }, async (t) => {
  const expected = readPath(X86_64);
  const l = layoutOf(realX86);
  const slots = relativeSlots(realX86, l);

  t.test('as aarch64: e_machine 183 and R_AARCH64_RELATIVE', async (t) => {
    const buf = Buffer.from(realX86);
    buf.writeUInt16LE(183, l.machineAt);
    eachRela(buf, l, (at, _offset, type) => {
      if (type === 8) buf.writeUInt32LE(1027, at + 8);
    });
    t.strictSame(readBuf(buf), expected, 'reads like the original');
  });

  t.test('x86_64 with aarch64 relocation types', async (t) => {
    const buf = Buffer.from(realX86);
    eachRela(buf, l, (at, _offset, type) => {
      if (type === 8) buf.writeUInt32LE(1027, at + 8);
    });
    rejects(t, () => readBuf(buf), /non-RELATIVE relocation/, 'table slots relocated by a foreign type');
  });

  t.test('another machine', async (t) => {
    const buf = Buffer.from(realX86);
    buf.writeUInt16LE(243, l.machineAt); // RISC-V
    t.equal(readBuf(buf), null, 'no table');
  });

  // What a non-PIE or RELR build looks like to the reader: pointers in place.
  const prelinked = Buffer.from(realX86);
  eachRela(prelinked, l, (at, offset, type, addend) => {
    if (type !== 8) return;
    prelinked.writeBigInt64LE(addend, fileOffset(l, offset));
    prelinked.writeUInt32LE(0, at + 8); // R_X86_64_NONE
  });

  t.test('relocations applied in place', async (t) => {
    t.strictSame(readBuf(prelinked), expected, 'reads like the original');
  });

  t.test('relocation table in reverse order', async (t) => {
    // Defeats the binary search over the sorted prefix.
    const buf = Buffer.from(realX86);
    for (const s of l.relas) {
      const count = s.size / 24;
      for (let i = 0; i < count; i++)
        realX86.copy(buf, s.offset + i * 24, s.offset + (count - 1 - i) * 24, s.offset + (count - i) * 24);
    }
    t.strictSame(readBuf(buf), expected, 'reads like the original');
  });

  t.test('a name longer than 256 bytes', async (t) => {
    const buf = Buffer.from(realX86);
    const name = fileOffset(l, slots.get(l.tableVa)!.value);
    buf.fill(0x41, name, name + 300);
    rejects(t, () => readBuf(buf), /exceeds 256 bytes/, 'long name');
  });

  t.test('a string array longer than 256 items', async (t) => {
    const buf = Buffer.from(prelinked);
    const name = prelinked.readBigUInt64LE(l.tableAt);
    // Every array gets at least 300 items, whichever is read first.
    for (let e = 0; e < l.tableSize / 40; e++) {
      for (const field of [2, 3]) {
        const array = n64(prelinked, l.tableAt + e * 40 + field * 8);
        if (array === 0) continue;
        for (let k = 0; k < 300; k++) buf.writeBigUInt64LE(name, fileOffset(l, array) + k * 8);
      }
    }
    rejects(t, () => readBuf(buf), /exceeds 256 items/, 'long array');
  });

  t.test('symbol sizes', async (t) => {
    const buf = Buffer.from(realX86);
    buf.writeBigUInt64LE(BigInt(l.tableSize - 40), l.symbolAt + 16);
    rejects(t, () => readBuf(buf), /no terminating entry/, 'size without the terminator');
    buf.writeBigUInt64LE(BigInt(l.tableSize + 1), l.symbolAt + 16);
    rejects(t, () => readBuf(buf), /not a positive multiple of 40/, 'odd size');
    buf.writeBigUInt64LE(0n, l.symbolAt + 16);
    rejects(t, () => readBuf(buf), /not a positive multiple of 40/, 'size 0');
    buf.writeBigUInt64LE(40n * 5000n, l.symbolAt + 16);
    rejects(t, () => readBuf(buf), /exceeds limit/, '5000 entries');
    buf.writeBigUInt64LE(BigInt(l.tableSize), l.symbolAt + 16);
    buf.writeBigUInt64LE(0xffff_ffff_ffff_0000n, l.symbolAt + 8);
    rejects(t, () => readBuf(buf), /not in any loadable segment/, 'address beyond 2^53');
  });
});

// ------------------------------------------------------------ hostile input

t.test('not ELF', async (t) => {
  rejects(
    t,
    () => readBuf(Buffer.from('#!/bin/sh\nexec /usr/libexec/qemu-system-i386 "$@"\n')),
    /not an ELF file/,
    'a script',
  );
  rejects(t, () => readBuf(Buffer.alloc(0)), /not an ELF file/, 'an empty file');
  rejects(t, () => readBuf(Buffer.from('\x7fELF', 'latin1')), /truncated ELF header/, 'just the magic');
  rejects(t, () => readPath('/dev/null', -1), /invalid file size/, 'a negative size');
  rejects(t, () => readBuf(makeElf({ noSectionHeaders: true })), /no section headers/, 'no section headers');
  rejects(
    t,
    () => readBuf(makeElf({ symbols: ['qemu_modinfo'] })),
    /not a positive multiple/,
    'a qemu_modinfo of size 0',
  );
});

t.test('truncated copies of qemu-system-x86_64', { skip: skipX86 }, async (t) => {
  const l = layoutOf(realX86);
  const file = writeTemp(realX86);
  const lengths = [
    realX86.length - 1,
    l.headers[1]![0] + 100,
    l.tableAt + l.tableSize + 8,
    l.tableAt + 100,
    l.relas[0]!.offset + 1000,
    0x10000,
    1000,
    64,
    63,
    16,
    3,
    0,
  ];
  for (const len of lengths) {
    fs.truncateSync(file, len);
    rejects(t, () => readPath(file), /truncated|beyond end of file|not an ELF file/, `${len} bytes`);
    // The file shrank after its size was measured.
    rejects(t, () => readPath(file, realX86.length), /truncated|not an ELF file/, `${len} bytes, full size claimed`);
  }
  fs.rmSync(file);
});

t.test('random bytes flipped in and around the table', { skip: skipX86 }, async (t) => {
  const l = layoutOf(realX86);
  const slots = relativeSlots(realX86, l);
  // The bytes the reader's answer depends on: headers (with the GNU hash
  // table's), the symbol, the table, and the relocations of the table and
  // of its arrays.
  const regions: Array<[number, number]> = [
    ...l.headers,
    [l.symbolAt, l.symbolAt + 24],
    [l.tableAt, l.tableAt + l.tableSize],
  ];
  const arrays: number[] = [];
  for (let va = l.tableVa; va < l.tableVa + l.tableSize; va += 8) {
    const s = slots.get(va);
    if (s === undefined) continue;
    regions.push([s.at, s.at + 24]);
    const field = ((va - l.tableVa) % 40) / 8;
    if (field === 2 || field === 3) arrays.push(s.value);
  }
  for (const a of arrays) {
    for (let k = 0; k < 8; k++) {
      const s = slots.get(a + k * 8);
      if (s !== undefined) regions.push([s.at, s.at + 24]);
    }
  }
  const weights = regions.map(([a, b]) => b - a);
  const total = weights.reduce((x, y) => x + y, 0);

  const file = writeTemp(realX86);
  const fd = fs.openSync(file, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const random = prng(0x6d6f64);
  const tally: Record<Outcome, number> = { null: 0, array: 0, ElfError: 0 };
  let slowest = 0;
  for (let iteration = 0; iteration < 200; iteration++) {
    const flips: Array<[number, number]> = [];
    const count = 1 + Math.floor(random() * 4);
    for (let f = 0; f < count; f++) {
      let pick = Math.floor(random() * total);
      let r = 0;
      while (pick >= weights[r]!) pick -= weights[r++]!;
      const pos = regions[r]![0] + pick;
      flips.push([pos, realX86[pos]!]);
      fs.writeSync(fd, Buffer.from([Math.floor(random() * 256)]), 0, 1, pos);
    }
    const t0 = process.hrtime.bigint();
    const o = outcome(() => readModinfo(fd, realX86.length));
    slowest = Math.max(slowest, Number(process.hrtime.bigint() - t0) / 1e6);
    tally[o.kind]++;
    // Restore in reverse, in case a byte was picked twice.
    for (const [pos, byte] of flips.reverse()) fs.writeSync(fd, Buffer.from([byte]), 0, 1, pos);
  }
  t.comment(`outcomes: ${JSON.stringify(tally)}, slowest read ${slowest.toFixed(1)} ms`);
  t.equal(tally.null + tally.array + tally.ElfError, 200, 'only null, an array or ElfError');
  t.ok(slowest < 5000, 'no read took long');
  t.strictSame(readModinfo(fd, realX86.length), readPath(X86_64), 'restored copy reads like the original');
});
