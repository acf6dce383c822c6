import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';

// prettier wraps code at 120 characters but not comments, strings or
// regular expressions: this keeps every line of the sources within it.

const TOP = path.resolve(__dirname, '../..');
const LIMIT = 120;
const DIRS = ['src', 'test', 'build', 'hooks'];
const EXTENSIONS = /\.(ts|mts|mjs|cjs|sh)$/;

/** The scripts libvirt runs, installed as they are: they have no extension. */
const DISPATCHERS = ['hooks/qemu.d/50-qemu-modwatch', 'hooks/daemon.d/50-qemu-modwatch'];

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : EXTENSIONS.test(e.name) ? [p] : [];
  });
}

t.test(`every line of the sources is at most ${LIMIT} characters`, async (t) => {
  const all = [...DIRS.flatMap((d) => files(path.join(TOP, d))).map((f) => path.relative(TOP, f)), ...DISPATCHERS];
  t.ok(all.length > 100, `${all.length} files`);
  for (const file of all) {
    const long = fs
      .readFileSync(path.join(TOP, file), 'utf8')
      .split('\n')
      .flatMap((l, i) => (l.length > LIMIT ? [`${file}:${i + 1} is ${l.length} characters`] : []));
    if (long.length) t.fail(long.join('\n'));
  }
});
