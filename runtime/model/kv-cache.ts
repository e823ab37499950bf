/**
 * A simple contiguous KV cache for one sequence: per layer, a list of chunks in position
 * order, as `ForwardSequence.past` wants it. Appending pushes the forward's new chunk;
 * every `compactEvery` chunks a layer's list is concatenated into one tensor so the
 * per-step concat inside attention stays a few inputs long. (The scheduler's paged pool
 * is the shared-memory alternative; this one serves the simple engine and tests.)
 *
 * @example
 * const cache = new KvCache(model.config.numLayers);
 * const [r] = forward(model, [{ ids, past: cache.past() }]);
 * cache.append(r.newKv);
 * cache.dispose();
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ForwardSequenceResult, LayerKvChunks } from './types.js';

export class KvCache {
  private readonly layers: LayerKvChunks[];

  constructor(
    numLayers: number,
    /** Chunks per layer before they are merged into one. */
    private readonly compactEvery = 16,
  ) {
    this.layers = Array.from({ length: numLayers }, () => ({ k: [], v: [] }));
  }

  /** The chunk lists to pass as `past`; valid until the next append or dispose. */
  past(): LayerKvChunks[] {
    return this.layers;
  }

  /** Tokens cached at a layer (layers may differ under pruning or skipping). */
  length(layer = 0): number {
    let n = 0;
    for (const t of this.layers[layer]!.k) n += t.shape[0];
    return n;
  }

  /** Takes ownership of a forward's new KV (null entries, skipped layers, are ignored). */
  append(newKv: ForwardSequenceResult['newKv']): void {
    newKv.forEach((e, l) => {
      if (e === null) return;
      const layer = this.layers[l]!;
      layer.k.push(e.k);
      layer.v.push(e.v);
      if (layer.k.length >= this.compactEvery) {
        const k = tf.concat(layer.k, 0) as tf.Tensor2D;
        const v = tf.concat(layer.v, 0) as tf.Tensor2D;
        tf.dispose([...layer.k, ...layer.v]);
        layer.k = [k];
        layer.v = [v];
      }
    });
  }

  dispose(): void {
    for (const layer of this.layers) {
      tf.dispose([...layer.k, ...layer.v]);
      layer.k = [];
      layer.v = [];
    }
  }
}
