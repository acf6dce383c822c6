#!/usr/bin/env node
// Builds dist/qemu-modwatch.cjs (the bundle, for distros with their own
// Node.js) and dist/qemu-modwatch (the bundle injected into a stripped copy
// of the running node as a Single Executable Application, build/sea.mjs).
// Everything comes from node_modules and the local node binary: no network.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { generateDocs } from './gen-docs.mjs';
import { nodeFloor } from './packaging.mjs';
import { requireTs } from './require-ts.mjs';
import { buildSea } from './sea.mjs';

const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const dist = path.join(top, 'dist');
const pkg = JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8'));
const only = process.argv[2]; // 'bundle' skips the executable

fs.mkdirSync(dist, { recursive: true });
// What `install` places, as src/install/shipped.ts lists it.
const { SHIPPED } = await requireTs(path.join(top, 'src/install/shipped.ts'), dist);
const bundle = path.join(dist, 'bundle.cjs');
await esbuild.build({
  entryPoints: [path.join(top, 'src/main.ts')],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  // The node packages run it on the distro's Node.js: syntax that Node
  // lacks fails here rather than at the admin's.
  target: `node${nodeFloor()}`,
  minify: true,
  keepNames: true,
  legalComments: 'none',
  define: {
    __QEMU_MODWATCH_VERSION__: JSON.stringify(pkg.version),
    // What `install` places, inside the one executable.
    __QEMU_MODWATCH_SHIPPED__: JSON.stringify(
      Object.fromEntries(SHIPPED.map((f) => [f, fs.readFileSync(path.join(top, 'hooks', f), 'utf8')])),
    ),
  },
  logLevel: 'warning',
});
const code = fs.readFileSync(bundle, 'utf8');
writeExecutable(path.join(dist, 'qemu-modwatch.cjs'), `#!/usr/bin/env node\n${code}`);
// The man page and bash completion, from the same option table as --help.
await generateDocs(top, dist, pkg.version);
if (only === 'bundle') process.exit(0);

// SEA_CODE_CACHE=snapshot|full|node|none: how the executable gets its compiled code (build/sea.mjs).
const exe = path.join(dist, 'qemu-modwatch');
await buildSea({ top, bundle, exe, codeCache: process.env.SEA_CODE_CACHE || 'snapshot' });
console.log(
  `built ${path.relative(top, exe)} (${(fs.statSync(exe).size / 1e6).toFixed(1)} MB) and ` +
    `${path.relative(top, exe)}.cjs`,
);

function writeExecutable(file, text) {
  fs.writeFileSync(`${file}.tmp`, text, { mode: 0o755 });
  fs.renameSync(`${file}.tmp`, file);
}
