#!/usr/bin/env node
// `npm test`: builds, runs node-tap over every suite, and ends with the
// plain "N passed, N failed" line CI reads, keeping tap's exit code.
// Extra arguments go to tap (e.g. a single test file).
//
// Around the whole run it compares a snapshot of the host paths the
// project touches (test/host-snapshot.mjs): a test that left the host
// changed fails the run, counted as one more test, with the list. The
// code's formatting (prettier --check) is one more test too.
import { spawnSync, spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { differences, snapshot } from './host-snapshot.mjs';

const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const build = spawnSync(process.execPath, [path.join(top, 'build/build.mjs')], { stdio: 'inherit', cwd: top });
if (build.status !== 0) {
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const pretty = spawnSync(
  process.execPath,
  [path.join(top, 'node_modules/prettier/bin/prettier.cjs'), '--check', '--log-level=warn', '.'],
  {
    cwd: top,
    encoding: 'utf8',
  },
);
const formatted = pretty.status === 0;
const hostBefore = snapshot();
const files = process.argv.slice(2);
const tap = spawn(process.execPath, [path.join(top, 'node_modules/tap/dist/esm/run.mjs'), ...files], {
  cwd: top,
  stdio: ['ignore', 'pipe', 'inherit'],
});
let tail = '';
tap.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString()).slice(-4096);
});

/** The host's differences from before the run; a reaper may still be removing a temp dir, so look again for a while. */
async function hostChanges() {
  let diff = differences(hostBefore, snapshot());
  for (let i = 0; i < 20 && diff.length; i++) {
    await new Promise((r) => setTimeout(r, 500));
    diff = differences(hostBefore, snapshot());
  }
  return diff;
}

tap.on('close', async (code, signal) => {
  // tap closes with "# { total: N, pass: N, fail: N, skip: N, ... }".
  const m = /# \{ total: (\d+)([^}]*)\}/.exec(tail);
  const field = (k) => Number(new RegExp(`${k}: (\\d+)`).exec(m?.[2] ?? '')?.[1] ?? 0);
  const exit = code ?? (signal ? 1 : 0);
  const changed = await hostChanges();
  if (changed.length) {
    console.log(`not ok - the test run left the host changed (${changed.length} paths):`);
    for (const l of changed) console.log(`#   ${l}`);
  } else {
    console.log('ok - the host paths the project touches are as they were before the run');
  }
  if (formatted) console.log('ok - the code is formatted as prettier formats it');
  else
    console.log(`not ok - prettier --check: not formatted:\n${(pretty.stdout + pretty.stderr).replace(/^/gm, '#   ')}`);
  if (!m) {
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  const pass = field('pass') + (changed.length ? 0 : 1) + (formatted ? 1 : 0);
  const failed = field('fail') + (changed.length ? 1 : 0) + (formatted ? 0 : 1) || (exit !== 0 ? 1 : 0);
  const skip = field('skip') + field('todo');
  console.log(`${pass} passed, ${failed} failed${skip ? `, ${skip} skipped` : ''}`);
  process.exit(exit || (changed.length || !formatted ? 1 : 0));
});
