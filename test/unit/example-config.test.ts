import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { DEFAULT_CONFIG, parseConfig } from '../../src/host/config';

// The shipped example must parse, and uncommented it must still parse and
// say exactly the defaults it claims.
const file = path.join(__dirname, '../../hooks/qemu-modwatch.conf');
const text = fs.readFileSync(file, 'utf8');

t.same(parseConfig(text, file), DEFAULT_CONFIG, 'as shipped: all defaults');
const uncommented = text.replace(/^#(\w+ = .*)$/gm, '$1');
const c = parseConfig(uncommented, file);
t.same(
  { ...c, dirs: [], emulators: [], libvirtModdir: null },
  DEFAULT_CONFIG,
  'every documented default is the real default',
);
t.same(c.dirs, ['/opt/qemu/lib/qemu']);
t.same(c.emulators, ['/opt/qemu/bin/qemu-system-x86_64']);
t.equal(c.libvirtModdir, '/usr/lib/x86_64-linux-gnu/qemu');
