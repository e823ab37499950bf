import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { gatherRows, rmsNorm, ropeQk, swiGlu } from './kernels.js';

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

beforeAll(async () => {
  await initBackend();
});

describe('fused kernels equal their composite ops', () => {
  it.each([1, 5, 9, 64, 300])('at %i rows', (T) => {
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

