import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { CacheHeaderError, parseCacheHeader, readCacheHeader, type CacheHeader } from '../../src/formats/cache-header';
import { CACHE_TOKENS, CACHE_XMLS } from './corpus';
import { b64, byteMutation, fuzz, mutate, unb64 } from './harness';

// The capabilities cache header reader on mutated real cache files, cut
// into pieces at random: whoever can write the cache directory (a QEMU
// process running as libvirt's user may) controls these bytes.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-fuzz-cache-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'entry.xml');
const BASES = CACHE_XMLS.map((x) => Buffer.from(x));

type Outcome = CacheHeader | 'error';

function outcome(f: () => CacheHeader): Outcome {
  try {
    const h = f();
    if (typeof h.emulator !== 'string' || h.emulator.length === 0) throw new Error('emulator missing');
    for (const k of ['qemuctime', 'qemumoddirmtime', 'selfvers'] as const) {
      const v = h[k];
      if (v !== null && !(Number.isSafeInteger(v) && v >= 0)) throw new Error(`${k} = ${v}`);
    }
    return h;
  } catch (e) {
    if (!(e instanceof CacheHeaderError)) throw e;
    if (/[\r\n]/.test(e.message) || e.message.length > 300)
      throw new Error(`not a one-line message: ${JSON.stringify(e.message)}`);
    return 'error';
  }
}

function cut(buf: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < buf.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

interface Input {
  bytes: Buffer;
  sizes: number[];
}

function check({ bytes, sizes }: Input): void {
  const whole = outcome(() => parseCacheHeader([bytes]));
  const pieces = outcome(() => parseCacheHeader(cut(bytes, sizes)));
  if (JSON.stringify(whole) !== JSON.stringify(pieces))
    throw new Error(`chunking changed the result: ${JSON.stringify([whole, pieces])}`);
  fs.writeFileSync(file, bytes);
  const fd = fs.openSync(file, 'r');
  try {
    const fromFd = bytes.length === 0 ? 'error' : outcome(() => readCacheHeader(fd, bytes.length));
    if (bytes.length > 0 && JSON.stringify(whole) !== JSON.stringify(fromFd))
      throw new Error(`file and Buffer disagree: ${JSON.stringify([whole, fromFd])}`);
  } finally {
    fs.closeSync(fd);
  }
}

const input: fc.Arbitrary<Input> = fc
  .record({
    base: fc.nat({ max: BASES.length - 1 }),
    mutations: fc.array(byteMutation, { minLength: 1, maxLength: 6 }),
    sizes: fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 6 }),
  })
  .map(({ base, mutations, sizes }) => ({ bytes: mutate(BASES[base]!, mutations, CACHE_TOKENS), sizes }));

t.test('capabilities cache header: mutated real files, random pieces', async (t) => {
  await fuzz(t, {
    name: 'cache-header',
    arbitrary: input,
    check,
    encode: (v) => ({ input: b64(v.bytes), extra: { sizes: v.sizes } }),
    decode: (r) => ({ bytes: unb64(r.input), sizes: (r.extra as { sizes: number[] }).sizes }),
    ciRuns: 2500,
  });
});
