/**
 * LazyLLM's in-forward selection (`prune: [{ fromLayer, keepTop }]`): the forward picks the
 * tokens from the previous run layer's last-token attention inside the same call. Checked
 * against the reference forward run on the token sets the same rule picks from the
 * reference's own attention, alone, batched beside a plain sequence, and on a second chunk
 * over a cached first one (chunked prefill).
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relErr } from '../../test/fixtures/numeric.js';
import { initBackend } from '../backend.js';
import { topKeep } from '../stages/lazy-schedule.js';
import { forward } from './forward.js';
import { KvCache } from '../../test/fixtures/kv-cache.js';
import { randomModel } from './random.js';
import { referenceForward } from './reference.js';
import type { ForwardSequenceResult, LoadedModel } from './types.js';

let model: LoadedModel;
let baseline = 0;
beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
  model = randomModel({ numLayers: 5, numHeads: 4, numKvHeads: 2 }, 21);
});
afterAll(() => {
  model.dispose();
  expect(tf.memory().numTensors).toBe(baseline);
});

const ids = Array.from({ length: 20 }, (_, i) => (i * 11 + 3) % 64);
const free = (r: ForwardSequenceResult) => tf.dispose(r.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));

/**
 * The reference's own LazyLLM choice: for each step, score with the last token's attention
 * at the layer before it (over the tokens live there), keep the top `count` of `candidates`.
 */
function referenceKeeps(all: number[], steps: { fromLayer: number; keepTop: number }[], candidates: number[], fixed: number[] = []): { fromLayer: number; keep: number[] }[] {
  const out: { fromLayer: number; keep: number[] }[] = [];
  let live = candidates;
  for (const step of steps) {
    const layers = Array.from({ length: step.fromLayer }, (_, l) => l);
    const ref = referenceForward(model, all, { layers, prune: out });
    const att = ref.attention[step.fromLayer - 1]!;
    const scores: number[] = [];
    ref.tokenIndices.forEach((i, a) => (scores[i] = att[a]!));
    live = topKeep(scores, live, step.keepTop);
    out.push({ fromLayer: step.fromLayer, keep: [...fixed, ...live] });
  }
  return out;
}

describe('forward prune keepTop (LazyLLM selection inside the forward)', () => {
  const steps = [
    { fromLayer: 2, keepTop: 12 },
    { fromLayer: 4, keepTop: 5 },
  ];

  it('equals the reference on the token sets chosen from the reference attention', () => {
    const expected = referenceKeeps(ids, steps, ids.map((_, i) => i));
    const ref = referenceForward(model, ids, { prune: expected });
    const [r] = forward(model, [{ ids, prune: steps, logits: 'all' }]);
    expect(r!.logitTokenIndices).toEqual(expected[1]!.keep);
    expect(ref.tokenIndices).toEqual(expected[1]!.keep);
    r!.logits.forEach((row, i) => expect(relErr(row, ref.logits[i]!)).toBeLessThan(1e-4));
    // KV rows: every token up to layer 1, the first keep set at 2–3, the second from 4 on.
    expect(r!.newKv.map((e) => e!.tokenIndices.length)).toEqual([20, 20, 12, 12, 5]);
    free(r!);
  });

  it('prunes per sequence inside one batched forward', () => {
    const other = ids.slice(0, 9).reverse();
    const [alone] = forward(model, [{ ids, prune: steps, logits: 'last' }]);
    const [plainAlone] = forward(model, [{ ids: other }]);
    const [a, b] = forward(model, [{ ids, prune: steps }, { ids: other }]);
    expect(relErr(a!.logits[0]!, alone!.logits[0]!)).toBeLessThan(1e-4);
    expect(relErr(b!.logits[0]!, plainAlone!.logits[0]!)).toBeLessThan(1e-4);
    expect(b!.newKv.map((e) => e!.tokenIndices.length)).toEqual([9, 9, 9, 9, 9]);
    [alone, plainAlone, a, b].forEach((r) => free(r!));
  });

  it('scores a second chunk over the cached first one (chunked prefill)', () => {
    const cache = new KvCache(model.config.numLayers);
    const [first] = forward(model, [{ ids: ids.slice(0, 8), logits: 'none' }]);
    cache.append(first!.newKv);
    const [second] = forward(model, [{ ids: ids.slice(8), past: cache.past(), prune: [{ fromLayer: 3, keepTop: 4 }] }]);
    const chunk = ids.slice(8).map((_, i) => 8 + i);
    const expected = referenceKeeps(ids, [{ fromLayer: 3, keepTop: 4 }], chunk, [0, 1, 2, 3, 4, 5, 6, 7]);
    const ref = referenceForward(model, ids, { prune: expected });
    expect(second!.newKv[3]!.tokenIndices.map((i) => i + 8)).toEqual(expected[0]!.keep.slice(8));
    expect(relErr(second!.logits[0]!, ref.logits.at(-1)!)).toBeLessThan(1e-4);
    free(second!);
    cache.dispose();
  });

  it('keepTop at least the live count keeps everything and equals no pruning', () => {
    const [a] = forward(model, [{ ids, prune: [{ fromLayer: 1, keepTop: ids.length }] }]);
    const [b] = forward(model, [{ ids }]);
    expect(relErr(a!.logits[0]!, b!.logits[0]!)).toBeLessThan(1e-6);
    [a, b].forEach((r) => free(r!));
  });

  it('refuses a keepTop step with no earlier layer to score with', () => {
    expect(() => forward(model, [{ ids, prune: [{ fromLayer: 2, keepTop: 3 }] }], { layers: [2, 3] })).toThrow(/needs a layer run before it/);
    expect(() => forward(model, [{ ids, prune: [{ fromLayer: 2, keepTop: 0 }] }])).toThrow(/positive integer/);
  });
});
