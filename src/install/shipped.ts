import * as fs from 'node:fs';
import * as path from 'node:path';

// The files from hooks/ that `install` places. The build embeds them in the
// bundle (one self-contained executable); run from the sources, they are
// read from the repository.

declare const __QEMU_MODWATCH_SHIPPED__: Record<string, string> | undefined;

export const SHIPPED = ['qemu.d/50-qemu-modwatch', 'daemon.d/50-qemu-modwatch', 'qemu-modwatch.conf'] as const;
export type ShippedName = (typeof SHIPPED)[number];

export function shippedFile(name: ShippedName): string {
  if (typeof __QEMU_MODWATCH_SHIPPED__ === 'object') {
    const text = __QEMU_MODWATCH_SHIPPED__[name];
    if (text !== undefined) return text;
  }
  return fs.readFileSync(path.join(__dirname, '../../hooks', name), 'utf8');
}

/** A dispatcher with its settings lines set for where the executable is. */
export function dispatcher(driver: 'qemu' | 'daemon', executable: string): string {
  return shippedFile(`${driver}.d/50-qemu-modwatch`).replace(
    /^QEMU_MODWATCH=.*$/m,
    `QEMU_MODWATCH=${shellWord(executable)}`,
  );
}

/** Quotes a path for a POSIX shell script. */
export function shellWord(s: string): string {
  return /^[A-Za-z0-9_./+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
