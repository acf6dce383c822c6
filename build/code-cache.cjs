'use strict';
// node code-cache.cjs BUNDLE OUT: writes the V8 code cache of the bundle
// with every function compiled (sea-entry.cjs says why). Run by the build in
// a fresh node with no V8 options, as the executable runs: V8 accepts a
// cache only from the same V8 with the same flags. --no-lazy is set for the
// compile alone and then undone, so the cache carries the default flags.
const fs = require('node:fs');
const v8 = require('node:v8');
const { compileBundle } = require('./sea-entry.cjs');

const [bundle, out] = process.argv.slice(2);
const code = fs.readFileSync(bundle, 'utf8');
v8.setFlagsFromString('--no-lazy');
const script = compileBundle(code, undefined);
v8.setFlagsFromString('--lazy');
fs.writeFileSync(out, script.createCachedData());
