/**
 * One gradient evaluation over a flat parameter buffer: builds tensors from the buffer,
 * runs the loss with tf.valueAndGrads, writes every gradient into a flat buffer of the
 * same layout (zeros for the layers this step skipped) and disposes everything it made.
 *
 * @example
 * const loss = computeGrads(cfg, table, flat, batch, [0, 1], consts, grads);
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ParamTable, TrainModelConfig } from './config.js';
import { lossFn, type Batch, type ForwardConsts, type ParamTensors } from './forward.js';

/** The parameters a step that runs `layers` touches. */
export function usedParams(table: ParamTable, layers: number[]): string[] {
  const keep = new Set(layers.map((l) => `layers.${l}.`));
  return table.entries
    .map((e) => e.name)
    .filter((n) => !n.startsWith('layers.') || keep.has(n.slice(0, n.indexOf('.', 7) + 1)));
}

export function paramTensors(table: ParamTable, flat: Float32Array, names: string[]): ParamTensors {
  const m: ParamTensors = new Map();
  for (const n of names) {
    const e = table.byName.get(n)!;
    m.set(n, tf.tensor(flat.subarray(e.offset, e.offset + e.size), e.shape));
  }
  return m;
}

export function computeGrads(
  cfg: TrainModelConfig,
  table: ParamTable,
  flat: Float32Array,
  batch: Batch,
  layers: number[],
  consts: ForwardConsts,
  gradsOut: Float32Array,
): number {
  gradsOut.fill(0);
  const names = usedParams(table, layers);
  let loss = 0;
  tf.tidy(() => {
    const tensors = paramTensors(table, flat, names);
    const list = names.map((n) => tensors.get(n)!);
    const { value, grads } = tf.valueAndGrads((...xs: tf.Tensor[]) => {
      const m: ParamTensors = new Map(names.map((n, i) => [n, xs[i]]));
      return lossFn(cfg, m, batch, layers, consts);
    })(list);
    loss = value.dataSync()[0];
    names.forEach((n, i) => {
      const e = table.byName.get(n)!;
      gradsOut.set(grads[i].dataSync() as Float32Array, e.offset);
    });
  });
  return loss;
}
