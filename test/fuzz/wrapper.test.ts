import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { parseWrapperScript, readEmulator } from '../../src/formats/emulator-reader';
import { makeElf } from '../fixtures/elf';
import { WRAPPER_TOKENS, WRAPPERS } from './corpus';
import { b64, byteMutation, fuzz, mutate, unb64 } from './harness';

// The emulator reader: wrapper scripts (parsed with regular expressions,
// so also fuzzed with long lines for catastrophic backtracking) and binary
// emulators (scanned for the build stamp and module directories). The
// emulator a domain names is chosen by whoever defines the domain.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-fuzz-emu-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'qemu-system-x86_64');

function checkScript(script: string): void {
  const r = parseWrapperScript(script);
  if (r.target !== null && (!r.target.startsWith('/') || /[$`*?]/.test(r.target)))
    throw new Error(`target not a literal absolute path: ${JSON.stringify(r.target)}`);
  if (r.moduleDir !== null && !r.moduleDir.startsWith('/'))
    throw new Error(`moduleDir not absolute: ${JSON.stringify(r.moduleDir)}`);
}

/** A line of one repeated token: what makes a backtracking regular expression slow. */
const longLine = fc
  .record({
    token: fc.constantFrom(' ', '\t', 'a', '=', 'exec ', 'export ', 'A=', '"', "'", '# ', ';', '$', 'a=b ', ' #'),
    count: fc.integer({ min: 1000, max: 64 * 1024 }),
    prefix: fc.constantFrom('', 'exec ', 'x=', '#!/bin/sh\n'),
  })
  .map(({ token, count, prefix }) => prefix + token.repeat(Math.ceil(count / token.length)).slice(0, count));

const scripts = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.nat({ max: WRAPPERS.length - 1 }), fc.array(byteMutation, { minLength: 1, maxLength: 6 }))
      .map(([b, m]) => mutate(Buffer.from(WRAPPERS[b]!), m, WRAPPER_TOKENS).toString('utf8')),
  },
  { weight: 1, arbitrary: longLine },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 400 }) },
);

t.test('wrapper scripts', async (t) => {
  await fuzz(t, {
    name: 'wrapper-script',
    arbitrary: scripts,
    check: checkScript,
    encode: (v) => ({ input: b64(v) }),
    decode: (r) => unb64(r.input).toString('utf8'),
    ciRuns: 1500,
  });
});

const STAMP = 'f1b4c2639e440a9f989736fb1ad6d8336564df2e';
const BINARY = makeElf({
  type: 'exec',
  rodata: ['/usr/lib/x86_64-linux-gnu/qemu', '/var/run/qemu/%s', `qemu_stamp_${STAMP}`],
  padTo: 8192,
});
const BINARY_TOKENS = [
  `qemu_stamp_${STAMP}`,
  'qemu_stamp_',
  '/qemu\0',
  '\0/usr/lib/qemu\0',
  '/var/run/qemu/',
  '/run/qemu/',
  '#!',
  '\x7fELF',
];

function checkBinary(bytes: Buffer): void {
  fs.writeFileSync(file, bytes);
  const fd = fs.openSync(file, 'r');
  try {
    const r = readEmulator(fd, bytes.length);
    if (!['elf', 'wrapper', 'other'].includes(r.kind)) throw new Error(`kind ${r.kind}`);
    if (r.stamp !== null && !/^[0-9a-f]{40,}$/.test(r.stamp)) throw new Error(`stamp ${JSON.stringify(r.stamp)}`);
    if (!r.dirsInBinary.every((d) => d.startsWith('/') && d.endsWith('/qemu')))
      throw new Error(`dirs ${JSON.stringify(r.dirsInBinary)}`);
  } finally {
    fs.closeSync(fd);
  }
}

t.test('emulator binaries and scripts read from a file', async (t) => {
  const bases = [BINARY, ...WRAPPERS.map((w) => Buffer.from(w))];
  const input = fc
    .tuple(fc.nat({ max: bases.length - 1 }), fc.array(byteMutation, { minLength: 1, maxLength: 6 }))
    .map(([b, m]) => mutate(bases[b]!, m, BINARY_TOKENS));
  await fuzz(t, {
    name: 'emulator-file',
    arbitrary: input,
    check: checkBinary,
    encode: (v) => ({ input: b64(v) }),
    decode: (r) => unb64(r.input),
    ciRuns: 1500,
  });
});
