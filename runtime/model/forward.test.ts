import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relErr } from '../../test/fixtures/numeric.js';
import { initBackend } from '../backend.js';
import { forward } from './forward.js';
import { KvCache } from '../../test/fixtures/kv-cache.js';
import { randomModel } from './random.js';
import { referenceForward } from './reference.js';
import type { LoadedModel, ModelConfig } from './types.js';

function expectClose(a: Float32Array[], b: Float32Array[], tol = 1e-4): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < b.length; i++) expect(relErr(a[i]!, b[i]!)).toBeLessThan(tol);
}
function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}
const ids = [3, 17, 42, 5, 9, 33, 60];

const configs: [string, Partial<ModelConfig>][] = [
  ['MHA untied', {}],
  ['GQA tied', { numHeads: 4, numKvHeads: 2, tieWordEmbeddings: true }],
  ['GQA qkv+o bias', { numHeads: 4, numKvHeads: 1, qkvBias: true, oBias: true, numLayers: 3 }],
  ['llama3 rope', { ropeTheta: 500000, ropeScaling: { ropeType: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 } }],
  ['headDim != hidden/heads', { hiddenSize: 48, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 64 }],
];

let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
});
afterAll(() => {
  expect(tf.memory().numTensors).toBe(baseline);
});

describe.each(configs)('forward vs reference: %s', (_name, cfg) => {
  let model: LoadedModel;
  beforeAll(() => {
    model = randomModel(cfg, 11);
  });
  afterAll(() => model.dispose());

  it('gives the reference logits for every position', () => {
    const ref = referenceForward(model, ids);
    const [r] = forward(model, [{ ids, logits: 'all', returnHidden: true }]);
    expectClose(r!.logits, ref.logits);
    expectClose(r!.hidden!, ref.hidden);
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  });

  it('gives the reference logits on a prompt long enough for the unfused (prefill) ops', () => {
    const long = Array.from({ length: 40 }, (_, i) => (i * 13 + 5) % model.config.vocabSize);
    const ref = referenceForward(model, long);
    const [r] = forward(model, [{ ids: long, logits: 'all' }]);
    expectClose(r!.logits, ref.logits);
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  });

  it('KV-cached greedy decode equals full recompute', () => {
    const cache = new KvCache(model.config.numLayers, 3);
    const seq = ids.slice(0, 3);
    let [r] = forward(model, [{ ids: seq }]);
    cache.append(r!.newKv);
    const out: number[] = [];
    for (let step = 0; step < 6; step++) {
      const next = argmax(r!.logits[0]!);
      out.push(next);
      const full = referenceForward(model, [...seq, ...out]);
      expect(relErr(r!.logits[0]!, referenceForward(model, [...seq, ...out.slice(0, -1)]).logits.at(-1)!)).toBeLessThan(1e-4);
      expect(argmax(full.logits.at(-2)!)).toBe(next);
      [r] = forward(model, [{ ids: [next], past: cache.past() }]);
      cache.append(r!.newKv);
    }
    expect(cache.length()).toBe(seq.length + 6);
    cache.dispose();
  });
});

