#!/usr/bin/env node
// `npm run bench`: builds, bundles the benchmark (TypeScript, it shares the
// tests' fixtures) and runs it. Arguments pass through (--json).
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
execFileSync(process.execPath, [path.join(top, 'build/build.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
const out = path.join(top, 'dist/bench.cjs');
await esbuild.build({ entryPoints: [path.join(top, 'test/bench/bench.ts')], outfile: out, bundle: true, platform: 'node', format: 'cjs', target: 'node20', logLevel: 'warning' });
execFileSync(process.execPath, [out, ...process.argv.slice(2)], { stdio: 'inherit' });
