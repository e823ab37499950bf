import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { MatmulKernels } from '../kernels/matmul.js';
import { KvMirror } from './kv-mirror.js';
import { recordPiece } from './kv-pieces.js';

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

  it('reads pieces of a mirrored tensor as views of its copy, keeps the copy while a piece lives, then frees it', () => {
    const kernels = new MatmulKernels();
    const KV = 2, w = 8, S = 6;
    const mirror = new KvMirror(kernels, KV);
    const whole = tf.tensor2d(Float32Array.from({ length: S * w }, (_, i) => Math.sin(i)), [S, w]);
    const copy = mirror.chunk(whole);
    const bytes = kernels.storedBytes;
    // Cut as the block table cuts a prefill chunk into blocks: rows 0..3 and 4..5.
    const pieces = [tf.slice(whole, [0, 0], [4, w]) as tf.Tensor2D, tf.slice(whole, [4, 0], [2, w]) as tf.Tensor2D];
    recordPiece(pieces[0]!, whole, 0);
    recordPiece(pieces[1]!, whole, 4);
    whole.dispose();
    mirror.sweep(); // the whole is gone, its copy stays for the pieces
    const views = pieces.map((p) => mirror.chunk(p));
    expect(views.map((c) => [c.rows, c.stride])).toEqual([[4, S], [2, S]]);
    expect(kernels.storedBytes).toBe(bytes); // nothing stored again
    const alone = kernels.store(pieces[1]!.dataSync() as Float32Array, 2, KV);
    expect(kernels.readChunk(views[1]!, w)).toEqual(kernels.readChunk(alone, w));
    kernels.free(alone);
    pieces[0]!.dispose();
    mirror.sweep();
    expect(kernels.storedBytes).toBe(bytes); // one piece still reads it
    expect(kernels.readChunk(views[1]!, w)[0]).toBeCloseTo(Math.sin(4 * w), 6);
    pieces[1]!.dispose();
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(copy.stride).toBeUndefined();
    expect(kernels.storedBytes).toBe(0);
  });
});
