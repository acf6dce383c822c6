#!/usr/bin/env node
// `npm test`: builds, runs node-tap over every suite, and ends with the
// plain "N passed, N failed" line CI reads, keeping tap's exit code.
// Extra arguments go to tap (e.g. a single test file).
import { spawnSync, spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const build = spawnSync(process.execPath, [path.join(top, 'build/build.mjs')], { stdio: 'inherit', cwd: top });
if (build.status !== 0) {
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const files = process.argv.slice(2);
const tap = spawn(process.execPath, [path.join(top, 'node_modules/tap/dist/esm/run.mjs'), ...files], {
  cwd: top,
  stdio: ['ignore', 'pipe', 'inherit'],
});
let summary = null;
let tail = '';
tap.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString()).slice(-4096);
});
tap.on('close', (code, signal) => {
  // tap closes with "# { total: N, pass: N, fail: N, skip: N, ... }".
  const m = /# \{ total: (\d+)([^}]*)\}/.exec(tail);
  if (m) {
    const field = (k) => Number(new RegExp(`${k}: (\\d+)`).exec(m[2])?.[1] ?? 0);
    summary = { pass: field('pass'), fail: field('fail'), skip: field('skip') + field('todo') };
  }
  const exit = code ?? (signal ? 1 : 0);
  if (summary) {
    const failed = summary.fail || (exit !== 0 ? 1 : 0);
    console.log(`${summary.pass} passed, ${failed} failed${summary.skip ? `, ${summary.skip} skipped` : ''}`);
  } else {
    console.log(`0 passed, 1 failed`);
  }
  process.exit(exit || (summary ? 0 : 1));
});
