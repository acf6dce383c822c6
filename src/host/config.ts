import type { NudgeMode, OnChange } from '../core/plan';
import * as fs from 'node:fs';
import * as ini from 'ini';
import { NotRegularError, openRegular } from '../os/file-info';

export type FailMode = 'open' | 'closed';

export interface Config {
  /** Extra module directories (wrappers that set QEMU_MODULE_DIR, private builds). */
  dirs: string[];
  /** Hash every module's contents, not only those without a build-id. */
  contentHash: boolean;
  /** Extra emulators to fingerprint. */
  emulators: string[];
  onChange: OnChange;
  nudge: NudgeMode;
  fail: FailMode;
  /** The module directory libvirt itself watches (its compiled-in QEMU_MODDIR); null = first default that exists. */
  libvirtModdir: string | null;
}

export const DEFAULT_CONFIG: Config = {
  dirs: [],
  contentHash: false,
  emulators: [],
  onChange: 'invalidate',
  nudge: 'emulator-ctime',
  fail: 'open',
  libvirtModdir: null,
};

export class ConfigError extends Error {}

/** A config file larger than this is not a config file. */
const MAX_CONFIG_BYTES = 1024 * 1024;

type Parse = (file: string, key: string, v: unknown) => unknown;

const list: Parse = (file, key, v) => {
  const items = Array.isArray(v) ? v : [v];
  const out: string[] = [];
  for (const item of items) {
    if (typeof item !== 'string') throw new ConfigError(`${file}: ${key} must be a list of absolute paths`);
    for (const p of item.split(/[\s,]+/).filter(Boolean)) {
      if (!p.startsWith('/')) throw new ConfigError(`${file}: ${key}: '${p}' is not an absolute path`);
      if (/[\0\n]/.test(p)) throw new ConfigError(`${file}: ${key}: path contains a control character`);
      out.push(p.length > 1 ? p.replace(/\/+$/, '') : p);
    }
  }
  return out;
};

const bool: Parse = (file, key, v) => {
  const s = String(v).toLowerCase();
  if (['yes', 'true', 'on', '1'].includes(s)) return true;
  if (['no', 'false', 'off', '0'].includes(s)) return false;
  throw new ConfigError(`${file}: ${key} = ${String(v)}: expected yes or no`);
};

const oneOf =
  (...allowed: string[]): Parse =>
  (file, key, v) => {
    if (typeof v === 'string' && allowed.includes(v)) return v;
    throw new ConfigError(`${file}: ${key} = ${String(v)}: expected one of ${allowed.join(', ')}`);
  };

const absPath: Parse = (file, key, v) => {
  if (typeof v !== 'string' || !v.startsWith('/')) throw new ConfigError(`${file}: ${key} must be an absolute path`);
  return v;
};

/** The whole config schema: section -> key -> (field, parser). README documents the same table. */
const SCHEMA: Record<string, Record<string, [keyof Config, Parse]>> = {
  modules: { dirs: ['dirs', list], content_hash: ['contentHash', bool] },
  emulators: { paths: ['emulators', list] },
  policy: {
    on_change: ['onChange', oneOf('invalidate', 'warn', 'refuse')],
    nudge: ['nudge', oneOf('emulator-ctime', 'moddir-mtime', 'none')],
    fail: ['fail', oneOf('open', 'closed')],
  },
  libvirt: { moddir: ['libvirtModdir', absPath] },
};

export function parseConfig(text: string, file: string): Config {
  const raw = ini.parse(text) as Record<string, unknown>;
  const config: Config = { ...DEFAULT_CONFIG, dirs: [], emulators: [] };
  for (const [section, body] of Object.entries(raw)) {
    // Own properties only: `constructor` or `toString` must not find Object.prototype's.
    const keys = Object.hasOwn(SCHEMA, section) ? SCHEMA[section] : undefined;
    if (!keys || typeof body !== 'object' || body === null) {
      throw new ConfigError(`${file}: unknown ${keys ? 'key' : 'section or key'} '${section}'`);
    }
    for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
      const name = key.replace(/\[\]$/, '');
      const entry = Object.hasOwn(keys, name) ? keys[name] : undefined;
      if (!entry) throw new ConfigError(`${file}: unknown key [${section}] ${name}`);
      const [field, parse] = entry;
      (config as unknown as Record<string, unknown>)[field] = parse(file, `[${section}] ${name}`, value);
    }
  }
  return config;
}

/**
 * Loads the config. A missing file means defaults. As root, a file that
 * anyone but root can change is refused: the hook runs as root before every
 * guest start and must not take orders from it.
 */
export function loadConfig(file: string, uid: number): Config {
  // No config is common (the defaults are complete): answered without an
  // exception, which costs a start time. Any other failure is openRegular's to report.
  let there = true;
  try {
    there = fs.lstatSync(file, { throwIfNoEntry: false }) !== undefined;
  } catch {
    // Reported below.
  }
  if (!there) return { ...DEFAULT_CONFIG };
  let fd: number;
  try {
    fd = openRegular(file).fd;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') return { ...DEFAULT_CONFIG };
    if (e instanceof NotRegularError) throw new ConfigError(`${file}: config is not a regular file`);
    throw new ConfigError(`${file}: cannot read config: ${err.code ?? err.message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.size > MAX_CONFIG_BYTES) throw new ConfigError(`${file}: config is larger than 1 MiB`);
    if (st.mode & 0o002 || (uid === 0 && st.uid !== 0)) {
      throw new ConfigError(
        `${file}: refusing a config that others can change (owner uid ${st.uid}, mode ` +
          `${(st.mode & 0o7777).toString(8).padStart(4, '0')})`,
      );
    }
    if (uid === 0 && st.mode & 0o020 && st.gid !== 0) {
      throw new ConfigError(`${file}: refusing a config that group ${st.gid} can change`);
    }
    const buf = Buffer.alloc(st.size);
    const n = fs.readSync(fd, buf, 0, st.size, 0);
    return parseConfig(buf.subarray(0, n).toString('utf8'), file);
  } finally {
    fs.closeSync(fd);
  }
}
