// Reads the domain XML that libvirt writes to a hook script's stdin and
// picks out the domain's name, UUID and emulator binary.
//
// Normally the root element is <domain>. When it is something else (for
// instance <domstatus> or <domainsnapshot>, which wrap a domain), the first
// <domain> element anywhere in the document is used. Only its direct
// <name> and <uuid> children and its <devices><emulator> are read.
//
// The input is untrusted: a DOCTYPE is rejected before anything it declares
// could be used, no entity other than the five predefined ones and character
// references is ever accepted, nothing is expanded, and error messages are
// one line and quote at most a few dozen characters of the input.

import * as fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { EarlyStopReader, preview, saxesErrorParts } from './xml-early-stop';

export interface DomainInfo {
  /** Text of the domain's <name>, exactly as written; null when absent. */
  name: string | null;
  /** Text of the domain's <uuid>, whitespace trimmed; null when absent or empty. */
  uuid: string | null;
  /** Text of <devices><emulator>, whitespace trimmed; null when absent or empty. */
  emulator: string | null;
}

/** The domain XML could not be read or is not acceptable. One-line message. */
export class DomainXmlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DomainXmlError';
  }
}

/** Largest domain XML accepted on stdin, in bytes. */
export const DOMAIN_XML_LIMIT = 16 * 1024 * 1024;

/** Size of one read(2) of stdin. */
const READ_CHUNK = 64 * 1024;
/** Size of one piece handed to saxes (bytes of a Buffer, or UTF-16 units). */
const PARSE_CHUNK = 64 * 1024;
/** How long to wait before reading a non-blocking stdin again after EAGAIN. */
const EAGAIN_SLEEP_MS = 10;

/** Turns an error thrown by saxes ("3:12: unclosed tag: x") into ours. */
function fromSaxesError(err: unknown): DomainXmlError {
  const parts = saxesErrorParts(err);
  if (parts === null) {
    return new DomainXmlError(
      `malformed domain XML: ${preview(err instanceof Error ? err.message : String(err), 200)}`,
    );
  }
  const { line, column, message } = parts;
  if (message === 'undefined entity.') {
    return new DomainXmlError(
      `domain XML uses an undefined entity at line ${line}, column ${column}; entities are not expanded`,
    );
  }
  return new DomainXmlError(`malformed domain XML at line ${line}, column ${column}: ${preview(message, 200)}`);
}

/** Strips XML whitespace (not every Unicode space) from both ends. */
function trimXml(text: string): string {
  return text.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
}

function isXmlWhitespaceOnly(xml: Buffer | string): boolean {
  if (typeof xml === 'string') return /^[ \t\r\n]*$/.test(xml);
  for (const byte of xml) {
    if (byte !== 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) return false;
  }
  return true;
}

type Field = 'name' | 'uuid' | 'emulator';

class DomainReader extends EarlyStopReader {
  /** Number of elements currently open. */
  private depth = 0;
  /** Depth of the <domain> element used, once it has been opened. */
  private domainDepth: number | null = null;
  /** Depth of the domain's first <devices> while it is open. */
  private devicesDepth: number | null = null;
  private devicesSeen = false;
  /** The field whose element is open, and that element's depth. */
  private field: Field | null = null;
  private fieldDepth = 0;
  private text = '';
  readonly info: DomainInfo = { name: null, uuid: null, emulator: null };
  private readonly seen = new Set<Field>();

  constructor() {
    super({
      doctype: () => new DomainXmlError('domain XML has a DOCTYPE; entities are not expanded'),
      ownError: DomainXmlError,
      fromSaxes: fromSaxesError,
    });
  }

  get foundDomain(): boolean {
    return this.domainDepth !== null;
  }

  protected open(name: string): void {
    this.depth += 1;
    const d = this.depth;
    if (this.domainDepth === null) {
      if (name === 'domain') this.domainDepth = d;
      return;
    }
    if (d === this.domainDepth + 1) {
      if ((name === 'name' || name === 'uuid') && !this.seen.has(name)) {
        this.startField(name);
      } else if (name === 'devices' && !this.devicesSeen) {
        this.devicesSeen = true;
        this.devicesDepth = d;
      }
    } else if (
      this.devicesDepth !== null &&
      d === this.devicesDepth + 1 &&
      name === 'emulator' &&
      !this.seen.has('emulator')
    ) {
      this.startField('emulator');
    }
  }

