/**
 * Skipped-layer decode with a skip adapter (runtime/adapters) in the batched scheduler:
 * lossy decode runs the kept layers on the adapted weights (a direct computation that
 * decodes on the adapted model gives the same tokens, and they differ from unadapted
 * decoding); self-speculative decode drafts on them and still gives plain greedy output
 * token for token, alone and batched; the adapted KV is never adopted by another
 * sequence; every block and tensor is back afterwards.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSampling } from '../core/sampling.js';
import { adaptedModel, type AdaptedModel } from '../runtime/adapters/adapted-model.js';
import { LORA_PROJECTIONS, projectionShape, type SkipAdapter } from '../runtime/adapters/skip-adapter.js';
import { initBackend } from '../runtime/backend.js';
import { forward, prepareModel } from '../runtime/model/forward.js';
import { mulberry32, randomModel } from '../runtime/model/random.js';
import type { LoadedModel } from '../runtime/model/types.js';
import { Scheduler, type SequenceShape, type TokenSampler } from '../runtime/scheduler/scheduler.js';
import { unifiedLayers } from '../runtime/stages/layer-selection.js';
import { KvCache } from './fixtures/kv-cache.js';

const greedy: TokenSampler = (logits) => {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
};

const L = 6;
const N = 10;
let model: LoadedModel;
let view: AdaptedModel;
let kept: number[];
let baseline = 0;
const prompts = [3, 9, 17, 30, 6].map((n, s) => Array.from({ length: n }, (_, i) => 3 + ((i * 7 + s * 13 + ((i * i) % 5)) % 60)));

/** A random adapter, big enough to change what the kept layers predict. */
function randomAdapter(m: LoadedModel, rank: number, seed: number): SkipAdapter {
  const rng = mulberry32(seed);
  const layers = unifiedLayers(m.config.numLayers, 2);
  return {
    meta: { format: 'skein-skip-adapter', base: { file: 'random', sha256: '' }, targetSpeedup: 2, numLayers: L, layers, rank, scale: 2, projections: [...LORA_PROJECTIONS] },
    lora: layers.map(() => {
      const pairs = {} as SkipAdapter['lora'][number];
      for (const p of LORA_PROJECTIONS) {
        const [i, o] = projectionShape(m.config, p);
        pairs[p] = { a: Float32Array.from({ length: i * rank }, () => rng() - 0.5), b: Float32Array.from({ length: rank * o }, () => (rng() - 0.5) * 0.5) };
      }
      return pairs;
    }),
  };
}

/** Prefill on the base model, decode steps on `decodeModel` over `layers`. */
function direct(ids: number[], decodeModel: LoadedModel | null): number[] {
  const cache = new KvCache(L);
  const [p] = forward(model, [{ ids }]);
  cache.append(p!.newKv);
  let logits = p!.logits[0]!;
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    out.push(greedy(logits, []));
    if (i === N - 1) break;
    const [r] = forward(decodeModel ?? model, [{ ids: [out.at(-1)!], past: cache.past() }], decodeModel ? { layers: kept } : {});
    cache.append(r!.newKv);
    logits = r!.logits[0]!;
  }
  cache.dispose();
  return out;
}

function run(shapes: (SequenceShape | undefined)[], ps = prompts): number[][] {
  const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: 64 });
  const outs = ps.map((ids, i) => {
    const o: number[] = [];
    const shape = shapes[i % shapes.length];
    s.submit({ id: `s${i}`, ids, eosIds: [], sampling: resolveSampling({ maxTokens: N }), ...(shape ? { shape } : {}) }, { token: (t) => void o.push(t), done: () => {}, error: (e) => { throw e; } });
    return o;
  });
  for (let steps = 0; s.hasWork() && steps < 10_000; steps++) s.step();
  expect(s.stats()).toMatchObject({ kvBlocksUsed: 0, runningSequences: 0 });
  s.pool.clearCache();
  expect(tf.memory().numTensors).toBe(baseline);
  return outs;
}

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: 64 }, 5);
  kept = unifiedLayers(L, 2);
  view = adaptedModel(model, randomAdapter(model, 4, 3));
  prepareModel(model);
  prepareModel(view);
  baseline = tf.memory().numTensors;
});
afterAll(() => {
  view.dispose();
  model.dispose();
});

describe('skipped-layer decode with a skip adapter', () => {
  it('lossy: decodes on the adapted kept layers (not the unadapted ones), batched beside unadapted and plain sequences', () => {
    const adapted: SequenceShape = { decodeLayers: kept, decodeModel: view };
    const outs = run([adapted, { decodeLayers: kept }, undefined]);
    prompts.forEach((p, i) => expect(outs[i]).toEqual(i % 3 === 0 ? direct(p, view) : i % 3 === 1 ? directShallow(p) : direct(p, null)));
    expect(prompts.some((p) => JSON.stringify(direct(p, view)) !== JSON.stringify(directShallow(p)))).toBe(true);
  });

  it('self-speculative: drafts on the adapted layers and gives the plain greedy output, alone and batched', () => {
    for (const drafts of [1, 3]) {
      const spec: SequenceShape = { decodeLayers: kept, skipMode: 'self-speculative', drafts, decodeModel: view };
      const alone = run([spec]);
      const batched = run([spec, { decodeLayers: kept, decodeModel: view }, undefined]);
      prompts.forEach((p, i) => {
        expect(alone[i]).toEqual(direct(p, null));
        if (i % 3 === 0) expect(batched[i]).toEqual(direct(p, null));
      });
    }
  });

  it('never lets another sequence adopt KV written with the adapted weights', () => {
    const long = [prompts[3]!, prompts[3]!];
    const outs = run([{ decodeLayers: kept, decodeModel: view }, undefined], long);
    expect(outs[1]).toEqual(direct(long[1]!, null));
  });

  it('refuses a decode model of another shape, naming the field', () => {
    const other = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L - 1, vocabSize: 64 }, 6);
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4 });
    expect(() =>
      s.submit({ id: 'x', ids: [3, 4], eosIds: [], sampling: resolveSampling({ maxTokens: 2 }), shape: { decodeLayers: kept, decodeModel: other } }, { token: () => {}, done: () => {}, error: () => {} }),
    ).toThrow(/shape\.decodeModel/);
    other.dispose();
  });
});

/** Unadapted lossy decode: the kept layers of the base model. */
function directShallow(ids: number[]): number[] {
  const cache = new KvCache(L);
  const [p] = forward(model, [{ ids }]);
  cache.append(p!.newKv);
  let logits = p!.logits[0]!;
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    out.push(greedy(logits, []));
    if (i === N - 1) break;
    const [r] = forward(model, [{ ids: [out.at(-1)!], past: cache.past() }], { layers: kept });
    cache.append(r!.newKv);
    logits = r!.logits[0]!;
  }
  cache.dispose();
  return out;
}
