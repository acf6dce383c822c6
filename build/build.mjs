#!/usr/bin/env node
// Builds dist/qemu-modwatch.cjs (the bundle, for distros with their own
// Node.js) and dist/qemu-modwatch (the bundle injected into a stripped copy
// of the running node as a Single Executable Application). Everything comes
// from node_modules and the local node binary: no network.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { generateDocs } from './gen-docs.mjs';

const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const dist = path.join(top, 'dist');
const pkg = JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8'));
const only = process.argv[2]; // 'bundle' skips the executable

fs.mkdirSync(dist, { recursive: true });
const bundle = path.join(dist, 'bundle.cjs');
await esbuild.build({
  entryPoints: [path.join(top, 'src/main.ts')],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minify: true,
  keepNames: true,
  legalComments: 'none',
  define: {
    __QEMU_MODWATCH_VERSION__: JSON.stringify(pkg.version),
    // What `install` places, inside the one executable.
    __QEMU_MODWATCH_SHIPPED__: JSON.stringify(
      Object.fromEntries(
        ['qemu.d/50-qemu-modwatch', 'daemon.d/50-qemu-modwatch', 'qemu-modwatch.conf'].map((f) => [f, fs.readFileSync(path.join(top, 'hooks', f), 'utf8')]),
      ),
    ),
  },
  logLevel: 'warning',
});
const code = fs.readFileSync(bundle, 'utf8');
writeExecutable(path.join(dist, 'qemu-modwatch.cjs'), `#!/usr/bin/env node\n${code}`);
// The man page and bash completion, from the same option table as --help.
await generateDocs(top, dist, pkg.version);
if (only === 'bundle') process.exit(0);

// The SEA: node writes a blob from the bundle, postject puts it into a copy
// of node. With V8's code cache in the blob, a start takes ~7 ms less
// (BENCHMARKS.md); SEA_CODE_CACHE=0 builds without it. Stripping first
// drops ~10 MB of symbols the program never needs.
const seaConfig = path.join(dist, 'sea-config.json');
const blob = path.join(dist, 'sea-prep.blob');
fs.writeFileSync(
  seaConfig,
  JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache: process.env.SEA_CODE_CACHE !== '0' }),
);
// It says what it wrote on stderr; only a failure is news.
const prep = spawnSync(process.execPath, ['--experimental-sea-config', seaConfig], { encoding: 'utf8' });
if (prep.status !== 0) {
  process.stderr.write(prep.stdout + prep.stderr);
  throw new Error(`writing the SEA blob failed (exit ${prep.status})`);
}

const exe = path.join(dist, 'qemu-modwatch');
const tmp = `${exe}.tmp`;
fs.copyFileSync(process.execPath, tmp);
fs.chmodSync(tmp, 0o755);
try {
  // strip complains about node's many build notes; the result is fine.
  execFileSync('strip', ['--strip-all', tmp], { stdio: 'ignore' });
} catch {
  console.warn('build: strip not available; the executable keeps its symbols');
}
const postject = path.join(top, 'node_modules/postject/dist/cli.js');
// postject's ELF library warns about node's many notes; only a failure is news.
const inject = spawnSync(
  process.execPath,
  [postject, tmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'],
  { encoding: 'utf8' },
);
if (inject.status !== 0) {
  process.stderr.write(inject.stdout + inject.stderr);
  throw new Error(`postject failed (exit ${inject.status})`);
}
fs.renameSync(tmp, exe);
for (const f of [seaConfig, blob]) fs.rmSync(f);
console.log(`built ${path.relative(top, exe)} (${(fs.statSync(exe).size / 1e6).toFixed(1)} MB) and ${path.relative(top, exe)}.cjs`);

function writeExecutable(file, text) {
  fs.writeFileSync(`${file}.tmp`, text, { mode: 0o755 });
  fs.renameSync(`${file}.tmp`, file);
}
