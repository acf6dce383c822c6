#!/usr/bin/env node
// Compares two records of the executable's runs (test/fixtures/record.ts:
// QEMU_MODWATCH_RECORD=DIR npx tap test/integration/*.test.ts), made
// before and after a change, run by run in each test file's order.
//
//   node test/compare-records.mjs BEFORE_DIR AFTER_DIR
//
// What differs from one run of the suite to the next on the same code is
// normalised, and only that: temp directory names, times (ISO 8601, ns
// ms and s since the epoch, "N s ago"), pids, durations. Prints each
// difference and a last line "N runs compared, N differ"; exits 1 on any.
import * as fs from 'node:fs';
import * as path from 'node:path';

const NORMALISE = [
  [/\/tmp\/qmw-[A-Za-z0-9-]+?-[A-Za-z0-9]{6}(?=[/"'\s:,)\]]|$)/g, '<tmp>'],
  [/\/tmp\/[A-Za-z0-9._-]*[A-Za-z0-9]{6}(?=[/"'\s:,)\]]|$)/g, '<tmp>'],
  [/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<iso-time>'],
  [/\b1[6-9]\d{17}\b/g, '<ns-time>'],
  [/\b1[6-9]\d{11}(\.\d+)?\b/g, '<ms-time>'],
  [/\b1[6-9]\d{8}(\.\d+)?\b/g, '<s-time>'],
  [/\\"pid\\": \d+/g, '\\"pid\\": <n>'],
  [/\b\d+ (s|min|h|days) ago\b/g, '<ago>'],
  [/"ageSeconds": \d+/g, '"ageSeconds": <n>'],
  [/\bpid \d+\b/g, 'pid <n>'],
  [/\b\d+(\.\d+)? ?ms\b/g, '<ms>'],
  [/qemu_modwatch_(last_run|check_duration)_seconds(\{[^}]*\})? [\d.e+-]+/g, 'qemu_modwatch_$1_seconds$2 <n>'],
];

const norm = (s) => NORMALISE.reduce((acc, [re, to]) => acc.replace(re, to), s);

function load(dir) {
  const out = new Map();
  for (const f of fs
    .readdirSync(dir)
    .filter((n) => n.endsWith('.jsonl'))
    .sort()) {
    out.set(
      f,
      fs
        .readFileSync(path.join(dir, f), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
    );
  }
  return out;
}

const [beforeDir, afterDir] = process.argv.slice(2);
if (!beforeDir || !afterDir) {
  console.error('usage: node test/compare-records.mjs BEFORE_DIR AFTER_DIR');
  process.exit(2);
}
const before = load(beforeDir);
const after = load(afterDir);
let compared = 0;
let differ = 0;
for (const file of new Set([...before.keys(), ...after.keys()])) {
  const a = before.get(file) ?? [];
  const b = after.get(file) ?? [];
  if (a.length !== b.length) {
    differ++;
    console.log(`${file}: ${a.length} runs before, ${b.length} after`);
  }
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    compared++;
    for (const k of ['argv', 'stdin', 'code', 'stdout', 'stderr']) {
      const x = norm(JSON.stringify(a[i][k]));
      const y = norm(JSON.stringify(b[i][k]));
      if (x !== y) {
        differ++;
        let at = 0;
        while (x[at] === y[at]) at++;
        const around = (s) => s.slice(Math.max(0, at - 150), at + 150);
        console.log(
          `${file} run ${i + 1} (${a[i].argv.slice(-4).join(' ')}): ${k} differs\n  before: ` +
            `${around(x)}\n  after:  ${around(y)}`,
        );
        break;
      }
    }
  }
}
console.log(`${compared} runs compared, ${differ} differ`);
process.exit(differ ? 1 : 0);
