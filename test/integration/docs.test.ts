import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { bashCompletion, manPage } from '../../src/cli/docs';
import { COMMANDS, OPTIONS } from '../../src/cli/options';
import { EXE, TOP } from '../fixtures/sysroot';

// --help, the man page and the bash completion all come from the option
// table: each names every option and command, and none names anything else.

const MAN = path.join(TOP, 'dist/qemu-modwatch.8');
const COMPLETION = path.join(TOP, 'dist/qemu-modwatch.bash-completion');
const version = JSON.parse(fs.readFileSync(path.join(TOP, 'package.json'), 'utf8')).version as string;
const optionNames = new Set(OPTIONS.map((o) => o.name));

const help = spawnSync(EXE, ['--help'], { encoding: 'utf8' }).stdout;
const man = fs.readFileSync(MAN, 'utf8');
const completion = fs.readFileSync(COMPLETION, 'utf8');

/** Every --option a text names (in roff, written \-\-option). */
function claimed(text: string): Set<string> {
  return new Set([...text.replace(/\\-/g, '-').matchAll(/(?<![\w-])--([a-z][a-z-]*)/g)].map((m) => m[1]!));
}

t.test('the build wrote the man page and completion from the current table', async (t) => {
  t.equal(man, manPage(version));
  t.equal(completion, bashCompletion());
});

t.test('every option and command in --help, the man page and the completion', async (t) => {
  for (const o of OPTIONS) {
    t.match(help, new RegExp(`^  --${o.name}\\b`, 'm'), `--help: --${o.name}`);
    t.match(
      man,
      new RegExp(String.raw`^\.BI? "?\\-\\-` + o.name.split('-').join(String.raw`\\-`), 'm'),
      `man: --${o.name}`,
    );
    t.ok(completion.includes(`--${o.name}`), `completion: --${o.name}`);
  }
  for (const c of COMMANDS) {
    t.match(help, new RegExp(`^  ${c.name}\\b`, 'm'), `--help: ${c.name}`);
    t.match(man, new RegExp(`^\\.B ${c.name}\\b`, 'm'), `man: ${c.name}`);
    t.match(completion, new RegExp(`\\b${c.name}\\b`), `completion: ${c.name}`);
  }
});

t.test('nothing claims an option that does not exist', async (t) => {
  for (const [what, text] of [
    ['--help', help],
    ['man page', man],
    ['completion', completion],
  ] as const) {
    const extra = [...claimed(text)].filter((o) => !optionNames.has(o));
    t.same(extra, [], `${what} names only real options`);
  }
  // And every option the parser accepts is one the table lists.
  for (const bogus of ['--frobnicate', '--dryrun']) {
    t.equal(spawnSync(EXE, [bogus], { encoding: 'utf8' }).status, 3, `${bogus} is refused`);
  }
});

t.test('the man page is well-formed roff', async (t) => {
  const macros = new Set(['TH', 'SH', 'TP', 'PP', 'B', 'BI', 'BR', 'I', 'RI']);
  for (const line of man.split('\n')) {
    if (line.startsWith('.\\"')) continue;
    const m = /^\.([A-Z]+)\b/.exec(line);
    if (line.startsWith('.')) t.ok(m && macros.has(m[1]!), `known macro: ${line.slice(0, 30)}`);
    if (line.startsWith("'")) t.fail(`line starts with a quote: ${line.slice(0, 30)}`);
    if (/\\(?![-e&"])/.test(line.replace(/^\.\\".*/, ''))) t.fail(`stray escape: ${line.slice(0, 60)}`);
  }
  t.match(man, /^\.TH QEMU\\-MODWATCH 8 /m);
  for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'OPTIONS', 'EXIT STATUS', 'FILES'])
    t.match(man, new RegExp(`^\\.SH ${section}$`, 'm'));
});

const groff = spawnSync('groff', ['--version']).status === 0;
t.test(
  'the man page renders without warnings',
  { skip: !groff && 'groff is not installed (Debian: groff-base)' },
  async (t) => {
    const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', MAN], {
      encoding: 'utf8',
      env: { ...process.env, MANWIDTH: '80' },
    });
    t.equal(r.status, 0);
    t.equal(r.stderr, '', 'no warnings');
    const text = r.stdout.replace(/.\x08/g, '');
    t.match(text, /qemu-modwatch - keep libvirt's QEMU capabilities cache/);
    for (const o of OPTIONS) t.match(text, new RegExp(`--${o.name}`), `rendered: --${o.name}`);
  },
);

t.test('bash completion completes commands, options per command and option values', async (t) => {
  const complete = (line: string): string[] => {
    const words = line.split(' ');
    const script = `source ${JSON.stringify(COMPLETION)}
COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(' ')})
COMP_CWORD=${words.length - 1}
_qemu_modwatch
printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', script], { encoding: 'utf8' });
    t.equal(r.stderr, '', `bash: ${line}`);
    return r.stdout.split('\n').filter(Boolean).sort();
  };
  const first = complete('qemu-modwatch ');
  for (const c of COMMANDS) t.ok(first.includes(c.name), `offers ${c.name}`);
  t.same(complete('qemu-modwatch inv'), ['invalidate']);
  const inv = complete('qemu-modwatch invalidate --');
  t.ok(inv.includes('--dry-run') && inv.includes('--emulator') && inv.includes('--nudge'));
  t.notOk(inv.includes('--textfile'), 'only the options that go with the command');
  t.same(complete('qemu-modwatch check --format '), ['json', 'nagios', 'prometheus', 'text']);
  t.same(complete('qemu-modwatch --root /x refresh --nudge e'), ['emulator-ctime']);
  t.same(complete('qemu-modwatch hook '), ['daemon', 'qemu']);
  t.same(complete('qemu-modwatch hook qemu '), [], 'libvirt arguments are not ours');
  t.ok(complete('qemu-modwatch --textfile /').length > 0, 'directories for --textfile');
});
