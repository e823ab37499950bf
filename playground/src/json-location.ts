/**
 * Where a JSON pointer's value sits in the editor's text, so a problem reported as
 * `/nodes/2/kind` can be highlighted, and where a syntax error is (engines' JSON.parse
 * messages do not always carry a position). Both come from jsonc-parser's fault-tolerant
 * parse tree (Microsoft's, as VS Code uses), read strictly: no comments, no trailing commas.
 * Positions are UTF-16 offsets, as textarea selections use.
 *
 * @example
 * locatePointer('{"a": [1, 2]}', '/a/1'); // { start: 10, end: 11 }
 */
import { findNodeAtLocation, parse, parseTree, type Node, type ParseError, type ParseOptions } from 'jsonc-parser';

export interface Span {
  start: number;
  end: number;
}

const STRICT: ParseOptions = { disallowComments: true, allowTrailingComma: false };

/** The span of the value at an RFC 6901 pointer (`''` is the whole document), if the text has one. */
export function locatePointer(text: string, pointer: string): Span | undefined {
  let node: Node | undefined = parseTree(text, [], STRICT);
  if (pointer !== '') {
    for (const raw of pointer.slice(1).split('/')) {
      if (!node) return undefined;
      const token = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      // An array's children are addressed by index, an object's by key (which may look like one).
      node = findNodeAtLocation(node, [node.type === 'array' ? Number(token) : token]);
    }
  }
  return node ? { start: node.offset, end: node.offset + node.length } : undefined;
}

/** Offset of the first syntax error, or null when the text is valid JSON. */
export function syntaxErrorOffset(text: string): number | null {
  const errors: ParseError[] = [];
  parse(text, errors, STRICT);
  return errors[0]?.offset ?? null;
}

/** Line and column (1-based) of an offset. */
export function lineCol(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { line, col: offset - before.lastIndexOf('\n') };
}
