import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { initBackend } from '../backend.js';
import { BlockTable } from './block-table.js';
import { KvPool } from './pool.js';

const L = 2;
const D = 3;

/** KV rows that encode (token, position) so any mix-up shows in the values. */
function rows(tokens: number[], start: number): { k: tf.Tensor2D[]; v: tf.Tensor2D[] } {
  const make = (layer: number, sign: number) =>
    tf.tensor2d(
      tokens.flatMap((t, i) => Array.from({ length: D }, (_, d) => sign * (t * 1000 + (start + i) * 10 + layer + d / 10))),
      [tokens.length, D],
    );
  return {
    k: Array.from({ length: L }, (_, l) => make(l, 1)),
    v: Array.from({ length: L }, (_, l) => make(l, -1)),
  };
}

function appendIds(table: BlockTable, ids: number[]) {
  expect(table.reserve(ids.length)).toBe(true);
  const { k, v } = rows(ids, table.length);
  table.append(ids, k, v);
}

async function check(table: BlockTable, ids: number[]) {
  expect(table.tokens()).toEqual(ids);
  const past = table.past()!;
  const want = rows(ids, 0);
  for (let l = 0; l < L; l++) {
    const k = tf.concat(past[l]!.k, 0);
    const v = tf.concat(past[l]!.v, 0);
    expect(Array.from(await k.data())).toEqual(Array.from(await want.k[l]!.data()));
    expect(Array.from(await v.data())).toEqual(Array.from(await want.v[l]!.data()));
    k.dispose();
    v.dispose();
  }
  tf.dispose([...want.k, ...want.v]);
}

const seq = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);

