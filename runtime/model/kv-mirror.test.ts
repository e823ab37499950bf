import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { MatmulKernels } from '../kernels/matmul.js';
import { KvMirror } from './kv-mirror.js';
import { recordPiece } from './kv-pieces.js';

beforeAll(async () => {
  await initBackend();
});

/** A mirror over 2 KV heads of width-8 rows, blocks of seeded rows, and a check that a list's copies are its own tensors'. */
function listFixture() {
  const kernels = new MatmulKernels();
  const KV = 2, w = 8;
  const mirror = new KvMirror(kernels, KV);
  const block = (rows: number, seed: number) => tf.tensor2d(Float32Array.from({ length: rows * w }, (_, i) => seed + i / 16), [rows, w]);
  const expectOwn = (list: tf.Tensor2D[], got: readonly unknown[]) => {
    expect(got.length).toBe(list.length);
    list.forEach((t, i) => expect(got[i]).toBe(mirror.chunk(t)));
  };
  return { kernels, mirror, w, block, expectOwn };
}

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

  it.each(['f16', 'q8'] as const)('joins eight %s blocks in a row that have copies of their own into one stored chunk they view, with the same attention, freeing the old copies on the next sweep (keys grouped where f16)', (kv) => {
    const kernels = new MatmulKernels();
    const H = 4, KV = 2, D = 8, R = 4, n = 10;
    const w = KV * D;
    const mirror = new KvMirror(kernels, KV, kv);
    const k = Float32Array.from({ length: n * R * w }, (_, i) => Math.sin(i / 3));
    const v = Float32Array.from({ length: n * R * w }, (_, i) => Math.cos(i / 5));
    const blocks = (x: Float32Array) => Array.from({ length: n }, (_, b) => tf.tensor2d(x.subarray(b * R * w, (b + 1) * R * w), [R, w]));
    const kt = blocks(k);
    const vt = blocks(v);
    const q = Float32Array.from({ length: H * D }, (_, i) => (i % 5) - 2);
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const apart = kernels.attention(q, kt.map((t) => mirror.chunk(t, true)), vt.map((t) => mirror.chunk(t)), 1, Uint8Array.of(1), shape, true);
    const own = kernels.storedBytes;
    const kc = mirror.layerChunks(kt, true);
    const vc = mirror.layerChunks(vt);
    expect(kc.map((c) => c.stride)).toEqual([...Array<number>(8).fill(8 * R), undefined, undefined]);
    expect(kc.every((c) => c.grouped === (kv === 'f16' ? true : undefined)) && vc.every((c) => c.grouped === undefined)).toBe(true);
    // As the keys kept by rows give it.
    const rows = new KvMirror(kernels, KV, kv);
    expect(Array.from(kernels.attention(q, kt.map((t) => rows.chunk(t)), vt.map((t) => rows.chunk(t)), 1, Uint8Array.of(1), shape).out)).toEqual(Array.from(apart.out));
    rows.clear();
    const joined = kernels.attention(q, kc, vc, 1, Uint8Array.of(1), shape, true);
    expect(Array.from(joined.out)).toEqual(Array.from(apart.out));
    expect(Array.from(joined.last!)).toEqual(Array.from(apart.last!));
    expect(mirror.layerChunks(kt, true)).toEqual(kc); // joined once
    mirror.sweep(); // the blocks' own copies of the joined eight are freed now
    expect(kernels.storedBytes).toBeLessThan(2 * own);
    kt.slice(0, 3).forEach((t) => t.dispose());
    vt.slice(0, 3).forEach((t) => t.dispose());
    mirror.sweep();
    expect(mirror.layerChunks(kt.slice(3), true).map((c) => c.stride)).toEqual([...Array<number>(5).fill(8 * R), undefined, undefined]); // five of eight still read it
    kt.slice(3, 7).forEach((t) => t.dispose());
    vt.slice(3, 7).forEach((t) => t.dispose());
    mirror.sweep(); // one block of eight left: it gets a copy of its own, the joined chunk goes
    const rest = [mirror.layerChunks(kt.slice(7), true), mirror.layerChunks(vt.slice(7))];
    expect(rest[0]!.map((c) => c.stride)).toEqual([undefined, undefined, undefined]);
    const alone = new KvMirror(kernels, KV, kv);
    expect(Array.from(kernels.attention(q, rest[0]!, rest[1]!, 1, Uint8Array.of(1), shape).out)).toEqual(Array.from(kernels.attention(q, kt.slice(7).map((t) => alone.chunk(t, true)), vt.slice(7).map((t) => alone.chunk(t)), 1, Uint8Array.of(1), shape).out));
    alone.clear();
    tf.dispose([...kt.slice(7), ...vt.slice(7)]);
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(kernels.storedBytes).toBe(0);
  });

  it.each(['f32', 'f16', 'q8'] as const)('joins a filled block\'s %s row chunks into one tensor whose copy is joined from theirs: the same stored values as a store of it, the row copies freed once the rows go', (kv) => {
    const kernels = new MatmulKernels();
    const KV = 3, D = 8, R = 6;
    const w = KV * D;
    const mirror = new KvMirror(kernels, KV, kv);
    const row = (i: number, seed: number) => tf.tensor2d(Float32Array.from({ length: w }, (_, x) => Math.sin(seed + i * w + x)), [1, w]);
    for (const keys of [true, false]) {
      const rows = Array.from({ length: R }, (_, i) => row(i, keys ? 0 : 100));
      rows.forEach((t) => mirror.chunk(t, keys)); // as the fused layers' adopted copies
      const before = mirror.size;
      const joined = mirror.joinRows(rows, keys);
      expect(joined.shape).toEqual([R, w]);
      expect(mirror.size).toBe(before + 1); // joined's copy made here, not at its first use
      const copy = mirror.chunk(joined, keys);
      expect(copy.rows).toBe(R);
      expect(copy.grouped === true).toBe(keys && kv === 'f16');
      const fresh = new KvMirror(kernels, KV, kv);
      const stored = fresh.chunk(joined, keys);
      expect(Array.from(kernels.readChunk(copy, w))).toEqual(Array.from(kernels.readChunk(stored, w)));
      fresh.clear();
      rows.forEach((t) => t.dispose());
      mirror.sweep();
      expect(mirror.size).toBe(before - R + 1);
      joined.dispose();
      mirror.sweep();
    }
    // Rows without copies (another path made them): a plain concat, stored at its first use.
    const bare = Array.from({ length: R }, (_, i) => row(i, 7));
    const joined = mirror.joinRows(bare, true);
    expect(mirror.size).toBe(0);
    const want = tf.concat(bare, 0);
    expect(Array.from(joined.dataSync())).toEqual(Array.from(want.dataSync()));
    tf.dispose([...bare, joined, want]);
    expect(kernels.storedBytes).toBe(0);
  });

  it('gives a list the copies of its own tensors step after step: lists grown, changed in place, and lists whose blocks were joined since', () => {
    const { kernels, mirror, w, block, expectOwn } = listFixture();
    // A step's list, then the next step's: the same blocks and one more row.
    const list = [block(4, 0), block(1, 1)];
    expectOwn(list, mirror.layerChunks(list));
    const grown = [...list, block(1, 2)];
    expectOwn(grown, mirror.layerChunks(grown));
    // The caller's own array changed in place: its second chunk swapped for another tensor.
    const swapped = block(1, 3);
    grown[1] = swapped;
    const read = mirror.layerChunks(grown);
    expectOwn(grown, read);
    expect(Array.from(kernels.readChunk(read[1]!, w))).toEqual(Array.from(swapped.dataSync()));
    // A list read before its blocks were joined (eight blocks of 4 rows, by another list) gets the joined views after.
    const blocks = Array.from({ length: 8 }, (_, i) => block(4, 10 + i));
    const tail = blocks.slice(3, 5);
    const before = mirror.layerChunks(tail);
    expect(before[0]!.stride).toBeUndefined();
    const joined = mirror.layerChunks(blocks);
    expect(joined.every((c) => c.stride === 32)).toBe(true);
    const after = mirror.layerChunks(tail);
    expect(after[0]).toBe(joined[3]);
    expectOwn(tail, after);
    tf.dispose([...list, ...blocks, grown[2]!, swapped]);
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(kernels.storedBytes).toBe(0);
  });

  it('grows a list handed out in an earlier forward call in place, and never one handed out in the same call', () => {
    const { mirror, block, expectOwn } = listFixture();
    const prefix = [block(4, 0), block(1, 1)];
    mirror.sweepIfDue();
    const first = mirror.layerChunks(prefix);
    // The same call: a fork's longer list must not change the array the shorter one was given.
    const fork = [...prefix, block(1, 2)];
    const forked = mirror.layerChunks(fork);
    expect(forked).not.toBe(first);
    expectOwn(prefix, first);
    expectOwn(fork, forked);
    // The next call: the last list's arrays grow in place (no copy), and still read right.
    mirror.sweepIfDue();
    const next = [...fork, block(1, 3)];
    const grown = mirror.layerChunks(next);
    expect(grown).toBe(forked);
    expectOwn(next, grown);
    // The caller's array changed in place since: not a prefix any more, so a fresh list.
    mirror.sweepIfDue();
    const swapped = block(1, 4);
    next[2] = swapped;
    const again = mirror.layerChunks(next);
    expect(again).not.toBe(grown);
    expectOwn(next, again);
    tf.dispose([...fork, next[3]!, swapped]);
    mirror.sweep();
    expect(mirror.size).toBe(0);
  });

  it('joins eight blocks that arrive over several steps, as when the list came whole', () => {
    const { kernels, mirror, block } = listFixture();
    // A one-row chunk, then seven blocks a step apart: no run of eight yet.
    const list = [block(1, 0)];
    for (let b = 0; b < 7; b++) {
      list.push(block(4, 10 + b));
      expect(mirror.layerChunks(list).every((c) => c.stride === undefined)).toBe(true);
    }
    // The eighth block in a row: the seven read in earlier steps join with it.
    list.push(block(4, 20));
    const joined = mirror.layerChunks(list);
    expect(joined.map((c) => c.stride)).toEqual([undefined, ...Array<number>(8).fill(32)]);
    list.push(block(4, 21));
    expect(mirror.layerChunks(list).map((c) => c.stride)).toEqual([undefined, ...Array<number>(8).fill(32), undefined]);
    tf.dispose(list);
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(kernels.storedBytes).toBe(0);
  });

  it("sweeps at every forward's call while it holds few copies, else at least every eighth", () => {
    const kernels = new MatmulKernels();
    const mirror = new KvMirror(kernels, 1);
    const rows = (n: number) => Array.from({ length: n }, (_, i) => tf.tensor2d([i, i + 1], [1, 2]));
    const few = rows(3);
    few.forEach((t) => mirror.chunk(t));
    few[0]!.dispose();
    mirror.sweepIfDue();
    expect(mirror.size).toBe(2);
    const many = rows(600);
    many.forEach((t) => mirror.chunk(t));
    tf.dispose(many.slice(0, 100));
    let calls = 0;
    while (mirror.size > 502 && calls < 20) {
      mirror.sweepIfDue();
      calls++;
    }
    expect(mirror.size).toBe(502);
    expect(calls).toBeGreaterThan(1);
    expect(calls).toBeLessThanOrEqual(8);
    tf.dispose([...few, ...many]);
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(kernels.storedBytes).toBe(0);
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
    mirror.sweep(); // the live piece holds 2 of 6 rows: it gets a copy of its own, the whole's goes
    const rehomed = mirror.chunk(pieces[1]!);
    expect(rehomed.stride).toBeUndefined();
    expect(kernels.readChunk(rehomed, w)[0]).toBeCloseTo(Math.sin(4 * w), 6);
    const fresh = kernels.store(pieces[1]!.dataSync() as Float32Array, 2, KV);
    expect(Array.from(kernels.readChunk(rehomed, w))).toEqual(Array.from(kernels.readChunk(fresh, w)));
    kernels.free(fresh);
    pieces[1]!.dispose();
    mirror.sweep();
    expect(mirror.size).toBe(0);
    expect(copy.stride).toBeUndefined();
    expect(kernels.storedBytes).toBe(0);
  });
});
