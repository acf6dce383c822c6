import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { needTool, tempDir } from '../fixtures/monitoring';
import { parsePrometheus } from '../fixtures/outputs';
import { addGuest } from '../fixtures/guests';
import { MODDIR, TOP, sysroot } from '../fixtures/sysroot';

// The shipped alerting rules as promtool reads them: they load, their unit
// tests (rules.promtool.yml) pass, every rule has a firing and a resolving
// case there, a wrong expectation makes promtool fail, and every metric they
// use is one the tool writes.

const RULES = path.join(TOP, 'hooks/prometheus/qemu-modwatch.rules.yml');
const UNIT = path.join(TOP, 'test/monitoring/rules.promtool.yml');

const promtool = needTool(t, 'promtool', 'prometheus');

function run(args: string[], cwd = TOP) {
  const r = spawnSync(promtool!, args, { cwd, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const alerts = [...fs.readFileSync(RULES, 'utf8').matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1]!);

t.test('promtool check rules', { skip: !promtool }, async (t) => {
  const r = run(['check', 'rules', RULES]);
  t.equal(r.code, 0, r.out);
  t.match(r.out, new RegExp(`SUCCESS: ${alerts.length} rules found`));
  t.ok(alerts.length >= 6, `${alerts.length} alerts`);
});

t.test('promtool check rules refuses a broken rule', { skip: !promtool }, async (t) => {
  const dir = tempDir(t, 'rules');
  const broken = path.join(dir, 'broken.yml');
  fs.writeFileSync(
    broken,
    fs.readFileSync(RULES, 'utf8').replace('qemu_modwatch_refused_modules > 0', 'qemu_modwatch_refused_modules >'),
  );
  const r = run(['check', 'rules', broken]);
  t.not(r.code, 0, 'a broken expression fails the check');
  t.match(r.out, /parse error/);
});

t.test('promtool test rules: every rule fires and resolves as its unit tests say', { skip: !promtool }, async (t) => {
  const r = run(['test', 'rules', UNIT], path.dirname(UNIT));
  t.equal(r.code, 0, r.out);
  t.match(r.out, /SUCCESS/);
  const unit = fs.readFileSync(UNIT, 'utf8');
  for (const name of alerts) {
    // A case that expects it firing, and a later one that expects nothing.
    const cases = [...unit.matchAll(new RegExp(`alertname: ${name}\\n\\s+exp_alerts:( \\[\\])?`, 'g'))].map((m) =>
      m[1] ? 'quiet' : 'firing',
    );
    t.ok(cases.includes('firing'), `${name}: a firing case`);
    t.ok(cases.lastIndexOf('quiet') > cases.indexOf('firing'), `${name}: a resolving case after it`);
  }
});

t.test('promtool test rules fails on a wrong expectation', { skip: !promtool }, async (t) => {
  const dir = tempDir(t, 'rules');
  const copy = path.join(dir, 'unit.yml');
  const text = fs.readFileSync(UNIT, 'utf8').replace('../../hooks/prometheus/qemu-modwatch.rules.yml', RULES);
  fs.writeFileSync(copy, text);
  t.equal(run(['test', 'rules', copy], dir).code, 0, 'the copy passes as it is');
  fs.writeFileSync(copy, text.replace('exp_labels: { severity: critical', 'exp_labels: { severity: warning'));
  const r = run(['test', 'rules', copy], dir);
  t.not(r.code, 0, 'a wrong severity fails');
  t.match(r.out, /FAILED/);
});

t.test('every metric the rules use is one the tool writes', async (t) => {
  const s = sysroot(t);
  addGuest(s, { pid: 4242, domain: 'web01' });
  s.addModule(MODDIR, 'hw-usb-host.so', { stamp: 'cd'.repeat(20) });
  const r = s.run(['--check', '--format', 'prometheus']);
  const written = new Set(parsePrometheus(r.stdout).samples.map((x) => x.name));
  const used = new Set([...fs.readFileSync(RULES, 'utf8').matchAll(/\bqemu_modwatch_\w+/g)].map((m) => m[0]));
  t.ok(used.size >= 6);
  for (const name of used) t.ok(written.has(name), `${name} is written`);
  // The label value the stale-entry rule selects on.
  t.ok(
    parsePrometheus(r.stdout).samples.some(
      (x) => x.name === 'qemu_modwatch_stale_cache_entries' && x.labels.libvirt === 'serves_stale',
    ),
  );
});

t.test("README's fleet queries are the ones the unit tests evaluate", async (t) => {
  const readme = fs.readFileSync(path.join(TOP, 'README.md'), 'utf8');
  const fleet = readme.slice(readme.indexOf('## Running it across a fleet'));
  const block = /```promql\n([\s\S]*?)```/.exec(fleet);
  t.ok(block, 'the fleet page has a promql block');
  const queries = (block?.[1] ?? '').trim().split('\n');
  t.ok(queries.length >= 3, `${queries.length} queries`);
  const tested = new Set([...fs.readFileSync(UNIT, 'utf8').matchAll(/^\s*- expr: (.+)$/gm)].map((m) => m[1]!.trim()));
  for (const q of queries) t.ok(tested.has(q), `evaluated with its answer in rules.promtool.yml: ${q}`);
});