describe('BlockTable and KvPool', () => {
  beforeAll(async () => {
    await initBackend();
  });

  it('refuses a budget that holds no whole block with a typed error naming the option', () => {
    expect(() => new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBytes: 10 })).toThrow(BadRequestError);
    expect(() => new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 0 })).toThrow(/kvBudgetBlocks/);
    expect(() => new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 2.5 })).toThrow(/kvBudgetBlocks/);
    expect(new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 3 }).numBlocks).toBe(3);
  });

  it('appends across blocks in chunks and single tokens, and frees everything', async () => {
    const base = tf.memory().numTensors;
    const pool = new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 8 });
    const t = new BlockTable(pool);
    const ids = seq(11, 5);
    appendIds(t, ids.slice(0, 6));
    for (const id of ids.slice(6)) appendIds(t, [id]);
    await check(t, ids);
    expect(t.blocks.length).toBe(3);
    expect(t.blocks[0]!.k[0]!.length).toBe(1); // full blocks are one tensor per layer
    t.release();
    expect(pool.stats()).toMatchObject({ used: 0, cached: 2 });
    pool.clearCache();
    expect(pool.stats()).toMatchObject({ used: 0, cached: 0, free: 8 });
    expect(tf.memory().numTensors).toBe(base);
  });

  it('shares a live partial block copy-on-write (fork) and both continue correctly', async () => {
    const base = tf.memory().numTensors;
    const pool = new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 8 });
    const a = new BlockTable(pool);
    const prompt = seq(6, 40);
    appendIds(a, prompt);
    const b = new BlockTable(pool);
    const adopted = b.adopt([...prompt, 99], 7);
    expect(adopted.tokens).toEqual(prompt);
    expect(adopted.sharedBlocks).toBe(2);
    expect(pool.stats().shared).toBe(2);
    appendIds(b, [99, 98]);
    appendIds(a, [77]);
    await check(a, [...prompt, 77]);
    await check(b, [...prompt, 99, 98]);
    expect(pool.stats().shared).toBe(1); // only the full first block is still shared
    a.release();
    b.release();
    pool.clearCache();
    expect(pool.stats().free).toBe(8);
    expect(tf.memory().numTensors).toBe(base);
  });

  it('reuses a finished prefix, copying the rows of a block matched in part', async () => {
    const base = tf.memory().numTensors;
    const pool = new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 8 });
    const a = new BlockTable(pool);
    appendIds(a, seq(10));
    a.release();
    const b = new BlockTable(pool);
    const ids = [...seq(6), 50, 51];
    const adopted = b.adopt(ids, ids.length - 1);
    expect(adopted.tokens).toEqual(seq(6));
    expect(adopted.sharedBlocks).toBe(1);
    appendIds(b, [50, 51]);
    await check(b, ids);
    // The whole prompt cached: the last token is still left to compute (its logits are needed).
    const c = new BlockTable(pool);
    expect(c.adopt(seq(8), 7).tokens).toEqual(seq(7));
    b.release();
    c.release();
    pool.clearCache();
    expect(tf.memory().numTensors).toBe(base);
  });

  it("past() kept up to date step by step equals the blocks' chunks: across seals, a fork's copy-on-write, a deduped block, a release", async () => {
    const base = tf.memory().numTensors;
    const pool = new KvPool({ numLayers: L, kvDim: D, blockSize: 4, budgetBlocks: 16 });
    /** What past() gave before it kept the full blocks' chunks: every block's lists in order. */
    const walk = (t: BlockTable) => Array.from({ length: L }, (_, l) => ({ k: t.blocks.flatMap((b) => b.k[l]!), v: t.blocks.flatMap((b) => b.v[l]!) }));
    const idsOf = (xs: readonly tf.Tensor[]) => xs.map((x) => x.id);
    const same = (t: BlockTable) => {
      const past = t.past()!;
      const want = walk(t);
      past.forEach((e, l) => {
        expect(idsOf(e.k)).toEqual(idsOf(want[l]!.k));
        expect(idsOf(e.v)).toEqual(idsOf(want[l]!.v));
        // A caller changing its lists in place does not change the next call's.
        e.k.length = 0;
        e.v.pop();
      });
    };
    const a = new BlockTable(pool);
    const ids = seq(7, 200);
    appendIds(a, ids.slice(0, 5));
    same(a);
    for (const id of ids.slice(5)) {
      appendIds(a, [id]);
      same(a);
    }
    // A fork of a's live partial block: b copies it on its first append, a keeps its own.
    const b = new BlockTable(pool);
    expect(b.adopt([...ids, 1], ids.length).tokens).toEqual(ids);
    same(b);
    for (const id of [300, 301, 302]) {
      appendIds(b, [id]);
      same(b);
      appendIds(a, [id + 100]);
      same(a);
    }
    await check(a, [...ids, 400, 401, 402]);
    await check(b, [...ids, 300, 301, 302]);
    // c computes a's first block again: sealing it swaps c's block for the canonical one.
    const c = new BlockTable(pool);
    appendIds(c, ids.slice(0, 2));
    same(c);
    appendIds(c, ids.slice(2, 4));
    expect(c.blocks[0]).toBe(a.blocks[0]);
    same(c);
    appendIds(c, [9]);
    same(c);
    await check(c, [...ids.slice(0, 4), 9]);
    // Released and used again: nothing of the old lists comes back.
    a.release();
    appendIds(a, [5, 6, 7, 8, 9]);
    same(a);
    await check(a, [5, 6, 7, 8, 9]);
    for (const t of [a, b, c]) t.release();
    pool.clearCache();
    expect(tf.memory().numTensors).toBe(base);
  });

  it('dedupes a block computed twice and evicts least recently used leaves first', () => {
    const pool = new KvPool({ numLayers: L, kvDim: D, blockSize: 2, budgetBlocks: 4 });
    const a = new BlockTable(pool);
    const b = new BlockTable(pool);
    appendIds(a, [1, 2]);
    appendIds(b, [1, 2]);
    expect(a.blocks[0]).toBe(b.blocks[0]);
    expect(pool.stats()).toMatchObject({ used: 1, shared: 1 });
    appendIds(a, [3, 4]);
    a.release();
    b.release();
    expect(pool.stats()).toMatchObject({ cached: 2, free: 2 });
    const c = new BlockTable(pool);
    expect(c.reserve(8)).toBe(true); // needs all four: evicts [3,4] before its parent [1,2]
    expect(pool.stats()).toMatchObject({ cached: 0, free: 0 });
    expect(c.reserve(10)).toBe(false);
    c.release();
    expect(pool.stats().free).toBe(4);
  });

  it('keeps a leaf cached over its parent while the leaf was used more recently', () => {
    const pool = new KvPool({ numLayers: L, kvDim: D, blockSize: 2, budgetBlocks: 3 });
    const a = new BlockTable(pool);
    appendIds(a, [1, 2, 3, 4]);
    a.release();
    const x = new BlockTable(pool);
    appendIds(x, [9, 9]);
    x.release();
    const c = new BlockTable(pool);
    expect(c.reserve(2)).toBe(true); // evicts the LRU leaf: [3,4]
    const d = new BlockTable(pool);
    expect(d.adopt([9, 9, 1], 2).tokens).toEqual([9, 9]);
    c.release();
    d.release();
  });
});
