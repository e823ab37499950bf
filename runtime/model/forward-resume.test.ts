/**
 * LazyLLM's revival in the forward (`resume`): tokens pruned at a layer in one call come
 * back in a later call from their hidden state at that layer (the Aux Cache), not from
 * layer 0. Checked against the reference forward run from scratch on the same token sets:
 * at each layer the tokens live there, where the tokens computed in the first call do not
 * see the ones revived in the second (they ran before it), and everything else is causal.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relErr } from '../../test/fixtures/numeric.js';
import { KvCache } from '../../test/fixtures/kv-cache.js';
import { initBackend } from '../backend.js';
import { forward } from './forward.js';
import { randomModel } from './random.js';
import { referenceForward } from './reference.js';
import type { ForwardSequenceResult, LoadedModel, ResumeStep } from './types.js';

let model: LoadedModel;
let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
  model = randomModel({ numLayers: 6, numHeads: 4, numKvHeads: 2 }, 33);
});
afterAll(() => {
  model.dispose();
  expect(tf.memory().numTensors).toBe(baseline);
});

const L = 6;
const ids = Array.from({ length: 14 }, (_, i) => (i * 17 + 5) % 64);
const next = [9, 41];
const K1 = [0, 1, 3, 4, 6, 8, 9, 11, 12, 13]; // kept from layer 2 (the rest parked there)
const K2 = [0, 3, 6, 9, 12, 13]; // kept from layer 4
const free = (r: ForwardSequenceResult) => tf.dispose([...r.newKv, ...(r.resumedKv ?? [])].flatMap((e) => (e ? [e.k, e.v] : [])));

/** First call: the prompt pruned at layers 2 and 4 with its pruned hidden states, KV cached; the positions of each layer's rows. */
function firstCall(): { cache: KvCache; parked: Map<number, { layer: number; hidden: Float32Array }>; pastPositions: number[][] } {
  const [r] = forward(model, [{ ids, prune: [{ fromLayer: 2, keep: K1 }, { fromLayer: 4, keep: K2 }], returnPrunedHidden: true, logits: 'none' }]);
  const parked = new Map<number, { layer: number; hidden: Float32Array }>();
  for (const p of r!.prunedHidden!) p.tokenIndices.forEach((i, j) => parked.set(i, { layer: p.fromLayer, hidden: p.hidden[j]! }));
  const pastPositions = r!.newKv.map((e) => e!.tokenIndices.slice());
  const cache = new KvCache(L);
  cache.append(r!.newKv);
  return { cache, parked, pastPositions };
}

function steps(parked: Map<number, { layer: number; hidden: Float32Array }>, revive: Record<number, number[]>): ResumeStep[] {
  return Object.entries(revive).map(([layer, positions]) => ({ fromLayer: Number(layer), positions, hidden: positions.map((p) => parked.get(p)!.hidden) }));
}

/** The reference on prompt + next with the revived tokens live from their layer on, unseen by the prompt tokens that ran before them. */
function reference(revive: Record<number, number[]>) {
  const all = [...ids, ...next];
  const newIdx = next.map((_, i) => ids.length + i);
  const from = new Map(Object.entries(revive).flatMap(([layer, ps]) => ps.map((p) => [p, Number(layer)] as const)));
  const revived = [...from.keys()];
  const keep = (k: number[]) => [...new Set([...k, ...revived, ...newIdx])].sort((a, b) => a - b);
  return referenceForward(model, all, {
    prune: [
      { fromLayer: 2, keep: keep(K1) },
      { fromLayer: 4, keep: keep(K2) },
    ],
    // A prompt token ran this layer in the first call unless it was revived at or below it.
    blind: (layer, query, key) => query < ids.length && !(layer >= (from.get(query) ?? L)) && layer >= (from.get(key) ?? L),
  });
}

