// Writes the man page and the bash completion into dist/, generated from
// the option table in src/cli/options.ts (through src/cli/docs.ts), so
// that --help, the man page and the completion cannot drift apart.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { requireTs } from './require-ts.mjs';

export async function generateDocs(top, dist, version) {
  const docs = await requireTs(path.join(top, 'src/cli/docs.ts'), dist, {
    __QEMU_MODWATCH_VERSION__: JSON.stringify(version),
  });
  fs.writeFileSync(path.join(dist, 'qemu-modwatch.8'), docs.manPage(version));
  fs.writeFileSync(path.join(dist, 'qemu-modwatch.bash-completion'), docs.bashCompletion());
}
