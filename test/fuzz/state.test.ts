import fc from 'fast-check';
import * as fs from 'node:fs';
import t from 'tap';
import { assessSeen } from '../../src/core/decide';
import { statKey } from '../../src/host/cache-dir';
import { loadCacheMemo } from '../../src/store/cache-memo';
import { DEFAULT_CONFIG } from '../../src/host/config';
import { look } from '../../src/app/look';
import { makePaths } from '../../src/host/paths';
import { loadState } from '../../src/store/state-store';
import { EMULATOR, MODDIR, Sysroot } from '../fixtures/sysroot';
import { byteMutation, fuzz, mutate, type ByteMutation } from './harness';

// The state loader on damaged and hand-edited states, and then the rest
// of a run with whatever it accepted: a state that loads as valid must
// never make a later stage throw, or every guest start from then on would
// log the same failure and the baseline would never be rewritten.

const s = Sysroot.qemuHost();
t.teardown(() => s.cleanup());
s.addEmulator('/usr/bin/qemu-system-i386-real', { dirs: [MODDIR] });
s.write(
  '/usr/bin/qemu-system-i386',
  '#!/bin/sh\nexport QEMU_MODULE_DIR=/opt/qemu/lib/qemu\nexec /usr/bin/qemu-system-i386-real "$@"\n',
  0o755,
);
s.addModule('/opt/qemu/lib/qemu', 'ui-gtk.so');
s.addModule(MODDIR, 'nobuildid.so', { buildId: null });
s.write(`${MODDIR}/broken.so`, 'not an ELF file');
if (s.run(['accept']).code !== 0) throw new Error('accept failed');
s.addCacheEntry(EMULATOR, { ageSeconds: 600 });
const REAL = fs.readFileSync(s.statePath(), 'utf8');
const ctx = { paths: makePaths({ root: s.root, uid: 0, env: {} }), config: DEFAULT_CONFIG, env: {} };

/** Every path to a value in a JSON document. */
function leaves(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => leaves(x, [...at, i], out));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) leaves(x, [...at, k], out);
  return out;
}
const PATHS = leaves(JSON.parse(REAL));

const REPLACEMENTS: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  1e308,
  2 ** 53 + 1,
  '',
  'x',
  '/abs/path',
  '123',
  '-1',
  '1'.repeat(40),
  [],
  {},
  [1, 'a', null],
  { a: 1 },
  '__proto__',
  'ü\u0000\u001b[31m',
  [[[[[[]]]]]],
];

/** One change to the real state: a JSON path (stable across runs: the scan's order is), and what to do there. */
interface Edit {
  at: (string | number)[];
  op: 'replace' | 'delete' | 'proto';
  value?: unknown;
}

const editAt = (paths: (string | number)[][]): fc.Arbitrary<Edit> =>
  fc
    .record({
      path: fc.nat(),
      op: fc.constantFrom<Edit['op']>('replace', 'replace', 'replace', 'delete', 'proto'),
      value: fc.nat(),
    })
    .map(({ path, op, value }) => ({
      at: paths[path % paths.length]!,
      op,
      ...(op === 'replace' ? { value: REPLACEMENTS[value % REPLACEMENTS.length] } : {}),
    }));
const edit = editAt(PATHS);

function applyEdits(edits: Edit[], base = REAL): string {
  const doc = JSON.parse(base);
  for (const e of edits) {
    if (e.at.length === 0) continue;
    let parent = doc;
    for (const k of e.at.slice(0, -1)) parent = parent?.[k];
    if (!parent || typeof parent !== 'object') continue;
    const key = e.at.at(-1)!;
    if (e.op === 'delete') {
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
    } else if (e.op === 'proto') {
      Object.defineProperty(parent, '__proto__', {
        value: { polluted: true },
        enumerable: true,
        configurable: true,
        writable: true,
      });
    } else {
      parent[key] = structuredClone(e.value);
    }
  }
  return JSON.stringify(doc);
}

/** Edits of the parsed state, or byte damage to its text. */
type Input = { edits: Edit[] } | { bytes: ByteMutation[] };

const input: fc.Arbitrary<Input> = fc.oneof(
  { weight: 4, arbitrary: fc.array(edit, { minLength: 1, maxLength: 3 }).map((edits) => ({ edits })) },
  { weight: 1, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 4 }).map((bytes) => ({ bytes })) },
);

