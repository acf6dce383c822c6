// What package-deb.mjs and package-rpm.mjs share: their command line, the
// files the build must have made, and failing with one line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

class Refusal extends Error {}

/** A failure the user can mend: one line, no stack. */
export function die(message) {
  throw new Refusal(message);
}

/**
 * Sets up the script called name: failures print as "name: ..." and exit 1.
 * Parses --out DIR, --dist DIR, --fast and the extra string options given;
 * returns the options (paths made absolute), the package.json version, and
 * the build's files in dist.
 */
export function startPackaging(name, extraOptions = []) {
  process.on('uncaughtException', (e) => {
    console.error(`${name}: ${e instanceof Refusal ? e.message : e.stack}`);
    process.exit(1);
  });
  const usage =
    `usage: ${name}.mjs [--out DIR] [--dist ` + `DIR]${extraOptions.map((o) => ` [--${o} DIR]`).join('')} [--fast]`;
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        out: { type: 'string' },
        dist: { type: 'string' },
        fast: { type: 'boolean', default: false },
        ...Object.fromEntries(extraOptions.map((o) => [o, { type: 'string' }])),
      },
    }));
  } catch (e) {
    die(`${usage} (${e.message})`);
  }
  const dist = path.resolve(values.dist ?? path.join(top, 'dist'));
  const opts = { ...values, dist, out: path.resolve(values.out ?? dist) };
  for (const o of extraOptions) if (opts[o] !== undefined) opts[o] = path.resolve(opts[o]);

  // The man page and completion come from build/gen-docs.mjs.
  const built = {
    exe: path.join(dist, 'qemu-modwatch'),
    man: path.join(dist, 'qemu-modwatch.8'),
    completion: path.join(dist, 'qemu-modwatch.bash-completion'),
  };
  const what = { exe: 'the executable', man: 'the man page', completion: 'the bash completion' };
  for (const [key, file] of Object.entries(built)) {
    if (!fs.existsSync(file))
      die(`${file} is missing (${what[key]}): run 'npm run build' first; the build must generate it`);
  }
  const { version } = JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8'));
  return { opts, version, built };
}
