/**
 * Where each JSON pointer's value sits in a JSON text, so a problem reported as
 * `/nodes/2/kind` can be highlighted in the playground's editor, and where a syntax error
 * is, for the editor and `skein validate` (engines' JSON.parse messages do not always
 * carry a position). A small strict scanner;
 * positions are UTF-16 offsets, as textarea selections use.
 *
 * @example
 * locatePointers('{"a": [1, 2]}').get('/a/1'); // { start: 10, end: 11 }
 */
export interface Span {
  start: number;
  end: number;
}

const escapeToken = (t: string) => t.replace(/~/g, '~0').replace(/\//g, '~1');
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;

class ScanError extends Error {
  constructor(readonly offset: number) {
    super(`JSON syntax error at ${offset}`);
  }
}

export interface ScanResult {
  spans: Map<string, Span>;
  /** Offset of the first syntax error, or null when the text is valid JSON. */
  errorAt: number | null;
}

export function scanJson(text: string): ScanResult {
  const spans = new Map<string, Span>();
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i]!)) i++;
  };
  const expect = (ch: string) => {
    ws();
    if (text[i] !== ch) throw new ScanError(i);
    i++;
  };
  const match = (re: RegExp): string => {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m) throw new ScanError(i);
    i += m[0].length;
    return m[0];
  };
  const value = (pointer: string): void => {
    ws();
    const start = i;
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') i++;
      else
        for (;;) {
          ws();
          const keyStart = i;
          const raw = match(STRING);
          const child = `${pointer}/${escapeToken(JSON.parse(raw) as string)}`;
          spans.set(`${child}#key`, { start: keyStart, end: i });
          expect(':');
          value(child);
          ws();
          if (text[i] === ',') i++;
          else if (text[i] === '}') {
            i++;
            break;
          } else throw new ScanError(i);
        }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') i++;
      else
        for (let k = 0; ; k++) {
          value(`${pointer}/${k}`);
          ws();
          if (text[i] === ',') i++;
          else if (text[i] === ']') {
            i++;
            break;
          } else throw new ScanError(i);
        }
    } else if (c === '"') match(STRING);
    else if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) match(NUMBER);
    else if (text.startsWith('true', i)) i += 4;
    else if (text.startsWith('false', i)) i += 5;
    else if (text.startsWith('null', i)) i += 4;
    else throw new ScanError(i);
    spans.set(pointer, { start, end: i });
  };
  try {
    value('');
    ws();
    if (i < text.length) throw new ScanError(i);
    return { spans, errorAt: null };
  } catch (err) {
    if (err instanceof ScanError) return { spans, errorAt: err.offset };
    throw err;
  }
}

export function locatePointers(text: string): Map<string, Span> {
  return scanJson(text).spans;
}

/** Line and column (1-based) of an offset. */
export function lineCol(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { line, col: offset - before.lastIndexOf('\n') };
}

/** The offset of a JSON.parse error: from the engine's message when it says, else scanned. */
export function syntaxErrorOffset(text: string, message: string): number | null {
  const pos = /position (\d+)/.exec(message);
  if (pos) return Number(pos[1]);
  const lc = /line (\d+) column (\d+)/.exec(message);
  if (lc) {
    const lines = text.split('\n');
    let offset = 0;
    for (let k = 0; k < Number(lc[1]) - 1 && k < lines.length; k++) offset += lines[k]!.length + 1;
    return offset + Number(lc[2]) - 1;
  }
  return scanJson(text).errorAt;
}
