// Makes the single executable: node writes a blob from an entry script and
// its assets, postject puts it into a stripped copy of the running node.
// Everything comes from node_modules and the local node binary: no network.
//
// codeCache says how V8 gets the compiled program at start-up:
// - 'snapshot' (the default): a V8 startup snapshot (useSnapshot): the
//   bundle is loaded at build time, in Node's snapshot builder, and the
//   executable starts from the heap it left, with the program's start as
//   the snapshot's main function (snapshotEntry below); no code cache;
// - 'full': the entry, build/sea-entry.cjs, runs the bundle
//   with a code cache of every function, made by build/code-cache.cjs;
// - 'node': the bundle is the entry, with Node's own SEA code cache, which
//   holds the top level only (what a Node without SEA assets gets);
// - 'none': no code cache.
// BENCHMARKS.md has the four measured side by side (npm run bench -- --code-cache).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const CODE_CACHES = ['snapshot', 'full', 'node', 'none'];

/** Whether this node can carry assets in a single executable (Node 20.12 and later). */
export async function hasSeaAssets() {
  return typeof (await import('node:sea')).getRawAsset === 'function';
}

export async function buildSea({ top, bundle, exe, codeCache = 'snapshot' }) {
  if (!CODE_CACHES.includes(codeCache))
    throw new Error(`unknown code cache '${codeCache}' (${CODE_CACHES.join(', ')})`);
  const mode = codeCache === 'full' && !(await hasSeaAssets()) ? 'node' : codeCache;
  const work = fs.mkdtempSync(`${exe}.build-`);
  try {
    const blob = path.join(work, 'sea-prep.blob');
    const config = path.join(work, 'sea-config.json');
    const cache = path.join(work, 'code-cache.bin');
    const entry = path.join(work, 'snapshot-entry.cjs');
    if (mode === 'snapshot') fs.writeFileSync(entry, snapshotEntry(fs.readFileSync(bundle, 'utf8')));
    if (mode === 'full') {
      // V8 accepts a cache only from a process with the executable's V8 flags: none from NODE_OPTIONS.
      const { NODE_OPTIONS: _, ...env } = process.env;
      execFileSync(process.execPath, [path.join(top, 'build/code-cache.cjs'), bundle, cache], {
        env,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
    }
    fs.writeFileSync(
      config,
      JSON.stringify({
        main: mode === 'full' ? path.join(top, 'build/sea-entry.cjs') : mode === 'snapshot' ? entry : bundle,
        output: blob,
        disableExperimentalSEAWarning: true,
        // Node takes one or the other: a snapshot holds the compiled code it ran.
        useCodeCache: mode === 'full' || mode === 'node',
        useSnapshot: mode === 'snapshot',
        ...(mode === 'full' ? { assets: { bundle, 'code-cache': cache } } : {}),
      }),
    );
    // It says what it wrote on stderr; only a failure is news.
    const prep = spawnSync(process.execPath, ['--experimental-sea-config', config], { encoding: 'utf8' });
    if (prep.status !== 0) {
      process.stderr.write(prep.stdout + prep.stderr);
      throw new Error(`writing the SEA blob failed (exit ${prep.status})`);
    }

    const tmp = path.join(work, 'qemu-modwatch');
    fs.copyFileSync(process.execPath, tmp);
    fs.chmodSync(tmp, 0o755);
    try {
      // Drops ~10 MB of symbols the program never needs. strip complains
      // about node's many build notes; the result is fine.
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
    return mode;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The snapshot builder's entry: one script, with a require of built-in
 * modules only (all the bundle needs). It loads the bundle, which only
 * defines; src/main.ts hands its start to the global set here, and Node
 * runs it after deserialising the snapshot, in the run with the real argv
 * and environment. The file name is the one sea-entry.cjs gives the bundle:
 * no build path goes into the snapshot.
 */
function snapshotEntry(code) {
  return `'use strict';
globalThis.qemuModwatchDeferStart = (run) => {
  delete globalThis.qemuModwatchDeferStart;
  require('node:v8').startupSnapshot.setDeserializeMainFunction(() => {
    // For the build's own test, as sea-entry.cjs says whether V8 took its cache.
    if (process.env.QEMU_MODWATCH_DEBUG === 'code-cache') process.stderr.write('startup snapshot\\n');
    run();
  });
};
(function (exports, require, module, __filename, __dirname) {${code}
})({}, require, { exports: {} }, 'qemu-modwatch.cjs', '.');
`;
}