describe('forward resume (LazyLLM Aux Cache revival)', () => {
  it('revived tokens resumed from their parked hidden states equal the reference on the same token sets', () => {
    const { cache, parked, pastPositions } = firstCall();
    expect([...parked.entries()].map(([p, e]) => [p, e.layer]).sort((a, b) => a[0]! - b[0]!)).toEqual([
      [1, 4],
      [2, 2],
      [4, 4],
      [5, 2],
      [7, 2],
      [8, 4],
      [10, 2],
      [11, 4],
    ]);
    const revive = { 2: [2, 7], 4: [4, 11] };
    const [r] = forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: steps(parked, revive), logits: 'all' }]);
    const ref = reference(revive);
    expect(r!.resumed).toEqual([
      { fromLayer: 2, positions: [2, 7] },
      { fromLayer: 4, positions: [4, 11] },
    ]);
    r!.logits.forEach((row, i) => expect(relErr(row, ref.logits.at(-2 + i)!)).toBeLessThan(1e-4));
    // KV rows of the revived tokens: layers 2–3 the ones from 2, from 4 on all four, by position.
    expect(r!.resumedKv!.map((e) => e?.positions ?? null)).toEqual([null, null, [2, 7], [2, 7], [2, 4, 7, 11], [2, 4, 7, 11]]);
    free(r!);
    cache.dispose();
  });

  it('a resumed token sees only the past before it: reviving a late token changes nothing the early one computes', () => {
    const { cache, parked, pastPositions } = firstCall();
    const [a] = forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: steps(parked, { 2: [2] }) }]);
    const [b] = forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: steps(parked, { 2: [2, 10] }) }]);
    // Token 2's keys at every layer are the same whether or not 10 (after it) came back too.
    for (let l = 2; l < L; l++) {
      const ka = a!.resumedKv![l]!.k.dataSync() as Float32Array;
      const kb = (b!.resumedKv![l]!.k.dataSync() as Float32Array).slice(0, ka.length);
      expect(relErr(kb, ka)).toBeLessThan(1e-6);
    }
    [a, b].forEach((r) => free(r!));
    cache.dispose();
  });

  it('reads past rows in any order: a shuffled cache with its positions gives the same result', () => {
    const { cache, parked, pastPositions } = firstCall();
    const past = cache.past();
    const shuffled = past.map((layer, l) => {
      const n = pastPositions[l]!.length;
      const perm = Array.from({ length: n }, (_, i) => (2 * n + 1 - i) % n); // reversed and rotated
      return { perm, k: [tf.gather(layer.k[0]!, perm) as tf.Tensor2D], v: [tf.gather(layer.v[0]!, perm) as tf.Tensor2D] };
    });
    const revive = { 2: [2, 7], 4: [4, 11] };
    const [a] = forward(model, [{ ids: next, past, pastPositions, resume: steps(parked, revive) }]);
    const [b] = forward(model, [
      {
        ids: next,
        past: shuffled.map(({ k, v }) => ({ k, v })),
        pastPositions: shuffled.map(({ perm }, l) => perm.map((i) => pastPositions[l]![i]!)),
        resume: steps(parked, revive),
      },
    ]);
    expect(relErr(b!.logits[0]!, a!.logits[0]!)).toBeLessThan(1e-5);
    [a, b].forEach((r) => free(r!));
    tf.dispose(shuffled.flatMap(({ k, v }) => [...k, ...v]));
    cache.dispose();
  });

  it('select picks the parked tokens among the last token’s top-ranked keys, as the reference attention ranks them', () => {
    const { cache, parked, pastPositions } = firstCall();
    const at2 = [...parked].filter(([, e]) => e.layer === 2).map(([p]) => p).sort((a, b) => a - b);
    const rank = 9;
    const [r] = forward(model, [
      { ids: next, past: cache.past(), pastPositions, resume: [{ fromLayer: 2, positions: at2, hidden: at2.map((p) => parked.get(p)!.hidden), select: { rank, max: 2 } }] },
    ]);
    // Layer 1 in the reference: every token live (nothing is pruned before layer 2).
    const att = referenceForward(model, [...ids, ...next], { layers: [0, 1] }).attention[1]!;
    const ranked = Array.from(att.keys()).sort((a, b) => att[b]! - att[a]! || a - b);
    const expected = ranked
      .slice(0, rank)
      .filter((i) => at2.includes(i))
      .slice(0, 2)
      .sort((a, b) => a - b);
    expect(r!.resumed).toEqual([{ fromLayer: 2, positions: expected }]);
    const ref = reference({ 2: expected });
    expect(relErr(r!.logits[0]!, ref.logits.at(-1)!)).toBeLessThan(1e-4);
    free(r!);
    cache.dispose();
  });

  it('resuming nothing equals the plain pruned continuation, and bad steps are refused by name', () => {
    const { cache, parked, pastPositions } = firstCall();
    const [a] = forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: steps(parked, { 2: [] }) }]);
    const [b] = forward(model, [{ ids: next, past: cache.past() }]);
    expect(relErr(a!.logits[0]!, b!.logits[0]!)).toBeLessThan(1e-6);
    [a, b].forEach((r) => free(r!));
    const hidden = [parked.get(2)!.hidden];
    expect(() => forward(model, [{ ids: next, past: cache.past(), resume: [{ fromLayer: 2, positions: [2], hidden }] }])).toThrow(/pastPositions/);
    expect(() => forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: [{ fromLayer: 2, positions: [20], hidden }] }])).toThrow(/before the new tokens/);
    expect(() => forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: [{ fromLayer: 2, positions: [2], hidden: [new Float32Array(3)] }] }])).toThrow(/hidden state/);
    expect(() =>
      forward(model, [{ ids: next, past: cache.past(), pastPositions, resume: [{ fromLayer: 2, positions: [2], hidden, select: { rank: 3, max: 1 } }] }], { layers: [2, 3] }),
    ).toThrow(/layer run before it/);
    cache.dispose();
  });
});
