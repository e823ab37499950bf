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
    const mirror = new KvMirror(kernels, 2);
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

  it('attends over mirrored chunks exactly as over one contiguous copy (rows stored head by head)', () => {
    const kernels = new MatmulKernels();
    const H = 4, KV = 2, D = 4, S = 5;
    const mirror = new KvMirror(kernels, KV);
    const k = Float32Array.from({ length: S * KV * D }, (_, i) => Math.sin(i));
    const v = Float32Array.from({ length: S * KV * D }, (_, i) => Math.cos(i));
    const q = Float32Array.from({ length: H * D }, (_, i) => (i % 3) - 1);
    const w = KV * D;
    const kc = [tf.tensor2d(k.subarray(0, 2 * w), [2, w]), tf.tensor2d(k.subarray(2 * w), [3, w])];
    const vc = [tf.tensor2d(v.subarray(0, 2 * w), [2, w]), tf.tensor2d(v.subarray(2 * w), [3, w])];
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const split = kernels.attention(q, kc.map((t) => mirror.chunk(t)), vc.map((t) => mirror.chunk(t)), 1, Uint8Array.of(1), shape);
    const whole = kernels.attention(q, [kernels.store(k, S, KV)], [kernels.store(v, S, KV)], 1, Uint8Array.of(1), shape);
    expect(Array.from(split.out)).toEqual(Array.from(whole.out));
    // And against the same attention computed here from the rows as given.
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / KV));
      const sc = Array.from({ length: S }, (_, j) => { let d = 0; for (let x = 0; x < D; x++) d += q[h * D + x]! * k[j * w + g * D + x]!; return d; });
      const m = Math.max(...sc);
      const e = sc.map((x) => Math.exp(x - m));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let x = 0; x < D; x++) expect(Math.abs(split.out[h * D + x]! - e.reduce((a, p, j) => a + (p / sum) * v[j * w + g * D + x]!, 0))).toBeLessThan(1e-5);
    }
    tf.dispose([...kc, ...vc]);
  });
});
