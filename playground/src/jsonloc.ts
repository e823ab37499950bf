/**
 * Where each JSON pointer's value sits in a JSON text, so a problem reported as
 * `/nodes/2/kind` can be highlighted in the editor. A small scanner of valid JSON (the
 * text was already parsed once); positions are UTF-16 offsets, as textarea selections use.
 *
 * @example
 * locatePointers('{"a": [1, 2]}').get('/a/1'); // { start: 10, end: 11 }
 */
export interface Span {
  start: number;
  end: number;
}

const escapeToken = (t: string) => t.replace(/~/g, '~0').replace(/\//g, '~1');

export function locatePointers(text: string): Map<string, Span> {
  const spans = new Map<string, Span>();
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\r\n'.includes(text[i]!)) i++;
  };
  const str = (): string => {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
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
          const key = str();
          const child = `${pointer}/${escapeToken(key)}`;
          ws();
          i++; // ':'
          value(child);
          // A missing-property problem points at the object; a key's own span helps for the rest.
          spans.set(`${child}#key`, { start: keyStart, end: keyStart + JSON.stringify(key).length });
          ws();
          if (text[i++] === '}') break;
        }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') i++;
      else
        for (let k = 0; ; k++) {
          value(`${pointer}/${k}`);
          ws();
          if (text[i++] === ']') break;
        }
    } else if (c === '"') str();
    else while (i < text.length && !',]} \t\r\n'.includes(text[i]!)) i++;
    spans.set(pointer, { start, end: i });
  };
  try {
    value('');
  } catch {
    // Invalid JSON: whatever was located before the error is still useful.
  }
  return spans;
}

/** Line and column (1-based) of an offset. */
export function lineCol(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { line, col: offset - before.lastIndexOf('\n') };
}

/** The offset of a JSON.parse error, from the engine's message ("at position N" or "line L column C"). */
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
  return null;
}
