/**
 * Rotary embedding frequencies, Hugging Face conventions: inv_freq[i] = theta^(-2i/d) for
 * i < d/2, optionally adjusted by Llama 3's rope_scaling (transformers'
 * `_compute_llama3_parameters`) or divided by per-frequency factors (GGUF's rope_freqs).
 * Angles are rounded to float32 as torch computes them, so the tables match a
 * transformers run bit for bit in the angle.
 *
 * @example
 * const inv = inverseFrequencies(config); // Float64Array(headDim / 2)
 * const { cos, sin } = ropeTables(inv, [0, 1, 2]); // each (3, headDim/2), row-major
 */
import type { ModelConfig } from './types.js';

export function inverseFrequencies(config: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = Math.fround(1 / Math.fround(Math.pow(config.ropeTheta, (2 * i) / config.headDim)));
  }
  const s = config.ropeScaling;
  if (s === null) return inv;
  if (s.ropeType === 'factors') {
    for (let i = 0; i < half; i++) inv[i] = Math.fround(inv[i]! / s.factors[i]!);
    return inv;
  }
  // Llama 3: long wavelengths are slowed by `factor`, short ones kept, the band between
  // them interpolated smoothly.
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i]!;
    let f = wavelen > lowWavelen ? inv[i]! / s.factor : inv[i]!;
    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      f = (1 - smooth) * (f / s.factor) + smooth * f;
    }
    inv[i] = Math.fround(f);
  }
  return inv;
}

/** cos/sin of position·inv_freq, each (positions.length, headDim/2) row-major. */
export function ropeTables(inv: Float64Array, positions: readonly number[]): { cos: Float32Array; sin: Float32Array } {
  const half = inv.length;
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(positions[t]! * inv[i]!);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
