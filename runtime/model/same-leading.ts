/**
 * How many leading elements two arrays share, compared with ===. The engine hands each
 * sequence's KV lists again at every step, the same chunks plus the newest rows; the caches
 * beside them (the block table's flat lists, the KV mirror's copies, forward's validation)
 * keep what they found for the chunks this count says are unchanged.
 *
 * @example
 * sameLeading([a, b, c], [a, b, d]); // 2
 */
export function sameLeading<T>(a: readonly T[], b: readonly T[]): number {
  const most = Math.min(a.length, b.length);
  let n = 0;
  while (n < most && a[n] === b[n]) n++;
  return n;
}
