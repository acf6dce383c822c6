// Writes the man page and the bash completion into dist/, generated from
// the option table in src/cli/options.ts (through src/cli/docs.ts), so
// that --help, the man page and the completion cannot drift apart.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as esbuild from 'esbuild';

export async function generateDocs(top, dist, version) {
  const tmp = path.join(dist, `.docs-${process.pid}.cjs`);
  await esbuild.build({
    entryPoints: [path.join(top, 'src/cli/docs.ts')],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    define: { __QEMU_MODWATCH_VERSION__: JSON.stringify(version) },
    logLevel: 'warning',
  });
  try {
    const docs = createRequire(import.meta.url)(tmp);
    fs.writeFileSync(path.join(dist, 'qemu-modwatch.8'), docs.manPage(version));
    fs.writeFileSync(path.join(dist, 'qemu-modwatch.bash-completion'), docs.bashCompletion());
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
