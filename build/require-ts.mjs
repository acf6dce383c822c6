// Loads a module of src/ into a build script: bundled by esbuild into a
// file beside the build's output, required, and removed.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as esbuild from 'esbuild';

export async function requireTs(entry, outDir, define = {}) {
  const tmp = path.join(outDir, `.${path.basename(entry, '.ts')}-${process.pid}.cjs`);
  await esbuild.build({
    entryPoints: [entry],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    define,
    logLevel: 'warning',
  });
  try {
    return createRequire(import.meta.url)(tmp);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
