/**
 * Which KV tensors are rows of another. The block table (runtime/kv/block-table.ts) cuts a
 * forward's new K and V rows — one tensor per layer for a whole prefill chunk — into the
 * cache's 16-row blocks and records each piece here, so that the KV mirror (kv-mirror.ts)
 * reads a piece as a view of the whole's copy, which the forward stored already, instead of
 * storing every block again; attention then reads the prompt's blocks as the long runs they
 * were stored as. Keyed weakly: a record holds no tensor's memory (disposing frees it) and goes
 * with the whole tensor object.
 *
 * @example
 * recordPiece(blockK, prefillK, 32); // blockK holds rows 32.. of prefillK
 * pieceOf(blockK); // { whole: prefillK, first: 32 }
 */
import type * as tf from '@tensorflow/tfjs-core';

const wholeOf = new WeakMap<tf.Tensor, { whole: tf.Tensor2D; first: number }>();
const piecesOf = new WeakMap<tf.Tensor, tf.Tensor[]>();

/** `piece` holds rows first.. of `whole` (the same values, in its own tensor). */
export function recordPiece(piece: tf.Tensor2D, whole: tf.Tensor2D, first: number): void {
  wholeOf.set(piece, { whole, first });
  const list = piecesOf.get(whole);
  if (list) list.push(piece);
  else piecesOf.set(whole, [piece]);
}

/** The tensor `t` was cut from and its first row there, if it was. */
export function pieceOf(t: tf.Tensor): { whole: tf.Tensor2D; first: number } | undefined {
  return wholeOf.get(t);
}

/** The pieces cut from `whole` that are still alive (not disposed). */
export function livePieces(whole: tf.Tensor): tf.Tensor2D[] {
  const list = (piecesOf.get(whole) ?? []) as tf.Tensor2D[];
  // Checked every step for every prefill chunk held: no new array while all are alive.
  if (list.every((p) => !p.isDisposed)) return list;
  const live = list.filter((p) => !p.isDisposed);
  piecesOf.set(whole, live);
  return live;
}
