/**
 * Which layers skipped-layer decode runs (Unified Layer Skipping, Liu et al. 2024,
 * arXiv 2404.06954). The choice depends only on the layer count and the target speedup r,
 * never on the input, so every decode step of every sequence with the same target runs the
 * same layers: batching and the KV cache keep working.
 *
 * Rule (the reference code, Adaxry/Unified_Layer_Skipping): keep k = round(L / r) layers;
 * the first and the last are always kept; the rest are every `interval`-th layer with
 * interval = floor(L / (k − 1)), ascending, until k are kept. The reference divides by
 * zero when k = 1 and keeps nothing sensible for k < 2: here k is clamped to [min(2, L), L].
 *
 * Baselines measured beside it (`skein bench stages`): Early Exit keeps the first k layers;
 * a contiguous middle block drops k layers from the middle.
 *
 * @example
 * unifiedLayers(30, 2); // [0, 2, 4, …, 26, 29]  (15 layers)
 * unifiedLayers(30, 5); // [0, 6, 12, 18, 24, 29]
 */
import { BadRequestError } from '../../core/errors.js';

/** Layers kept for a target speedup: round(L / r), clamped so that first and last both fit. */
export function keptLayerCount(numLayers: number, targetSpeedup: number): number {
  if (!(Number.isInteger(numLayers) && numLayers >= 1)) throw new BadRequestError('numLayers', `must be a positive integer, got ${numLayers}`);
  if (!(Number.isFinite(targetSpeedup) && targetSpeedup >= 1)) {
    throw new BadRequestError('skipLayers.targetSpeedup', `must be a number ≥ 1, got ${targetSpeedup}`);
  }
  return Math.min(numLayers, Math.max(Math.min(2, numLayers), Math.round(numLayers / targetSpeedup)));
}

/** Unified Layer Skipping: first, last and evenly spaced layers between them, ascending. */
export function unifiedLayers(numLayers: number, targetSpeedup: number): number[] {
  const k = keptLayerCount(numLayers, targetSpeedup);
  if (k === numLayers) return Array.from({ length: numLayers }, (_, l) => l);
  if (k === 1) return [0];
  const kept = new Set([0, numLayers - 1]);
  const interval = Math.max(1, Math.floor(numLayers / (k - 1)));
  for (let l = interval; l < numLayers - 1 && kept.size < k; l += interval) kept.add(l);
  // floor() makes the interval short rather than long, so the loop above fills k; this
  // only guards the arithmetic (the smallest unused middle layers, should it ever not).
  for (let l = 1; l < numLayers - 1 && kept.size < k; l++) kept.add(l);
  return [...kept].sort((a, b) => a - b);
}

/** Early Exit baseline: the first k layers (k as for the target). */
export function earlyExitLayers(numLayers: number, targetSpeedup: number): number[] {
  return Array.from({ length: keptLayerCount(numLayers, targetSpeedup) }, (_, l) => l);
}

/** Contiguous baseline: every layer but one block of L − k layers centred in the middle. */
export function middleBlockLayers(numLayers: number, targetSpeedup: number): number[] {
  const drop = numLayers - keptLayerCount(numLayers, targetSpeedup);
  const from = Math.floor((numLayers - drop) / 2);
  return Array.from({ length: numLayers }, (_, l) => l).filter((l) => l < from || l >= from + drop);
}
