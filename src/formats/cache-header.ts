// Reads the header of one of libvirt's QEMU capabilities cache files
// (<cache dir>/qemu/capabilities/<sha256 of the emulator path>.xml).
//
// libvirt writes the file as
//
//   <qemuCaps>
//     <emulator>/usr/bin/qemu-system-x86_64</emulator>
//     <qemuctime>1716638400</qemuctime>
//     <qemumoddirmtime>1716638401</qemumoddirmtime>   (only when known)
//     <selfctime>1716638402</selfctime>
//     <selfvers>9000000</selfvers>
//     <usedQMP/>
//     <flag name='kvm'/>
//     ... a few hundred kilobytes more ...
//   </qemuCaps>
//
// Only the header (the elements before the first other child of <qemuCaps>)
// is of interest, so the parser stops there and never reads the rest of the
// file. Nothing in the file is trusted: a DOCTYPE is rejected before any
// entity could be declared, and saxes never expands anything but the five
// predefined entities and character references.

import * as fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { EarlyStopReader, preview, saxesErrorParts } from './xml-early-stop';

export interface CacheHeader {
  /** Path of the emulator binary the cache file describes. */
  emulator: string;
  /** ctime (seconds) of the emulator binary when libvirt probed it. */
  qemuctime: number | null;
  /** mtime (seconds) of QEMU's module directory; null when absent. */
  qemumoddirmtime: number | null;
  /** libvirt version number (major * 1000000 + minor * 1000 + micro). */
  selfvers: number | null;
}

/** The cache file is not one whose header can be trusted. One-line message. */
export class CacheHeaderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CacheHeaderError';
  }
}

/** At most this many bytes are ever read while looking for the header. */
export const CACHE_HEADER_READ_LIMIT = 1024 * 1024;

/** Size of one read(2) of the cache file. */
const READ_CHUNK = 16 * 1024;

// selfctime is never used, but a header where it is not a number is not one libvirt wrote: it is checked too.
const HEADER_FIELDS = ['emulator', 'qemuctime', 'qemumoddirmtime', 'selfctime', 'selfvers'] as const;
type HeaderField = (typeof HEADER_FIELDS)[number];
type NumericField = Exclude<HeaderField, 'emulator'>;

function isHeaderField(name: string): name is HeaderField {
  return (HEADER_FIELDS as readonly string[]).includes(name);
}

/** Turns an error thrown by saxes ("3:12: unclosed tag: x") into ours. */
function fromSaxesError(err: unknown): CacheHeaderError {
  const parts = saxesErrorParts(err);
  if (parts === null) {
    return new CacheHeaderError(`malformed XML: ${preview(err instanceof Error ? err.message : String(err), 200)}`);
  }
  return new CacheHeaderError(`malformed XML at line ${parts.line}: ${preview(parts.message, 200)}`);
}

const XML_INTEGER = /^[ \t\r\n]*([0-9]+)[ \t\r\n]*$/;

function parseSeconds(field: NumericField, text: string): number {
  const m = XML_INTEGER.exec(text);
  if (m === null) {
    throw new CacheHeaderError(`<${field}> is not a non-negative integer: "${preview(text, 32)}"`);
  }
  const value = Number(m[1]);
  if (!Number.isSafeInteger(value)) {
    throw new CacheHeaderError(`<${field}> is too large: ${preview(m[1] ?? '', 32)}`);
  }
  return value;
}

/** Streaming state of one header parse. */
class HeaderReader extends EarlyStopReader {
  /** 0: before the root, 1: inside <qemuCaps>, 2: inside a header element. */
  private depth = 0;
  private field: HeaderField | null = null;
  private text = '';
  private readonly header: Partial<Record<HeaderField, string | number>> = {};

  constructor() {
    super({
      doctype: () =>
        new CacheHeaderError('capabilities cache has a DOCTYPE (libvirt never writes one); entities are not expanded'),
      ownError: CacheHeaderError,
      fromSaxes: fromSaxesError,
    });
  }

  protected open(name: string): void {
    switch (this.depth) {
      case 0:
        if (name !== 'qemuCaps') {
          throw new CacheHeaderError(`root element is <${preview(name)}>, expected <qemuCaps>`);
        }
        this.depth = 1;
        return;
      case 1:
        if (!isHeaderField(name)) {
          // The first element that is not part of the header ends it.
          this.stopNow();
        }
        if (this.header[name] !== undefined) {
          throw new CacheHeaderError(`<${name}> appears twice in the header`);
        }
        this.field = name;
        this.text = '';
        this.depth = 2;
        return;
      default:
        throw new CacheHeaderError(`<${this.field ?? '?'}> must contain only text, found <${preview(name)}>`);
    }
  }

