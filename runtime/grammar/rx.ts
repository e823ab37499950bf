/**
 * The regular-expression tree every constraint compiles to (a JSON Schema, a regex, a
 * choice among strings), over Unicode code points. Character classes are sorted,
 * disjoint, inclusive ranges flattened into one array: [lo0, hi0, lo1, hi1, ...].
 * The tree is plain data: automaton.ts turns it into an NFA and a lazy DFA.
 *
 * @example
 * const digits = rep(set(range('0', '9')), 1, 3); // [0-9]{1,3}
 * const answer = alt([lit('yes'), lit('no')]);
 */

export type Ranges = readonly number[];

export type Rx =
  /** One code point from the ranges. */
  | { t: 'set'; ranges: Ranges }
  | { t: 'seq'; items: Rx[] }
  /** No alternatives: matches nothing. */
  | { t: 'alt'; items: Rx[] }
  /** `max` may be Infinity. */
  | { t: 'rep'; item: Rx; min: number; max: number };

export const MAX_CODE_POINT = 0x10ffff;

/** Sorts, merges overlapping and adjacent ranges. */
export function normalize(ranges: readonly number[]): number[] {
  const pairs: [number, number][] = [];
  for (let i = 0; i < ranges.length; i += 2) pairs.push([ranges[i]!, ranges[i + 1]!]);
  pairs.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  for (const [lo, hi] of pairs) {
    const n = out.length;
    if (n > 0 && lo <= out[n - 1]! + 1) out[n - 1] = Math.max(out[n - 1]!, hi);
    else out.push(lo, hi);
  }
  return out;
}

export function union(...sets: Ranges[]): number[] {
  return normalize(sets.flat());
}

export function negate(ranges: Ranges): number[] {
  const r = normalize(ranges);
  const out: number[] = [];
  let next = 0;
  for (let i = 0; i < r.length; i += 2) {
    if (r[i]! > next) out.push(next, r[i]! - 1);
    next = r[i + 1]! + 1;
  }
  if (next <= MAX_CODE_POINT) out.push(next, MAX_CODE_POINT);
  return out;
}

export function subtract(a: Ranges, b: Ranges): number[] {
  return negate(union(negate(a), b));
}

export function contains(ranges: Ranges, cp: number): boolean {
  // Binary search over the pairs: classes such as \p{L} have hundreds of ranges.
  let lo = 0;
  let hi = ranges.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cp < ranges[2 * mid]!) hi = mid - 1;
    else if (cp > ranges[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

export const range = (from: string, to: string): number[] => [from.codePointAt(0)!, to.codePointAt(0)!];
export const chars = (s: string): number[] => normalize([...s].flatMap((c) => [c.codePointAt(0)!, c.codePointAt(0)!]));

export const set = (ranges: Ranges): Rx => ({ t: 'set', ranges: normalize(ranges) });
export const seq = (items: Rx[]): Rx => (items.length === 1 ? items[0]! : { t: 'seq', items });
export const alt = (items: Rx[]): Rx => (items.length === 1 ? items[0]! : { t: 'alt', items });
export const rep = (item: Rx, min: number, max: number): Rx => ({ t: 'rep', item, min, max });
export const opt = (item: Rx): Rx => rep(item, 0, 1);
export const star = (item: Rx): Rx => rep(item, 0, Infinity);
export const EMPTY: Rx = { t: 'seq', items: [] };
export const NOTHING: Rx = { t: 'alt', items: [] };

/** The exact text `s`. */
export function lit(s: string): Rx {
  return seq([...s].map((c) => set([c.codePointAt(0)!, c.codePointAt(0)!])));
}
