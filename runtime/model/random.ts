/**
 * Seeded random Llama-family models held in memory, for tests and benchmarks that need a
 * model of a given shape but not its knowledge. Same config and seed, same weights.
 *
 * @example
 * const model = randomModel({ hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2 }, 7);
 * // ... forward(model, [{ ids: [1, 2, 3] }]) ...
 * model.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LayerWeights, LoadedModel, ModelConfig, ModelWeights } from './types.js';

/** A tiny default shape; override any field. */
export function randomConfig(partial: Partial<ModelConfig> = {}): ModelConfig {
  const hiddenSize = partial.hiddenSize ?? 32;
  const numHeads = partial.numHeads ?? 4;
  return {
    architecture: 'LlamaForCausalLM',
    vocabSize: 64,
    hiddenSize,
    intermediateSize: hiddenSize * 2,
    numLayers: 2,
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: false,
    qkvBias: false,
    oBias: false,
    slidingWindow: null,
    bosTokenId: 1,
    eosTokenIds: [2],
    torchDtype: 'float32',
    ...partial,
  };
}

/** A small fast PRNG (mulberry32); deterministic per seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normals(rand: () => number, n: number, std: number, mean = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    // Box–Muller gives two normals per pair of uniforms.
    const u = Math.max(rand(), 1e-12);
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    const th = 2 * Math.PI * rand();
    out[i] = mean + r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = mean + r * Math.sin(th);
  }
  return out;
}

/**
 * Random weights in the loader's layout (projections stored (in, out)). Projections have
 * std 1/sqrt(in) so activations stay O(1) through the layers and attention is not uniform;
 * norm weights are near 1 so a wrong norm shows.
 */
export function randomWeights(config: ModelConfig, seed = 0): ModelWeights {
  const rand = mulberry32(seed);
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  const mat = (rows: number, cols: number, std = 1 / Math.sqrt(rows)) =>
    tf.tensor2d(normals(rand, rows * cols, std), [rows, cols]);
  const vec = (n: number, std: number, mean = 0) => tf.tensor1d(normals(rand, n, std, mean));
  const embed = mat(vocabSize, h, 1);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    layers.push({
      inputNorm: vec(h, 0.1, 1),
      wq: mat(h, qDim),
      wk: mat(h, kvDim),
      wv: mat(h, kvDim),
      bq: config.qkvBias ? vec(qDim, 0.1) : null,
      bk: config.qkvBias ? vec(kvDim, 0.1) : null,
      bv: config.qkvBias ? vec(kvDim, 0.1) : null,
      wo: mat(qDim, h),
      bo: config.oBias ? vec(h, 0.1) : null,
      postNorm: vec(h, 0.1, 1),
      wGate: mat(h, inter),
      wUp: mat(h, inter),
      wDown: mat(inter, h),
    });
  }
  const finalNorm = vec(h, 0.1, 1);
  const lmHead = config.tieWordEmbeddings ? tf.transpose(embed) : mat(h, vocabSize);
  return { embed, layers, finalNorm, lmHead: lmHead as tf.Tensor2D };
}

export function disposeWeights(w: ModelWeights): void {
  const all: (tf.Tensor | null)[] = [w.finalNorm, w.lmHead];
  if (w.embed instanceof tf.Tensor) all.push(w.embed);
  for (const l of w.layers) all.push(...Object.values(l));
  for (const t of all) t?.dispose();
}

/** A LoadedModel with random weights; call dispose() when done. */
export function randomModel(partial: Partial<ModelConfig> = {}, seed = 0): LoadedModel {
  const config = randomConfig(partial);
  const weights = randomWeights(config, seed);
  let disposed = false;
  return {
    config,
    weights,
    source: `random:${seed}`,
    dispose() {
      if (disposed) return;
      disposed = true;
      disposeWeights(weights);
    },
  };
}
