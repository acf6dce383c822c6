// What package-deb.mjs and package-rpm.mjs share: their command line, the
// files the build must have made, the two kinds of package, and failing
// with one line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const top = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/**
 * The packages built from one dist/: 'self-contained' ships the single
 * executable (node inside, tied to the build host's architecture and a
 * glibc as new as its); 'node' ships the bundle, run by the distro's own
 * Node.js, and is architecture-independent. Both are named qemu-modwatch
 * and install the same files at the same paths: they are one program built
 * two ways, so either upgrades or replaces the other (dpkg and rpm change a
 * package's architecture in place), conffiles, enablement and state kept.
 */
export const KINDS = ['self-contained', 'node'];

/**
 * The oldest Node.js the bundle runs on (package.json config.nodeFloor):
 * fs.statfsSync came in 18.15, util.parseArgs' tokens in 18.7; the
 * language level is esbuild's target (build/build.mjs), so syntax newer
 * than this Node fails the build.
 */
export function nodeFloor() {
  const floor = JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8')).config?.nodeFloor;
  if (!/^[0-9]+\.[0-9]+$/.test(floor ?? '')) throw new Error(`package.json config.nodeFloor is ${floor}, not N.N`);
  return floor;
}

/**
 * What the node kind installs as the executable: the bundle with the
 * distro's node as its interpreter. No shell wrapper: no second process,
 * and libvirt's hooks run with a minimal PATH, which an absolute
 * interpreter does not search; Debian and Fedora both put node in /usr/bin.
 */
export function nodeExecutable(bundle) {
  const code = fs.readFileSync(bundle, 'utf8');
  return `#!/usr/bin/node\n${code.startsWith('#!') ? code.slice(code.indexOf('\n') + 1) : code}`;
}

class Refusal extends Error {}

/** A failure the user can mend: one line, no stack. */
export function die(message) {
  throw new Refusal(message);
}

/**
 * Sets up the script called name: failures print as "name: ..." and exit 1.
 * Parses --out DIR, --dist DIR, --kind KIND (default: every kind), --fast
 * and the extra string options given; returns the options (paths made
 * absolute), the kinds to build, the package.json version, and the build's
 * files in dist.
 */
export function startPackaging(name, extraOptions = []) {
  process.on('uncaughtException', (e) => {
    console.error(`${name}: ${e instanceof Refusal ? e.message : e.stack}`);
    process.exit(1);
  });
  const usage =
    `usage: ${name}.mjs [--out DIR] [--dist ` +
    `DIR]${extraOptions.map((o) => ` [--${o} DIR]`).join('')} [--kind ${KINDS.join('|')}] [--fast]`;
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        out: { type: 'string' },
        dist: { type: 'string' },
        fast: { type: 'boolean', default: false },
        kind: { type: 'string' },
        ...Object.fromEntries(extraOptions.map((o) => [o, { type: 'string' }])),
      },
    }));
  } catch (e) {
    die(`${usage} (${e.message})`);
  }
  const dist = path.resolve(values.dist ?? path.join(top, 'dist'));
  if (values.kind !== undefined && !KINDS.includes(values.kind)) die(`${usage} (no kind '${values.kind}')`);
  const kinds = values.kind ? [values.kind] : KINDS;
  const opts = { ...values, dist, out: path.resolve(values.out ?? dist) };
  for (const o of extraOptions) if (opts[o] !== undefined) opts[o] = path.resolve(opts[o]);

  // The man page and completion come from build/gen-docs.mjs.
  const built = {
    exe: path.join(dist, 'qemu-modwatch'),
    man: path.join(dist, 'qemu-modwatch.8'),
    completion: path.join(dist, 'qemu-modwatch.bash-completion'),
    bundle: path.join(dist, 'qemu-modwatch.cjs'),
  };
  // Each kind needs its own executable only.
  const unneeded = { exe: !kinds.includes('self-contained'), bundle: !kinds.includes('node') };
  const what = { exe: 'the executable', bundle: 'the bundle', man: 'the man page', completion: 'the bash completion' };
  for (const [key, file] of Object.entries(built)) {
    if (!unneeded[key] && !fs.existsSync(file))
      die(`${file} is missing (${what[key]}): run 'npm run build' first; the build must generate it`);
  }
  const { version } = JSON.parse(fs.readFileSync(path.join(top, 'package.json'), 'utf8'));
  return { opts, kinds, version, built };
}
