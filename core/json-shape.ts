/**
 * Limits on the shape of JSON-like data from outside (request bodies, run inputs, graphs,
 * tool results): how deeply it nests and how many object keys it holds. A size limit alone
 * lets a 10 KB body nest 5,000 levels deep, which is stored happily and then breaks every
 * later `JSON.stringify` of the run list; these checks refuse it before anything keeps it.
 *
 * `scanJsonText` checks the text before it is parsed (one pass, nothing allocated);
 * `checkJsonShape` walks a value already in memory, without recursion.
 *
 * @example
 * scanJsonText('{"a": [[[1]]]}', { maxDepth: 2, maxKeys: 10 }, 'body'); // throws ShapeLimitError
 * checkJsonShape(toolResult, DEFAULT_SHAPE_LIMITS, 'tool result');
 */
import { BadRequestError } from './errors.js';

export interface ShapeLimits {
  /** Deepest nesting of objects and arrays; the top-level value is depth 1. */
  maxDepth: number;
  /** Object keys in the whole document, at every level. */
  maxKeys: number;
}

/**
 * Graphs nest about 6 levels and inputs a few more; 64 leaves room for any honest use
 * and stays far from the ~10,000 levels where V8's JSON.stringify runs out of stack.
 * 20,000 keys fit a large graph or input inside the default 1 MiB body.
 */
export const DEFAULT_SHAPE_LIMITS: ShapeLimits = { maxDepth: 64, maxKeys: 20_000 };

/** Data past a shape limit; a BadRequestError (400) that names the limit and its value. */
export class ShapeLimitError extends BadRequestError {
  constructor(
    readonly where: string,
    readonly limit: keyof ShapeLimits,
    readonly max: number,
  ) {
    super(where, limit === 'maxDepth' ? `nests deeper than ${max} levels (limit maxDepth = ${max})` : `has more than ${max} object keys (limit maxKeys = ${max})`);
  }
}

const OPEN_OBJECT = 0x7b;
const OPEN_ARRAY = 0x5b;
const CLOSE_OBJECT = 0x7d;
const CLOSE_ARRAY = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

/**
 * Checks JSON text against the limits without parsing it. Malformed text is left to
 * JSON.parse to report; only depth and key count are judged here. Every key is followed
 * by a colon outside a string, so colons count keys. Strings are skipped with `indexOf`
 * (native, memchr-like) rather than walked a character at a time: a 1 MiB prompt is one
 * string, and the walk took 20–30 ms of the server's event loop for it (10× JSON.parse)
 * where the skip takes well under 1 ms.
 */
export function scanJsonText(text: string, limits: ShapeLimits, where: string): void {
  let depth = 0;
  let keys = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === QUOTE) i = closingQuote(text, i);
    else if (ch === OPEN_OBJECT || ch === OPEN_ARRAY) {
      if (++depth > limits.maxDepth) throw new ShapeLimitError(where, 'maxDepth', limits.maxDepth);
    } else if (ch === CLOSE_OBJECT || ch === CLOSE_ARRAY) depth--;
    else if (ch === COLON && ++keys > limits.maxKeys) throw new ShapeLimitError(where, 'maxKeys', limits.maxKeys);
  }
}

/**
 * Where the string opened at `open` ends (text.length when it never does): the next `"`
 * not escaped, i.e. preceded by an even number of backslashes. Each backslash is counted
 * for one quote only, so the whole scan stays linear.
 */
function closingQuote(text: string, open: number): number {
  let i = open;
  for (;;) {
    i = text.indexOf('"', i + 1);
    if (i < 0) return text.length;
    let slashes = 0;
    for (let j = i - 1; text.charCodeAt(j) === BACKSLASH; j--) slashes++;
    if (slashes % 2 === 0) return i;
  }
}

/**
 * Checks a value in memory against the limits: an explicit stack instead of recursion, so
 * a value deep enough to overflow the call stack is measured, not crashed on. Shared
 * references are counted each time they are reached, as JSON.stringify would write them;
 * a cycle is reported as too deep.
 */
export function checkJsonShape(value: unknown, limits: ShapeLimits, where: string): void {
  if (value === null || typeof value !== 'object') return;
  const stack: Array<[unknown, number]> = [[value, 1]];
  let keys = 0;
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (depth > limits.maxDepth) throw new ShapeLimitError(where, 'maxDepth', limits.maxDepth);
    const children: unknown[] = Array.isArray(v) ? v : Object.values(v as object);
    if (!Array.isArray(v)) {
      keys += children.length;
      if (keys > limits.maxKeys) throw new ShapeLimitError(where, 'maxKeys', limits.maxKeys);
    }
    for (const child of children) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
}
