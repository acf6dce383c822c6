import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig, parseConfig, type Config } from '../../src/host/config';
import { CONFIG_TOKENS, CONFIGS } from './corpus';
import { b64, byteMutation, fuzz, mutate, unb64 } from './harness';

// The config: parsed from text anyone with root wrote, but also the one
// file that gives the root hook orders, so beyond "only ConfigError" every
// accepted config must be well-formed, nothing may leak into
// Object.prototype (`[__proto__]`), and as root a file others can change is
// refused whatever it says.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-fuzz-config-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'qemu-modwatch.conf');

function wellFormed(c: Config): void {
  const paths = (v: unknown, what: string) => {
    if (!Array.isArray(v) || !v.every((p) => typeof p === 'string' && p.startsWith('/') && !/[\0\n]/.test(p)))
      throw new Error(`${what}: ${JSON.stringify(v)}`);
  };
  paths(c.dirs, 'dirs');
  paths(c.emulators, 'emulators');
  if (typeof c.contentHash !== 'boolean') throw new Error(`contentHash ${JSON.stringify(c.contentHash)}`);
  if (!['invalidate', 'warn', 'refuse'].includes(c.onChange)) throw new Error(`onChange ${JSON.stringify(c.onChange)}`);
  if (!['emulator-ctime', 'moddir-mtime', 'none'].includes(c.nudge))
    throw new Error(`nudge ${JSON.stringify(c.nudge)}`);
  if (!['open', 'closed'].includes(c.fail)) throw new Error(`fail ${JSON.stringify(c.fail)}`);
  if (c.libvirtModdir !== null && (typeof c.libvirtModdir !== 'string' || !c.libvirtModdir.startsWith('/')))
    throw new Error(`libvirtModdir ${JSON.stringify(c.libvirtModdir)}`);
  const extra = Object.keys(c).filter(
    (k) => !['dirs', 'emulators', 'contentHash', 'onChange', 'nudge', 'fail', 'libvirtModdir'].includes(k),
  );
  if (extra.length) throw new Error(`unexpected fields ${extra.join(', ')}`);
}

function parsed(text: string): Config | 'error' {
  try {
    const c = parseConfig(text, '/etc/qemu-modwatch.conf');
    wellFormed(c);
    return c;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return 'error';
  } finally {
    const proto = Object.getOwnPropertyNames(Object.prototype).filter((k) => !BUILTIN.has(k));
    if (proto.length || ({} as Record<string, unknown>).polluted !== undefined)
      throw new Error(`Object.prototype polluted: ${proto.join(', ')}`);
  }
}
const BUILTIN = new Set(Object.getOwnPropertyNames(Object.prototype));

/** Line-structured configs from the tokens: sections, keys, values. */
const grammar = fc
  .array(
    fc.oneof(
      fc.constantFrom(...CONFIG_TOKENS.filter((x) => x.startsWith('['))),
      fc
        .tuple(
          fc.constantFrom(...CONFIG_TOKENS),
          fc.constantFrom(' = ', '=', ' =', '= '),
          fc.array(fc.constantFrom(...CONFIG_TOKENS), { maxLength: 4 }),
        )
        .map(([k, eq, v]) => `${k}${eq}${v.join('')}`),
      fc.string({ maxLength: 40 }),
    ),
    { maxLength: 12 },
  )
  .map((lines) => lines.join('\n'));

const texts = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.nat({ max: CONFIGS.length - 1 }), fc.array(byteMutation, { minLength: 1, maxLength: 6 }))
      .map(([b, m]) => mutate(Buffer.from(CONFIGS[b]!), m, CONFIG_TOKENS).toString('utf8')),
  },
  { weight: 2, arbitrary: grammar },
);

t.test('parseConfig: mutated real configs and generated ones', async (t) => {
  await fuzz(t, {
    name: 'config',
    arbitrary: texts,
    check: (text) => void parsed(text),
    encode: (v) => ({ input: b64(v) }),
    decode: (r) => unb64(r.input).toString('utf8'),
    ciRuns: 3000,
  });
});

interface FileInput {
  text: string;
  mode: number;
  uid: number;
  gid: number;
}

const isRoot = process.getuid?.() === 0;

/** As root: refused exactly when someone else can change it; otherwise what parseConfig says. */
function checkFile(v: FileInput): void {
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, v.text);
  fs.chmodSync(file, v.mode);
  if (isRoot) fs.chownSync(file, v.uid, v.gid);
  let got: Config | 'error';
  let message = '';
  try {
    got = loadConfig(file, 0);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    got = 'error';
    message = e.message;
  }
  const othersCanChange =
    (v.mode & 0o002) !== 0 || (isRoot && v.uid !== 0) || (isRoot && (v.mode & 0o020) !== 0 && v.gid !== 0);
  if (othersCanChange) {
    if (got !== 'error' || !/refusing a config/.test(message))
      throw new Error(`accepted a config others can change (mode ${v.mode.toString(8)}, uid ${v.uid}, gid ${v.gid})`);
    return;
  }
  const expected = parsed(v.text);
  if (JSON.stringify(got) !== JSON.stringify(expected))
    throw new Error(`loadConfig and parseConfig disagree: ${JSON.stringify([got, expected])}`);
}

t.test('loadConfig: who may change the file decides whether it is read', async (t) => {
  const files = fc.record({
    text: texts,
    mode: fc.constantFrom(0o600, 0o644, 0o640, 0o660, 0o664, 0o666, 0o602, 0o622, 0o4644, 0o1666),
    uid: fc.constantFrom(0, 0, 4321),
    gid: fc.constantFrom(0, 0, 4321),
  });
  await fuzz(t, {
    name: 'config-file',
    arbitrary: files,
    check: checkFile,
    encode: (v) => ({ input: b64(v.text), extra: { mode: v.mode, uid: v.uid, gid: v.gid } }),
    decode: (r) => ({
      text: unb64(r.input).toString('utf8'),
      ...(r.extra as { mode: number; uid: number; gid: number }),
    }),
    ciRuns: 1500,
  });
});
