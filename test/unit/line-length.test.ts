import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';

// prettier wraps code at 120 characters but not comments, strings or
// regular expressions: this keeps every line of the sources within it.

const TOP = path.resolve(__dirname, '../..');
const LIMIT = 120;
const DIRS = ['src', 'test', 'build', 'hooks'];
const EXTENSIONS = /\.(ts|mts|mjs|cjs|sh)$/;

/** Files with lines still over the limit, and how many. */
const KNOWN: Record<string, number> = {
  // Regular expression literals.
  'test/integration/commands.test.ts': 1,
  'test/integration/faults.test.ts': 5,
  'test/integration/hook.test.ts': 1,
  'test/integration/real-verdicts.test.ts': 1,
  // Lines of shell scripts and XML inside template literals.
  'test/fuzz/corpus.ts': 1,
  'test/packaging/deb.test.ts': 4,
  'test/packaging/package-kit.ts': 1,
  'test/packaging/rpm.test.ts': 2,
  'test/reliability/lock.test.ts': 1,
};

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : EXTENSIONS.test(e.name) ? [p] : [];
  });
}

t.test(`every line of the sources is at most ${LIMIT} characters`, async (t) => {
  const all = DIRS.flatMap((d) => files(path.join(TOP, d))).map((f) => path.relative(TOP, f));
  t.ok(all.length > 100, `${all.length} files`);
  for (const file of all) {
    const long = fs
      .readFileSync(path.join(TOP, file), 'utf8')
      .split('\n')
      .flatMap((l, i) => (l.length > LIMIT ? [`${file}:${i + 1} is ${l.length} characters`] : []));
    const known = KNOWN[file] ?? 0;
    if (long.length > known) t.fail(long.join('\n'));
    else if (long.length < known) t.fail(`${file}: ${long.length} long lines, not ${known}: lower KNOWN`);
  }
  for (const file of Object.keys(KNOWN)) t.ok(all.includes(file), `${file} exists`);
});