  protected close(): void {
    if (this.depth === 2 && this.field !== null) {
      const field = this.field;
      if (field === 'emulator') {
        if (this.text.length === 0) {
          throw new CacheHeaderError('<emulator> is empty');
        }
        this.header.emulator = this.text;
      } else {
        this.header[field] = parseSeconds(field, this.text);
      }
      this.field = null;
      this.text = '';
      this.depth = 1;
      return;
    }
    // </qemuCaps>: a cache file with nothing after its header.
    this.stopAfterThisTag();
  }

  protected addText(text: string): void {
    if (this.depth === 2) this.text += text;
  }

  result(): CacheHeader {
    const h = this.header;
    if (typeof h.emulator !== 'string') {
      throw new CacheHeaderError('no <emulator> in header');
    }
    const num = (f: NumericField): number | null => {
      const v = h[f];
      return typeof v === 'number' ? v : null;
    };
    return {
      emulator: h.emulator,
      qemuctime: num('qemuctime'),
      qemumoddirmtime: num('qemumoddirmtime'),
      selfvers: num('selfvers'),
    };
  }
}

/**
 * Parses the header of a capabilities cache file given as consecutive pieces
 * of its content (Buffers are UTF-8; a multi-byte character may be split
 * between two of them). Stops pulling pieces as soon as the header is
 * complete, and never looks at more than CACHE_HEADER_READ_LIMIT bytes.
 * Throws CacheHeaderError, and nothing else, for any content.
 */
export function parseCacheHeader(chunks: Iterable<string | Buffer>): CacheHeader {
  const reader = new HeaderReader();
  const decoder = new StringDecoder('utf8');
  let consumed = 0;
  for (const chunk of chunks) {
    const remaining = CACHE_HEADER_READ_LIMIT - consumed;
    let text: string;
    if (typeof chunk === 'string') {
      // Finish any character a previous Buffer left incomplete.
      if (reader.write(decoder.end())) return reader.result();
      const size = Buffer.byteLength(chunk, 'utf8');
      if (size <= remaining) {
        text = chunk;
        consumed += size;
      } else {
        text = decoder.write(Buffer.from(chunk, 'utf8').subarray(0, remaining));
        consumed = CACHE_HEADER_READ_LIMIT;
      }
    } else {
      const part = chunk.length <= remaining ? chunk : chunk.subarray(0, remaining);
      consumed += part.length;
      text = decoder.write(part);
    }
    if (reader.write(text)) return reader.result();
    if (consumed >= CACHE_HEADER_READ_LIMIT) {
      throw new CacheHeaderError(`no end of header in the first ${CACHE_HEADER_READ_LIMIT / (1024 * 1024)} MiB`);
    }
  }
  if (consumed === 0) {
    throw new CacheHeaderError('capabilities cache is empty');
  }
  if (reader.write(decoder.end())) return reader.result();
  if (reader.write(null)) return reader.result();
  // saxes accepted the end of input, which only a closed root allows, and
  // closing the root always ends the header; kept for safety.
  throw new CacheHeaderError('capabilities cache ends inside the header');
}

/** Reads consecutive pieces of the file at fd, from offset 0, up to limit. */
function* readChunks(fd: number, limit: number): Generator<Buffer> {
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  let position = 0;
  while (position < limit) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.length, limit - position), position);
    if (n === 0) return;
    position += n;
    // The consumer decodes each piece before asking for the next one, so
    // the buffer can be reused.
    yield buf.subarray(0, n);
  }
}

/**
 * Reads the header of the capabilities cache file open at fd (fileSize as
 * given by fstat), synchronously, in 16 KiB reads from offset 0, stopping as
 * soon as the header is complete and never reading past
 * min(fileSize, CACHE_HEADER_READ_LIMIT). Content problems throw
 * CacheHeaderError; read(2) failures propagate as Node's errors.
 */
export function readCacheHeader(fd: number, fileSize: number): CacheHeader {
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw new RangeError(`invalid file size: ${String(fileSize)}`);
  }
  return parseCacheHeader(readChunks(fd, Math.min(fileSize, CACHE_HEADER_READ_LIMIT)));
}
