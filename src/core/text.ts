/**
 * Makes a name safe for a log line or a terminal: domain and file names are
 * chosen by others and may carry newlines or escape sequences.
 */
export function escapeControl(s: string): string {
  // Line and paragraph separators and bidirectional overrides too: they
  // make a log viewer show a line other than the one written.
  return s.replace(/[\x00-\x1f\x7f-\x9f\\\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g, (c) => {
    if (c === '\\') return '\\\\';
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
