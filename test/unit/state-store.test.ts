import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { loadState, writeState, type State } from '../../src/store/state-store';

// A state that parses but would make later code throw is as corrupt as one that does not parse.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-state-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'state.json');

const good: State = {
  schema: 1,
  writtenBy: '0.1.0',
  baseline: {
    takenAtNs: '1795000000000000000',
    dirs: [{ path: '/usr/lib/qemu', source: 'default', mtimeNs: '1', ctimeNs: '1', modules: [], error: null }],
    emulators: [],
    missingDirs: [],
  },
  lastAction: { at: '2026-11-26T22:00:00.000Z', trigger: 'refresh', summary: 'x', deleted: [], nudged: [] },
};

t.test('a written state loads back', async (t) => {
  writeState(file, good);
  const l = loadState(file);
  t.equal(l.kind, 'ok');
  t.same(l.kind === 'ok' && l.state, good);
});

t.test('shapes that would break later readers are corrupt', async (t) => {
  const cases: [string, (s: any) => void, RegExp][] = [
    ['writtenBy a number', (s) => (s.writtenBy = 7), /writtenBy/],
    ['lastAction without summary', (s) => delete s.lastAction.summary, /lastAction/],
    ['lastAction.at not a date', (s) => (s.lastAction.at = 'yesterday'), /lastAction/],
    ['lastAction.trigger a number', (s) => (s.lastAction.trigger = 1), /lastAction/],
    ['takenAtNs beyond any date', (s) => (s.baseline.takenAtNs = '9'.repeat(22)), /takenAtNs/],
    ['takenAtNs with 30 digits', (s) => (s.baseline.takenAtNs = '1'.repeat(30)), /takenAtNs/],
    ['unknown directory source', (s) => (s.baseline.dirs[0].source = 'elsewhere'), /directory entry/],
    ['missingDirs with a number', (s) => (s.baseline.missingDirs = [1]), /missingDirs/],
    [
      'emulator target a number',
      (s) =>
        (s.baseline.emulators = [
          {
            path: '/e',
            source: 'path',
            kind: 'wrapper',
            mode: 493,
            size: 1,
            mtimeNs: '1',
            ctimeNs: '1',
            ino: '1',
            dev: '1',
            stamp: null,
            target: 5,
            moduleDir: null,
            dirsInBinary: [],
            usesUpgradeDirs: false,
            error: null,
          },
        ]),
      /emulator entry/,
    ],
  ];
  for (const [label, spoil, why] of cases) {
    const s = structuredClone(good) as any;
    spoil(s);
    fs.writeFileSync(file, JSON.stringify(s));
    const l = loadState(file);
    t.equal(l.kind, 'corrupt', label);
    t.match(l.kind === 'corrupt' ? l.reason : '', why, label);
  }
});
