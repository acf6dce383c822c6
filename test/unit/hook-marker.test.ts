// What tells our hooks from others' is written in three languages: the
// dispatchers and install --chain's wrapper carry the marker line, check
// (src/host/paths.ts) and the packages' scriptlets (build/deb/hooks-present.sh)
// look for it; the same three skip a package manager's copies by one list of
// suffixes. Each copy here is held equal to the TypeScript one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { HOOK_BACKUP_RE, HOOK_MARKER } from '../../src/host/paths';
import { chainWrapper } from '../../src/install/install';

const TOP = path.resolve(__dirname, '../..');
const read = (p: string) => fs.readFileSync(path.join(TOP, p), 'utf8');
const DISPATCHERS = ['hooks/qemu.d/50-qemu-modwatch', 'hooks/daemon.d/50-qemu-modwatch'];
const SHELL = read('build/deb/hooks-present.sh');

t.test('the marker: the second line of each dispatcher and of the chain wrapper, and the shell has it', async (t) => {
  for (const d of DISPATCHERS) t.equal(read(d).split('\n')[1], HOOK_MARKER, d);
  t.equal(chainWrapper('/etc/libvirt/hooks/qemu.before', '/usr/libexec/x/hook-qemu').split('\n')[1], HOOK_MARKER);
  t.equal(/^QMW_HOOK_MARKER='(.*)'$/m.exec(SHELL)?.[1], HOOK_MARKER, 'build/deb/hooks-present.sh');
  t.notOk(HOOK_MARKER.includes("'"), 'quotable as it stands in the shell');
});

t.test("a package manager's copies: one list in the dispatchers, the shell and HOOK_BACKUP_RE", async (t) => {
  const patterns = (text: string, end: RegExp) => {
    const m = new RegExp(`^\\s*(\\*\\.dpkg-\\*\\s*\\|.*)\\)\\s*${end.source}`, 'm').exec(text);
    return (m?.[1] ?? '').split('|').map((g) => g.trim());
  };
  const lists = [
    ...DISPATCHERS.map((d) => [d, patterns(read(d), /exit 0 ;;$/)] as const),
    ['build/deb/hooks-present.sh', patterns(SHELL, /continue ;;$/)] as const,
  ];
  const [, first] = lists[0]!;
  t.ok(first.length >= 5, `the list: ${first.join(' ')}`);
  for (const [file, list] of lists) t.same(list, first, `${file}: the same list`);
  // Each glob, its stars made a name, is a copy to the TypeScript; and the regex has no alternative more.
  for (const g of first) t.match(`50-qemu-modwatch${g.replace(/\*/g, 'x')}`, HOOK_BACKUP_RE, g);
  t.equal(HOOK_BACKUP_RE.source.split('|').length, first.length, 'as many alternatives in HOOK_BACKUP_RE');
  t.notMatch('50-qemu-modwatch', HOOK_BACKUP_RE, 'ours itself is not a copy');
});
