import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { FUSED_MAX_ELEMENTS, FUSED_MAX_ROWS, gatherRows, ownHeads, queryBlocks, rmsNorm, ropeQk, softmaxColumns, swiGlu } from './kernels.js';

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

beforeAll(async () => {
  await initBackend();
});

describe('fused kernels equal their composite ops', () => {
  it.each([1, 5, FUSED_MAX_ROWS.rmsNorm + 1, FUSED_MAX_ROWS.rope, FUSED_MAX_ROWS.rope + 3])('at %i rows', (T) => {
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const D = 8;
      const heads = 3;
      const x = tf.randomNormal([T, 24], 0, 1, 'float32', 1) as tf.Tensor2D;
      const u = tf.randomNormal([T, 24], 0, 1, 'float32', 2) as tf.Tensor2D;
      const eps = tf.scalar(1e-5);
      const norm = tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps)));
      expect(maxDiff(rmsNorm(x, 1e-5, eps), norm)).toBeLessThan(1e-5);
      expect(maxDiff(swiGlu(x, u), tf.mul(tf.mul(x, tf.sigmoid(x)), u))).toBeLessThan(1e-5);
      const x3 = tf.reshape(x, [T, heads, D]) as tf.Tensor3D;
      const angle = tf.randomUniform([T, 1, D / 2], 0, 6, 'float32', 3);
      const cos = tf.concat([tf.cos(angle), tf.cos(angle)], 2) as tf.Tensor3D;
      const sin = tf.concat([tf.sin(angle), tf.sin(angle)], 2) as tf.Tensor3D;
      const [x1, x2] = tf.split(x3, 2, 2);
      const expected = tf.add(tf.mul(x3, cos), tf.mul(tf.concat([tf.neg(x2!), x1!], 2), sin));
      const r = new Float32Array(D * D);
      for (let j = 0; j < D / 2; j++) {
        r[(j + D / 2) * D + j] = -1;
        r[j * D + j + D / 2] = 1;
      }
      const [q, k] = ropeQk(x, cos, sin, { heads: 2, kvHeads: 1, dim: D }, tf.tensor2d(r, [D, D]));
      expect(maxDiff(tf.concat([tf.reshape(q, [T, 2, D]), tf.reshape(k, [T, 1, D])], 1), expected)).toBeLessThan(1e-5);
    });
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('decode attention helpers equal their definitions', () => {
  const shape = { heads: 6, kvHeads: 2, dim: 4 };
  const kvDim = shape.kvHeads * shape.dim;
  function blockMask(): tf.Tensor3D {
    const m = new Float32Array(kvDim * shape.heads);
    for (let r = 0; r < kvDim; r++) for (let h = 0; h < shape.heads; h++) if (Math.floor(r / shape.dim) === Math.floor(h / 3)) m[r * shape.heads + h] = 1;
    return tf.tensor3d(m, [shape.kvHeads, shape.dim, shape.heads]);
  }

  it.each([2, 2000])('queryBlocks and ownHeads at batch %i (fused and composite)', (B) => {
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const q = tf.randomNormal([B, shape.heads * shape.dim], 0, 1, 'float32', 4) as tf.Tensor2D;
      const mask = blockMask();
      const qb = queryBlocks(q, shape, mask).arraySync() as number[][];
      const qv = q.arraySync() as number[][];
      for (const b of [0, B - 1]) {
        for (let h = 0; h < shape.heads; h++) {
          for (let kv = 0; kv < shape.kvHeads; kv++) {
            for (let d = 0; d < shape.dim; d++) {
              const want = Math.floor(h / 3) === kv ? qv[b]![h * shape.dim + d]! : 0;
              expect(qb[b * kvDim + kv * shape.dim + d]![h]).toBeCloseTo(want, 6);
            }
          }
        }
      }
      // ownHeads(queryBlocks(q)) gives q back.
      expect(maxDiff(ownHeads(queryBlocks(q, shape, mask), shape, mask), q)).toBeLessThan(1e-6);
      expect(q.size * shape.kvHeads > FUSED_MAX_ELEMENTS.queryBlocks).toBe(B === 2000);
    });
    expect(tf.memory().numTensors).toBe(before);
  });

  it.each([[2, 5], [3, 300]])('softmaxColumns over %i blocks of %i rows', (blocks, S) => {
    tf.tidy(() => {
      const x = tf.randomNormal([blocks * S, 7], 0, 3, 'float32', 5) as tf.Tensor2D;
      const want = tf.reshape(tf.transpose(tf.softmax(tf.transpose(tf.reshape(x, [blocks, S, 7]), [0, 2, 1])), [0, 2, 1]), [blocks * S, 7]);
      expect(maxDiff(softmaxColumns(x, blocks), want)).toBeLessThan(1e-6);
    });
  });
});

it('gatherRows equals tf.gather and checks its rows', () => {
  tf.tidy(() => {
    const x = tf.randomNormal([9, 5], 0, 1, 'float32', 6) as tf.Tensor2D;
    const rows = [8, 0, 3, 3];
    expect(maxDiff(gatherRows(x, rows), tf.gather(x, tf.tensor1d(rows, 'int32')))).toBe(0);
    expect(() => gatherRows(x, [9])).toThrow(RangeError);
  });
});