function text(v: Input): string {
  return 'edits' in v
    ? applyEdits(v.edits)
    : mutate(Buffer.from(REAL), v.bytes, ['{', '}', '[', ']', '"', ',', ':', 'null', '1e999', '"\\u0000"']).toString(
        'latin1',
      );
}

let ok = 0;
let corrupt = 0;

function check(v: Input): void {
  fs.writeFileSync(s.statePath(), text(v), 'latin1');
  const loaded = loadState(s.statePath());
  if (loaded.kind === 'corrupt') {
    corrupt++;
    if (typeof loaded.reason !== 'string' || /[\r\n]/.test(loaded.reason))
      throw new Error(`reason ${JSON.stringify(loaded.reason)}`);
    return;
  }
  if (loaded.kind !== 'ok') throw new Error(`loaded ${loaded.kind} from an existing file`);
  ok++;
  // Accepted: the look and assess stages must cope with it.
  const observed = look(ctx);
  assessSeen(observed);
  if (({} as Record<string, unknown>).polluted !== undefined) throw new Error('Object.prototype polluted');
}

t.test('state: hand-edited and damaged', async (t) => {
  await fuzz(t, {
    name: 'state',
    arbitrary: input,
    check,
    encode: (v) => ({ input: '', extra: v }),
    decode: (r) => r.extra as Input,
    ciRuns: 1500,
  });
  t.ok(ok > 0 && corrupt > 0, `both outcomes seen (${ok} accepted, ${corrupt} refused)`);
});

// The cache-header memo beside the state: only a cache, so whatever it
// says, a run must neither throw nor take a header for a file it does not
// describe.
const entryName = fs.readdirSync(s.cacheDir())[0]!;
const entryFile = `${s.cacheDir()}/${entryName}`;
const MEMO_FILE = s.host('/var/lib/qemu-modwatch/cache-headers.json');
const REAL_MEMO = JSON.stringify({
  schema: 1,
  entries: {
    [entryName]: {
      key: statKey(fs.lstatSync(entryFile, { bigint: true })),
      emulator: '/from/the/memo',
      qemuctime: 1,
      qemumoddirmtime: null,
      selfvers: 9000000,
    },
  },
});
const memoInput: fc.Arbitrary<Input> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .array(editAt(leaves(JSON.parse(REAL_MEMO))), { minLength: 1, maxLength: 3 })
      .map((edits) => ({ edits })),
  },
  { weight: 1, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 4 }).map((bytes) => ({ bytes })) },
);

let fromMemo = 0;

function checkMemo(v: Input): void {
  fs.writeFileSync(s.statePath(), REAL);
  const textOf =
    'edits' in v
      ? applyEdits(v.edits, REAL_MEMO)
      : mutate(Buffer.from(REAL_MEMO), v.bytes, ['{', '}', '"', ',', ':', 'null', '-1']).toString('latin1');
  fs.writeFileSync(MEMO_FILE, textOf, 'latin1');
  const memo = loadCacheMemo(MEMO_FILE);
  for (const [name, m] of memo) {
    if (
      !/^[0-9a-f]{64}\.xml$/.test(name) ||
      typeof m.key !== 'string' ||
      typeof m.emulator !== 'string' ||
      m.emulator === ''
    )
      throw new Error(`loaded ${JSON.stringify([name, m])}`);
  }
  const observed = look(ctx);
  assessSeen(observed);
  const entry = observed.cache.entries.find((e) => e.file === entryName);
  if (entry?.emulator !== EMULATOR) {
    // Not what the file says: then only what the memo says of this very file.
    const m = memo.get(entryName);
    if (!m || entry?.emulator !== m.emulator || m.key !== statKey(fs.lstatSync(entryFile, { bigint: true })))
      throw new Error(`entry ${JSON.stringify(entry)}`);
    fromMemo++;
  }
  if (({} as Record<string, unknown>).polluted !== undefined) throw new Error('Object.prototype polluted');
}

t.test('cache-header memo: hand-edited and damaged', async (t) => {
  await fuzz(t, {
    name: 'cache-memo',
    arbitrary: memoInput,
    check: checkMemo,
    encode: (v) => ({ input: '', extra: v }),
    decode: (r) => r.extra as Input,
    ciRuns: 500,
  });
  t.ok(fromMemo > 0, `some memos were used (${fromMemo})`);
});
