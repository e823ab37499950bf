import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { MatmulKernels } from '../kernels/matmul.js';
import { KvMirror } from './kv-mirror.js';

beforeAll(async () => {
  await initBackend();
});

describe('KvMirror', () => {
  it('copies a chunk once, keeps its rows readable in kernel memory, and frees it after the tensor is disposed', () => {
    const kernels = new MatmulKernels();
    const mirror = new KvMirror(kernels);
    const t = tf.tensor2d(Float32Array.from({ length: 3 * 8 }, (_, i) => i / 4), [3, 8]);
    const a = mirror.chunk(t);
    expect(mirror.chunk(t)).toBe(a);
    expect(a.rows).toBe(3);
    expect(kernels.storedBytes).toBeGreaterThanOrEqual(3 * 8 * 4);
    mirror.sweep();
    expect(mirror.size).toBe(1); // still alive: kept
    t.dispose();
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(kernels.storedBytes).toBe(0);
  });

  it('attends over mirrored chunks exactly as over one contiguous copy', () => {
    const kernels = new MatmulKernels();
    const mirror = new KvMirror(kernels);
    const H = 2, KV = 1, D = 4, S = 5;
    const k = Float32Array.from({ length: S * KV * D }, (_, i) => Math.sin(i));
    const v = Float32Array.from({ length: S * KV * D }, (_, i) => Math.cos(i));
    const q = Float32Array.from({ length: H * D }, (_, i) => (i % 3) - 1);
    const kc = [tf.tensor2d(k.subarray(0, 8), [2, 4]), tf.tensor2d(k.subarray(8), [3, 4])];
    const vc = [tf.tensor2d(v.subarray(0, 8), [2, 4]), tf.tensor2d(v.subarray(8), [3, 4])];
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const split = kernels.attention(q, kc.map((t) => mirror.chunk(t)), vc.map((t) => mirror.chunk(t)), 1, Uint8Array.of(1), shape);
    const whole = kernels.attention(q, [kernels.store(k, S)], [kernels.store(v, S)], 1, Uint8Array.of(1), shape);
    expect(Array.from(split.out)).toEqual(Array.from(whole.out));
    tf.dispose([...kc, ...vc]);
  });
});
