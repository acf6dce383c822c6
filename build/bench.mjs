#!/usr/bin/env node
// `npm run bench`: builds, bundles the benchmark (TypeScript, it shares the
// tests' fixtures) and runs it. Arguments pass through (--json).
// `npm run bench -- --code-cache` also builds the executable once per kind
// of code cache (build/sea.mjs) and adds their start-up side by side.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { buildSea, CODE_CACHES } from './sea.mjs';

const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
execFileSync(process.execPath, [path.join(top, 'build/build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const out = path.join(top, 'dist/bench.cjs');
await esbuild.build({
  entryPoints: [path.join(top, 'test/bench/bench.ts')],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  logLevel: 'warning',
});

const env = { ...process.env };
const variants = process.argv.includes('--code-cache')
  ? fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-bench-sea-'))
  : null;
try {
  if (variants) {
    const built = [];
    for (const kind of CODE_CACHES) {
      const exe = path.join(variants, kind);
      built.push(`${await buildSea({ top, bundle: path.join(top, 'dist/bundle.cjs'), exe, codeCache: kind })}=${exe}`);
    }
    env.BENCH_CODE_CACHE_EXES = built.join(',');
  }
  execFileSync(process.execPath, [out, ...process.argv.slice(2).filter((a) => a !== '--code-cache')], {
    stdio: 'inherit',
    env,
  });
} finally {
  if (variants) fs.rmSync(variants, { recursive: true, force: true });
}
