/**
 * Accuracy of one variant against another on the same items, as a paired difference: the
 * items only the variant gets right (gained), only the baseline gets right (lost), and the
 * mean difference with its normal-approximation 95 % interval — so "within 1 point" is read
 * against how many items the figure stands on, not from two accuracies side by side.
 *
 * @example
 * pairedDelta([1, 0, 1, 1], [1, 1, 0, 1]); // { n: 4, delta: 0, gained: 1, lost: 1, ci95: [-0.80, 0.80] }
 */
export interface PairedDelta {
  n: number;
  /** Mean of variant − baseline (−1..1). */
  delta: number;
  gained: number;
  lost: number;
  /** delta ± 1.96 standard errors of the mean paired difference (0 width when no item differs). */
  ci95: [number, number];
}

export function pairedDelta(variant: readonly number[], baseline: readonly number[]): PairedDelta {
  if (variant.length !== baseline.length) throw new RangeError(`pairedDelta: ${variant.length} variant results for ${baseline.length} baseline ones`);
  const n = variant.length;
  let gained = 0;
  let lost = 0;
  for (let i = 0; i < n; i++) {
    if (variant[i]! > baseline[i]!) gained++;
    else if (variant[i]! < baseline[i]!) lost++;
  }
  if (n === 0) return { n, delta: 0, gained, lost, ci95: [0, 0] };
  const delta = (gained - lost) / n;
  // Per-item differences are −1, 0 or +1: their sample variance from the counts.
  const variance = n > 1 ? (gained + lost - n * delta * delta) / (n - 1) : 0;
  const half = 1.96 * Math.sqrt(variance / n);
  return { n, delta, gained, lost, ci95: [delta - half, delta + half] };
}
