/**
 * One KV block: up to `blockSize` consecutive token positions of one sequence's cache,
 * for every layer. tfjs tensors are immutable, so a block is a list of row chunks per
 * layer: a decode step appends a (1, kvDim) chunk without copying, and when the block
 * fills its chunks are concatenated into one tensor. A shared (copy-on-write) partial
 * block is copied, at most blockSize-1 rows per layer, by whoever appends to it first.
 *
 * @example
 * const past = blocks.map((b) => b.k[layer]).flat(); // the chunks attention reads
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TreeNode } from './prefix-tree.js';

export interface KvBlock {
  readonly id: number;
  /** Block tables holding it; 0 while it sits in the prefix tree as cache. */
  refs: number;
  /** Token ids of the filled rows, in order; its length is the number of filled rows. */
  tokens: number[];
  /** Per layer, the key rows as chunks in order (one chunk once the block is full). */
  k: tf.Tensor2D[][];
  /** Per layer, the value rows, chunked like `k`. */
  v: tf.Tensor2D[][];
  /** The tree node of the full block before it (the root for a first block). */
  parent: TreeNode | null;
  /** Its own tree node once full and indexed; only indexed blocks outlive their holders. */
  node: TreeNode | null;
  /** Logical clock of the last time a sequence took or dropped it, for LRU eviction. */
  lastUsed: number;
  /**
   * Written by a sequence whose KV is not the full model's (skipped layers, pruned tokens,
   * or rows that attended to such): never listed as a partial, never indexed, so no other
   * sequence can adopt it. Freed when its holder lets go.
   */
  private: boolean;
}

export function emptyBlock(id: number, numLayers: number): KvBlock {
  return {
    id,
    refs: 0,
    tokens: [],
    k: Array.from({ length: numLayers }, () => []),
    v: Array.from({ length: numLayers }, () => []),
    parent: null,
    node: null,
    lastUsed: 0,
    private: false,
  };
}

/**
 * Makes one new (rows, kvDim) tensor of a layer's row chunks in order (`keys`: they are
 * keys). The pool's (KvPoolOptions.joinRows) lets a model's fast path carry its own copies
 * of the rows over to the joined tensor; the default is a concat.
 */
export type JoinRows = (chunks: tf.Tensor2D[], keys: boolean) => tf.Tensor2D;

export const concatRows: JoinRows = (chunks) => tf.concat(chunks, 0) as tf.Tensor2D;

/** Joins each layer's chunks into one tensor (when there are several) and frees the pieces. */
export function consolidate(block: KvBlock, join: JoinRows = concatRows): void {
  for (const [side, keys] of [[block.k, true], [block.v, false]] as const) {
    for (let l = 0; l < side.length; l++) {
      const chunks = side[l]!;
      if (chunks.length <= 1) continue;
      const joined = join(chunks, keys);
      for (const c of chunks) c.dispose();
      side[l] = [joined];
    }
  }
}

/** Copies the first `rows` rows of `from` into the empty block `to` (fresh tensors). */
export function copyRows(from: KvBlock, to: KvBlock, rows: number): void {
  to.tokens = from.tokens.slice(0, rows);
  const copy = (chunks: tf.Tensor2D[]): tf.Tensor2D[] =>
    tf.tidy(() => {
      const all = chunks.length === 1 ? chunks[0]! : tf.concat(chunks, 0);
      // A full-range slice may alias its input in some backends; clone keeps ownership separate.
      return [tf.clone(tf.slice(all, [0, 0], [rows, all.shape[1]])) as tf.Tensor2D];
    });
  for (let l = 0; l < from.k.length; l++) {
    to.k[l] = copy(from.k[l]!);
    to.v[l] = copy(from.v[l]!);
  }
}

export function disposeBlockTensors(block: KvBlock): void {
  for (const side of [block.k, block.v]) {
    for (const chunks of side) for (const c of chunks) c.dispose();
    for (let l = 0; l < side.length; l++) side[l] = [];
  }
  block.tokens = [];
  block.private = false;
}
