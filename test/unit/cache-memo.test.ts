import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { readCacheView } from '../../src/host/cache-dir';
import type { CacheMemo } from '../../src/host/cache-dir';
import { loadCacheMemo, saveCacheMemo } from '../../src/store/cache-memo';
import { makePaths } from '../../src/host/paths';
import { EMULATOR, Sysroot } from '../fixtures/sysroot';

// Cache headers remembered by the stat data of their files: taken from the
// memo only while the file is the one that was read.

const MEMO = '/var/lib/qemu-modwatch/cache-headers.json';

function setup(t: Test) {
  const s = Sysroot.qemuHost(['a.so']);
  t.teardown(() => s.cleanup());
  const name = s.addCacheEntry(EMULATOR);
  const file = `${s.cacheDir()}/${name}`;
  // Older than the settling time: a file changed just now is not remembered.
  const old = new Date(Date.now() - 10_000);
  fs.utimesSync(file, old, old);
  return { s, name, file, paths: makePaths({ root: s.root, uid: 0, env: {} }) };
}

/** Reads the view the way a run does: the memo from disk in, what it holds now saved. */
function run(s: Sysroot, paths: ReturnType<typeof makePaths>) {
  const memo = { known: loadCacheMemo(s.host(MEMO)), seen: new Map() as CacheMemo };
  const view = readCacheView(paths, memo);
  s.mkdir('/var/lib/qemu-modwatch');
  saveCacheMemo(s.host(MEMO), memo);
  return view;
}

t.test('an unchanged entry is taken from the memo; a changed or replaced one is read again', async (t) => {
  const { s, name, file, paths } = setup(t);
  // ctime cannot be set back: wait out the settling time once.
  await new Promise((r) => setTimeout(r, 2100));
  const first = run(s, paths);
  t.equal(first.entries[0]?.emulator, EMULATOR, 'read from the file');
  const saved = JSON.parse(fs.readFileSync(s.host(MEMO), 'utf8'));
  t.equal(saved.entries[name].emulator, EMULATOR, 'and remembered');

  // A memo that says something else proves where an answer comes from.
  saved.entries[name].emulator = '/from/the/memo';
  fs.writeFileSync(s.host(MEMO), JSON.stringify(saved));
  t.equal(run(s, paths).entries[0]?.emulator, '/from/the/memo', 'same stat data: taken from the memo');

  saved.entries[name].emulator = '/from/the/memo';
  fs.writeFileSync(s.host(MEMO), JSON.stringify(saved));
  // libvirt replaces an entry by renaming a new file into place.
  fs.writeFileSync(`${file}.new`, fs.readFileSync(file));
  fs.renameSync(`${file}.new`, file);
  t.equal(run(s, paths).entries[0]?.emulator, EMULATOR, 'replaced: read again');
});

t.test('a just-written entry is read but not remembered, and never through a symlink', async (t) => {
  const { s, name, file, paths } = setup(t);
  fs.writeFileSync(`${file}.new`, fs.readFileSync(file));
  fs.renameSync(`${file}.new`, file);
  t.equal(run(s, paths).entries[0]?.emulator, EMULATOR);
  t.same([...loadCacheMemo(s.host(MEMO))], [], 'ctime within the settling time: not remembered');

  // A memo entry keyed like the target of a symlink planted under the entry's name.
  await new Promise((r) => setTimeout(r, 2100));
  run(s, paths);
  const saved = JSON.parse(fs.readFileSync(s.host(MEMO), 'utf8'));
  saved.entries[name].emulator = '/from/the/memo';
  fs.writeFileSync(s.host(MEMO), JSON.stringify(saved));
  fs.renameSync(file, `${s.root}/elsewhere.xml`);
  fs.symlinkSync(`${s.root}/elsewhere.xml`, file);
  const view = run(s, paths);
  t.equal(view.entries[0]?.emulator, null, 'the symlink is not taken for the file');
  t.match(view.entries[0]?.error, /symlink/);
});

t.test('a memo that is not what we write is ignored whole', async (t) => {
  const { s } = setup(t);
  s.mkdir('/var/lib/qemu-modwatch');
  const key = '1:2:3:4:5';
  const good = { key, emulator: EMULATOR, qemuctime: 1, qemumoddirmtime: null, selfvers: 9000000 };
  const name = 'a'.repeat(64) + '.xml';
  const cases: [string, string][] = [
    ['not JSON', '{"schema":1,'],
    ['another schema', JSON.stringify({ schema: 2, entries: { [name]: good } })],
    ['a name that is not a cache entry', JSON.stringify({ schema: 1, entries: { '../x.xml': good } })],
    ['an empty emulator', JSON.stringify({ schema: 1, entries: { [name]: { ...good, emulator: '' } } })],
    ['a negative time', JSON.stringify({ schema: 1, entries: { [name]: { ...good, qemuctime: -1 } } })],
    ['a key that is not a string', JSON.stringify({ schema: 1, entries: { [name]: { ...good, key: 5 } } })],
    ['an array', '[]'],
  ];
  for (const [label, text] of cases) {
    fs.writeFileSync(s.host(MEMO), text);
    t.equal(loadCacheMemo(s.host(MEMO)).size, 0, label);
  }
  fs.writeFileSync(s.host(MEMO), JSON.stringify({ schema: 1, entries: { [name]: good } }));
  t.same([...loadCacheMemo(s.host(MEMO))], [[name, good]], 'what we write loads');
  fs.rmSync(s.host(MEMO));
  t.equal(loadCacheMemo(s.host(MEMO)).size, 0, 'none at all');
});
