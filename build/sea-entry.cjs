'use strict';
// The single executable's entry point. It runs the bundle (an asset of the
// executable) with a V8 code cache that the build made with every function
// compiled. Node's own SEA code cache holds only what V8 compiles before
// running, the top level; each function the program then calls is compiled
// on its first call, which cost a hook run more than its real work
// (BENCHMARKS.md). A cache V8 rejects (another Node, other V8 flags) only
// makes the start slower: V8 then compiles as usual.
const vm = require('node:vm');

const FILENAME = 'qemu-modwatch.cjs';

/** The bundle as a CommonJS module function; the same text at build and at run time, or V8 rejects the cache. */
function compileBundle(code, cachedData) {
  return new vm.Script(`(function (exports, require, module, __filename, __dirname) {${code}\n})`, {
    filename: FILENAME,
    cachedData,
  });
}

module.exports = { compileBundle };

const sea = require('node:sea');
if (sea.isSea()) {
  const script = compileBundle(sea.getAsset('bundle', 'utf8'), new Uint8Array(sea.getRawAsset('code-cache')));
  // For the build's own test: a rejected cache is otherwise invisible.
  if (process.env.QEMU_MODWATCH_DEBUG === 'code-cache')
    process.stderr.write(`code cache ${script.cachedDataRejected ? 'rejected' : 'accepted'}\n`);
  script.runInThisContext()(exports, require, module, __filename, __dirname);
}