  private startField(field: Field): void {
    this.seen.add(field);
    this.field = field;
    this.fieldDepth = this.depth;
    this.text = '';
  }

  protected close(): void {
    const d = this.depth;
    this.depth -= 1;
    if (this.field !== null && d === this.fieldDepth) {
      const value = this.field === 'name' ? this.text : trimXml(this.text);
      if (this.field === 'name' || value.length > 0) this.info[this.field] = value;
      this.field = null;
      this.text = '';
      if (this.seen.size === 3) this.stopAfterThisTag();
    } else if (d === this.devicesDepth) {
      this.devicesDepth = null;
    } else if (d === this.domainDepth) {
      this.stopAfterThisTag();
    }
  }

  protected addText(text: string): void {
    // Only text directly inside the field's element, not in its children.
    if (this.field !== null && this.depth === this.fieldDepth) this.text += text;
  }
}

/**
 * Extracts name, UUID and emulator from a domain XML document (a Buffer is
 * decoded as UTF-8). Throws DomainXmlError, and nothing else, for any input.
 */
export function parseDomainXml(xml: Buffer | string): DomainInfo {
  if (typeof xml !== 'string' && !Buffer.isBuffer(xml)) {
    throw new DomainXmlError('domain XML must be a string or a Buffer');
  }
  const size = typeof xml === 'string' ? Buffer.byteLength(xml, 'utf8') : xml.length;
  if (size > DOMAIN_XML_LIMIT) {
    throw new DomainXmlError('domain XML is larger than 16 MiB');
  }
  if (isXmlWhitespaceOnly(xml)) {
    throw new DomainXmlError('no domain XML on stdin');
  }
  const reader = new DomainReader();
  let finished = false;
  if (typeof xml === 'string') {
    for (let i = 0; i < xml.length && !finished; i += PARSE_CHUNK) {
      // saxes keeps a high surrogate cut off at the end of a piece for the next.
      finished = reader.write(xml.slice(i, i + PARSE_CHUNK));
    }
  } else {
    const decoder = new StringDecoder('utf8');
    for (let i = 0; i < xml.length && !finished; i += PARSE_CHUNK) {
      finished = reader.write(decoder.write(xml.subarray(i, i + PARSE_CHUNK)));
    }
    if (!finished) finished = reader.write(decoder.end());
  }
  if (!finished) reader.write(null);
  if (!reader.foundDomain) {
    throw new DomainXmlError('no <domain> element in domain XML');
  }
  return { ...reader.info };
}

let sleepCell: Int32Array | undefined;

function sleepSync(ms: number): void {
  sleepCell ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.wait(sleepCell, 0, 0, ms);
}

/**
 * Reads the domain XML from fd (stdin is 0) synchronously until end of
 * input, accepting at most DOMAIN_XML_LIMIT bytes, and parses it. A
 * non-blocking fd that has no data yet (EAGAIN) is waited for; a closed fd
 * (EBADF) is treated as end of input. Every failure is a DomainXmlError.
 */
export function readDomainXml(fd: number): DomainInfo {
  const pieces: Buffer[] = [];
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  let total = 0;
  for (;;) {
    // Never ask for more than one byte past the limit.
    const want = Math.min(buf.length, DOMAIN_XML_LIMIT + 1 - total);
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, want, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException | null)?.code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
        sleepSync(EAGAIN_SLEEP_MS);
        continue;
      }
      if (code === 'EINTR') continue;
      if (code === 'EOF' || code === 'EBADF') break;
      const why = typeof code === 'string' ? code : preview(String(err), 120);
      throw new DomainXmlError(`cannot read domain XML from stdin: ${why}`);
    }
    if (n === 0) break;
    total += n;
    if (total > DOMAIN_XML_LIMIT) {
      throw new DomainXmlError('domain XML on stdin is larger than 16 MiB');
    }
    pieces.push(Buffer.from(buf.subarray(0, n)));
  }
  if (total === 0) {
    throw new DomainXmlError('no domain XML on stdin');
  }
  return parseDomainXml(Buffer.concat(pieces, total));
}