describe('batching, chunking, shaping', () => {
  let model: LoadedModel;
  beforeAll(() => {
    model = randomModel({ numHeads: 4, numKvHeads: 2, numLayers: 3, qkvBias: true }, 5);
  });
  afterAll(() => model.dispose());

  function prefill(prompt: number[]): KvCache {
    const cache = new KvCache(model.config.numLayers);
    const [r] = forward(model, [{ ids: prompt, logits: 'none' }]);
    cache.append(r!.newKv);
    return cache;
  }

  it('batched decode of sequences of different lengths equals one at a time', () => {
    const prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14]];
    const caches = prompts.map(prefill);
    const next = [20, 21, 22, 23];
    const batched = forward(model, prompts.map((_, i) => ({ ids: [next[i]!], past: caches[i]!.past(), returnAttention: true })));
    prompts.forEach((p, i) => {
      const ref = referenceForward(model, [...p, next[i]!]);
      expectClose(batched[i]!.logits, [ref.logits.at(-1)!]);
      const alone = forward(model, [{ ids: [next[i]!], past: caches[i]!.past() }])[0]!;
      expectClose(batched[i]!.logits, alone.logits);
      for (const l of [0, 1, 2]) expectClose([batched[i]!.attention![l]!], [ref.attention[l]!]);
      tf.dispose(alone.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
      caches[i]!.append(batched[i]!.newKv);
      expect(caches[i]!.length()).toBe(p.length + 1);
      caches[i]!.dispose();
    });
  });

  it('a mixed batch (prefill chunk + decode steps) equals the reference', () => {
    const c1 = prefill([1, 2, 3]);
    const c2 = prefill([7, 8]);
    const res = forward(model, [
      { ids: [4, 5, 6], past: c1.past(), logits: 'all' },
      { ids: [9], past: c2.past() },
      { ids: [30, 31, 32, 33] },
    ]);
    expectClose(res[0]!.logits, referenceForward(model, [1, 2, 3, 4, 5, 6]).logits.slice(3));
    expectClose(res[1]!.logits, [referenceForward(model, [7, 8, 9]).logits.at(-1)!]);
    expectClose(res[2]!.logits, [referenceForward(model, [30, 31, 32, 33]).logits.at(-1)!]);
    for (const r of res) tf.dispose(r.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
    c1.dispose();
    c2.dispose();
  });

  it('chunked prefill equals one-shot prefill', () => {
    const cache = new KvCache(model.config.numLayers);
    let last: Float32Array | undefined;
    for (const chunk of [ids.slice(0, 2), ids.slice(2, 5), ids.slice(5)]) {
      const [r] = forward(model, [{ ids: chunk, past: cache.past() }]);
      cache.append(r!.newKv);
      last = r!.logits[0];
    }
    expectClose([last!], [referenceForward(model, ids).logits.at(-1)!]);
    cache.dispose();
  });

  it('runs a subset of layers like the reference does', () => {
    const layers = [0, 2];
    const [r] = forward(model, [{ ids, logits: 'all' }], { layers });
    expect(r!.newKv[1]).toBeNull();
    expectClose(r!.logits, referenceForward(model, ids, { layers }).logits);
    // Decode on top of a layer-skipped cache keeps matching the reference.
    const cache = new KvCache(model.config.numLayers);
    cache.append(r!.newKv);
    const [d] = forward(model, [{ ids: [8], past: cache.past() }], { layers });
    expectClose(d!.logits, [referenceForward(model, [...ids, 8], { layers }).logits.at(-1)!]);
    cache.append(d!.newKv);
    cache.dispose();
  });

  it('verifies a tree of drafts in one forward like each branch run alone', () => {
    const prompt = [1, 2, 3, 4];
    const cache = prefill(prompt);
    // Tree: root 10 → {11 → 13, 12}; flattened [10, 11, 12, 13] at depths [0, 1, 1, 2].
    const draft = [10, 11, 12, 13];
    const parent = [-1, 0, 0, 1];
    const depth = [0, 1, 1, 2];
    const treeMask = draft.map((_, i) =>
      draft.map((_, j) => {
        for (let a = i; a !== -1; a = parent[a]!) if (a === j) return true;
        return false;
      }),
    );
    const [r] = forward(model, [
      { ids: draft, past: cache.past(), treeMask, positions: depth.map((d) => prompt.length + d), logits: 'all' },
    ]);
    draft.forEach((_, i) => {
      const path: number[] = [];
      for (let a = i; a !== -1; a = parent[a]!) path.unshift(draft[a]!);
      const ref = referenceForward(model, [...prompt, ...path]);
      expectClose([r!.logits[i]!], [ref.logits.at(-1)!]);
    });
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
    cache.dispose();
  });

  it('prune with keep = all equals no pruning', () => {
    const all = ids.map((_, i) => i);
    const [a] = forward(model, [{ ids, prune: [{ fromLayer: 1, keep: all }] }]);
    const [b] = forward(model, [{ ids }]);
    expectClose(a!.logits, b!.logits, 1e-6);
    tf.dispose([...a!.newKv, ...b!.newKv].flatMap((e) => (e ? [e.k, e.v] : [])));
  });

  it('pruned prefill equals the reference pruned computation, and decode continues on it', () => {
    const prune = [
      { fromLayer: 1, keep: [0, 2, 3, 5, 6] },
      { fromLayer: 2, keep: [0, 3, 6] },
    ];
    const [r] = forward(model, [{ ids, prune, logits: 'all', returnPrunedHidden: true, returnAttention: true }]);
    const ref = referenceForward(model, ids, { prune });
    expect(r!.logitTokenIndices).toEqual([0, 3, 6]);
    expectClose(r!.logits, ref.logits);
    expect(r!.newKv[0]!.tokenIndices).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(r!.newKv[2]!.tokenIndices).toEqual([0, 3, 6]);
    expect(r!.newKv[2]!.k.shape).toEqual([3, model.config.numKvHeads * model.config.headDim]);
    expect(r!.prunedHidden!.map((p) => p.tokenIndices)).toEqual([[1, 4], [2, 5]]);
    expect(r!.prunedHidden![0]!.hidden[0]!.length).toBe(model.config.hiddenSize);
    for (const l of [0, 1, 2]) expectClose([r!.attention![l]!], [ref.attention[l]!]);
    // Decode step over the pruned cache: the reference prunes the same tokens and keeps the new one.
    const cache = new KvCache(model.config.numLayers);
    cache.append(r!.newKv);
    const [d] = forward(model, [{ ids: [8], past: cache.past(), positions: [ids.length] }]);
    const refD = referenceForward(model, [...ids, 8], {
      prune: prune.map((p) => ({ fromLayer: p.fromLayer, keep: [...p.keep, ids.length] })),
    });
    expectClose(d!.logits, [refD.logits.at(-1)!]);
    cache.append(d!.newKv);
    cache.dispose();
  });

  it('prunes one sequence of a mixed batch without touching the others', () => {
    const c1 = prefill([1, 2, 3]);
    const prune = [{ fromLayer: 1, keep: [1, 4, 6] }];
    const batch = forward(model, [
      { ids: [9], past: c1.past() },
      { ids, prune, logits: 'all', returnPrunedHidden: true },
      { ids: [30, 31, 32], logits: 'all' },
    ]);
    expectClose(batch[0]!.logits, [referenceForward(model, [1, 2, 3, 9]).logits.at(-1)!]);
    expectClose(batch[1]!.logits, referenceForward(model, ids, { prune }).logits);
    expectClose(batch[2]!.logits, referenceForward(model, [30, 31, 32]).logits);
    const [alone] = forward(model, [{ ids, prune, returnPrunedHidden: true }]);
    expectClose(batch[1]!.prunedHidden![0]!.hidden, alone!.prunedHidden![0]!.hidden, 1e-5);
    for (const r of [...batch, alone!]) tf.dispose(r.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
    c1.dispose();
  });

  it('returns attention rows that sum to 1', () => {
    const cache = prefill([1, 2, 3, 4, 5]);
    const [r] = forward(model, [{ ids: [6, 7], past: cache.past(), returnAttention: true }]);
    for (const row of r!.attention!) {
      expect(row!.length).toBe(7);
      expect(row!.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    }
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
    cache.dispose();
  });

  it("refuses a bad past chunk naming the layer, also in lists it passed before (grown, or changed in place), and counts a grown list's rows", () => {
    const cache = prefill([1, 2, 3, 4]);
    const past = cache.past();
    const kvDim = model.config.numKvHeads * model.config.headDim;
    const [a] = forward(model, [{ ids: [5], past }]);
    const want = referenceForward(model, [1, 2, 3, 4, 5]).logits.at(-1)!;
    expect(relErr(a!.logits[0]!, want)).toBeLessThan(1e-4);
    // The same lists grown by this step's rows: position 5 comes from their row count.
    past.forEach((layer, l) => {
      layer.k.push(a!.newKv[l]!.k);
      layer.v.push(a!.newKv[l]!.v);
    });
    const [b] = forward(model, [{ ids: [6], past }]);
    expect(relErr(b!.logits[0]!, referenceForward(model, [1, 2, 3, 4, 5, 6]).logits.at(-1)!)).toBeLessThan(1e-4);
    // Grown by a chunk of the wrong width at layer 1: refused, naming it.
    const wide = tf.zeros([1, kvDim + 1]) as tf.Tensor2D;
    past[1]!.k.push(wide);
    past[1]!.v.push(wide);
    expect(() => forward(model, [{ ids: [6], past }])).toThrow(/seqs\[0\]\.past\[1\].*chunk 2 must be two/);
    past[1]!.k.pop();
    past[1]!.v.pop();
    // A chunk the last call passed, swapped in place for one of the wrong width.
    const kept = past[2]!.v[0]!;
    past[2]!.v[0] = tf.zeros([kept.shape[0] + 1, kvDim]) as tf.Tensor2D;
    expect(() => forward(model, [{ ids: [6], past }])).toThrow(/seqs\[0\]\.past\[2\].*chunk 0 must be two/);
    past[2]!.v[0]!.dispose();
    past[2]!.v[0] = kept;
    const [c] = forward(model, [{ ids: [6], past }]);
    expect(Array.from(c!.logits[0]!)).toEqual(Array.from(b!.logits[0]!));
    wide.dispose();
    for (const r of [b!, c!]) tf.dispose(r.newKv.flatMap((e) => [e!.k, e!.v]));
    tf.dispose(past.flatMap((layer) => [...layer.k, ...layer.v]));
  });

  it('rejects sequences past a sliding window', () => {
    const m = randomModel({ slidingWindow: 4 }, 1);
    expect(() => forward(m, [{ ids: [1, 2, 3, 4, 5] }])).toThrow(/sliding-window/);
    m.dispose();
  });
});
