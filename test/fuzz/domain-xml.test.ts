import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { DomainXmlError, parseDomainXml, readDomainXml, type DomainInfo } from '../../src/formats/domain-xml';
import { DOMAIN_TOKENS, DOMAIN_XMLS } from './corpus';
import { b64, byteMutation, fuzz, mutate, unb64 } from './harness';

// parseDomainXml and readDomainXml on mutated real domain XML: anyone who
// may define a domain controls every byte of it, and the hook reads it as
// root before the guest starts.

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmw-fuzz-xml-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'stdin.xml');
const BASES = DOMAIN_XMLS.map((x) => Buffer.from(x));

type Outcome = DomainInfo | 'error';

function outcome(f: () => DomainInfo): Outcome {
  try {
    const r = f();
    for (const k of ['name', 'uuid', 'emulator'] as const) {
      if (r[k] !== null && typeof r[k] !== 'string') throw new Error(`${k} is ${typeof r[k]}`);
    }
    for (const k of ['uuid', 'emulator'] as const) {
      if (r[k] !== null && (r[k] === '' || /^[ \t\r\n]|[ \t\r\n]$/.test(r[k]!)))
        throw new Error(`${k} not trimmed: ${JSON.stringify(r[k])}`);
    }
    return r;
  } catch (e) {
    if (!(e instanceof DomainXmlError)) throw e;
    if (/[\r\n]/.test(e.message) || e.message.length > 300)
      throw new Error(`not a one-line message: ${JSON.stringify(e.message)}`);
    return 'error';
  }
}

function check(bytes: Buffer): void {
  const fromBuffer = outcome(() => parseDomainXml(bytes));
  // What the hook does: read stdin (here a file), then parse.
  fs.writeFileSync(file, bytes);
  const fd = fs.openSync(file, 'r');
  let fromFd: Outcome;
  try {
    fromFd = bytes.length === 0 ? 'error' : outcome(() => readDomainXml(fd));
  } finally {
    fs.closeSync(fd);
  }
  if (JSON.stringify(fromBuffer) !== JSON.stringify(fromFd))
    throw new Error(`stdin and Buffer disagree: ${JSON.stringify([fromBuffer, fromFd])}`);
  // Valid UTF-8 must mean the same as a string; invalid UTF-8 is decoded with replacement either way.
  const fromString = outcome(() => parseDomainXml(bytes.toString('utf8')));
  if (JSON.stringify(fromBuffer) !== JSON.stringify(fromString))
    throw new Error(`string and Buffer disagree: ${JSON.stringify([fromBuffer, fromString])}`);
}

const input = fc
  .tuple(fc.nat({ max: BASES.length - 1 }), fc.array(byteMutation, { minLength: 1, maxLength: 6 }))
  .map(([base, mutations]) => mutate(BASES[base]!, mutations, DOMAIN_TOKENS));

t.test('domain XML: mutated real documents', async (t) => {
  await fuzz(t, {
    name: 'domain-xml',
    arbitrary: input,
    check,
    encode: (v) => ({ input: b64(v) }),
    decode: (r) => unb64(r.input),
    ciRuns: 1500,
  });
});
