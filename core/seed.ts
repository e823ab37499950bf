/**
 * Seeds derived from a run seed and a stable key (node id, branch), so a run with the
 * same seed samples the same tokens in every node however the branches interleave.
 *
 * @example
 * deriveSeed(42, 'answer'); // the same 31-bit integer on every run
 */

/** FNV-1a over `seed:key`, folded to a non-negative 31-bit integer. */
export function deriveSeed(seed: number, key: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${seed}:${key}`) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) & 0x7fffffff;
}

export function randomSeed(): number {
  return Math.floor(Math.random() * 0x7fffffff);
}
