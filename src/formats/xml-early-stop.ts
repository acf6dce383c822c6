// What the domain-XML and cache-header readers share: saxes set up for
// untrusted input (a DOCTYPE is refused before anything it declares could
// be used; saxes expands only the five predefined entities and character
// references), and stopping as soon as a reader knows enough, so that the
// rest of a document (a few hundred kilobytes of capabilities) is never
// parsed.

import { SaxesParser } from 'saxes';

/** Makes a piece of untrusted text safe to put in a one-line message. */
export function preview(text: string, max = 64): string {
  const flat = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ');
  const chars = Array.from(flat);
  return chars.length > max ? `${chars.slice(0, max).join('')}...` : flat;
}

/** saxes' "3:12: unclosed tag: x" taken apart; null for any other error. */
export function saxesErrorParts(err: unknown): { line: string; column: string; message: string } | null {
  const raw = err instanceof Error ? err.message : String(err);
  const m = /^(\d+):(\d+): ([\s\S]*)$/.exec(raw);
  return m ? { line: m[1]!, column: m[2]!, message: m[3] ?? '' } : null;
}

/** Thrown from inside saxes' callbacks to stop it. */
const STOP: unique symbol = Symbol('stop');

export interface EarlyStopOptions {
  /** The error for a document with a DOCTYPE. */
  doctype: () => Error;
  /** The reader's own errors, passed through as they are. */
  ownError: abstract new (...args: never[]) => Error;
  /** Turns an error of saxes into the reader's own. */
  fromSaxes: (err: unknown) => Error;
}

export abstract class EarlyStopReader {
  protected readonly parser = new SaxesParser({ xmlns: false, position: true });
  private done = false;
  /** Parser position where stopping was decided, until that is confirmed. */
  private pendingAt: number | null = null;

  constructor(private readonly opts: EarlyStopOptions) {
    const p = this.parser;
    p.on('doctype', () => {
      throw opts.doctype();
    });
    p.on('opentagstart', (tag) => {
      this.confirmStop();
      this.open(tag.name);
    });
    p.on('closetag', () => {
      this.confirmStop();
      this.close();
    });
    p.on('text', (text) => {
      this.confirmStop();
      this.addText(text);
    });
    p.on('cdata', (text) => {
      this.confirmStop();
      this.addText(text);
    });
    p.on('comment', () => this.confirmStop());
    p.on('processinginstruction', () => this.confirmStop());
  }

  protected abstract open(name: string): void;
  protected abstract close(): void;
  protected abstract addText(text: string): void;

  /** Stops at once: nothing after this point is of interest. */
  protected stopNow(): never {
    throw STOP;
  }

  /**
   * Stops after the close tag being handled. saxes calls the close-tag
   * handler before it checks that the close tag's name matches the open
   * element, so the decision only holds once saxes has moved past that
   * close tag without complaint.
   */
  protected stopAfterThisTag(): void {
    this.pendingAt = this.parser.position;
  }

  private confirmStop(): void {
    if (this.pendingAt !== null) throw STOP;
  }

  /** Feeds text to saxes (null: end of input); true once nothing more is needed. */
  write(text: string | null): boolean {
    if (this.done || this.pendingAt !== null) return (this.done = true);
    try {
      if (text === null) {
        this.parser.close();
      } else if (text.length > 0) {
        this.parser.write(text);
      }
    } catch (err) {
      if (err === STOP) return (this.done = true);
      if (err instanceof this.opts.ownError) throw err;
      // An error reported further on than the close tag is not about it.
      if (this.pendingAt !== null && this.parser.position !== this.pendingAt) {
        return (this.done = true);
      }
      throw this.opts.fromSaxes(err);
    }
    return (this.done = this.pendingAt !== null);
  }
}
