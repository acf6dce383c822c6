import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';

// The folders of src/ are kinds of thing, and each one's README.md says on
// its second line which folders it may import ("May import: a, b"). This
// keeps the code to that word: a module that imports against the
// direction fails here, and src/core imports nothing of Node at all.

const SRC = path.resolve(__dirname, '../../src');
const folders = fs.readdirSync(SRC).filter((n) => fs.statSync(path.join(SRC, n)).isDirectory());

function allowedBy(folder: string): Set<string> {
  const lines = fs.readFileSync(path.join(SRC, folder, 'README.md'), 'utf8').split('\n');
  const m = /^May import: (.+)$/.exec(lines[1] ?? '');
  if (!m) throw new Error(`src/${folder}/README.md: its second line is not "May import: ..."`);
  return new Set(m[1]!.split(',').map((s) => s.trim()));
}

/** Every module a file names: import/export ... from, import(), require(). */
export function specifiers(text: string): string[] {
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm;
  return [...text.matchAll(re)].map((m) => m[1]!);
}

/** The folder of src/ a relative specifier leads to, or the top-level file's name without .ts (main, version). */
function folderOf(fromFile: string, spec: string): string {
  const rel = path.relative(SRC, path.resolve(path.dirname(fromFile), spec));
  if (rel.startsWith('..')) return '..';
  const [first, ...rest] = rel.split(path.sep);
  return rest.length ? first! : first!.replace(/\.ts$/, '');
}

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

t.test('every folder of src/ says what lives there and what it may import', async (t) => {
  for (const f of folders) {
    const lines = fs
      .readFileSync(path.join(SRC, f, 'README.md'), 'utf8')
      .trimEnd()
      .split('\n');
    t.equal(lines.length, 2, `src/${f}/README.md is two lines`);
    t.ok(allowedBy(f).has(f), `src/${f} may import itself`);
  }
});

t.test('each folder imports only what its README.md allows', async (t) => {
  let checked = 0;
  for (const f of folders) {
    const allowed = allowedBy(f);
    for (const file of tsFiles(path.join(SRC, f))) {
      for (const spec of specifiers(fs.readFileSync(file, 'utf8'))) {
        const where = path.relative(SRC, file);
        if (!spec.startsWith('.')) {
          if (f === 'core') t.fail(`${where} imports '${spec}': core is pure, nothing of Node or of a package`);
          continue;
        }
        checked++;
        const to = folderOf(file, spec);
        if (!allowed.has(to)) t.fail(`${where} imports '${spec}' (${to}), which src/${f}/README.md does not allow`);
      }
    }
  }
  t.ok(checked > 50, `${checked} imports checked`);
});

t.test('the check itself catches an import against the direction', async (t) => {
  t.same(
    specifiers(
      `import * as fs from 'node:fs';\nimport type { X } from '../host/paths';\nconst c = require('node:crypto');\n`,
    ),
    ['node:fs', '../host/paths', 'node:crypto'],
  );
  t.equal(folderOf(path.join(SRC, 'core/x.ts'), '../host/paths'), 'host');
  t.equal(folderOf(path.join(SRC, 'app/x.ts'), '../version'), 'version');
  t.notOk(allowedBy('core').has('host'), 'core may not import host');
});
