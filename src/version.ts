// esbuild replaces this identifier with package.json's version; tests run the
// sources directly and read it from package.json instead.
declare const __QEMU_MODWATCH_VERSION__: string | undefined;

export const VERSION: string =
  typeof __QEMU_MODWATCH_VERSION__ === 'string'
    ? __QEMU_MODWATCH_VERSION__
    : (require('../package.json') as { version: string }).version;
