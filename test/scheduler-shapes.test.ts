/**
 * Shaped sequences in the batched scheduler (runtime/scheduler SequenceShape):
 * skipped-layer decode (lossy) equals a direct computation that decodes on the kept layers;
 * self-speculative decode equals plain decoding token for token on every prompt, greedy and
 * seeded sampling, alone and batched; pruned prefill equals the forward's own LazyLLM
 * selection over the whole prompt in one forward (the final token decides); every block and tensor is back after finished, failed and
 * cancelled runs; and a pruned sequence's KV is never adopted by another sequence.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSampling, type SamplingParams } from '../core/sampling.js';
import { initBackend } from '../runtime/backend.js';
import { tokenSampler } from '../runtime/engine/sampling.js';
import { forward, prepareModel } from '../runtime/model/forward.js';
import { KvCache } from './fixtures/kv-cache.js';
import { ModuloConstraint } from './fixtures/toy-constraint.js';
import { randomModel } from '../runtime/model/random.js';
import type { LoadedModel, PruneStep } from '../runtime/model/types.js';
import { Scheduler, type SequenceShape, type SequenceSummary, type TokenSampler } from '../runtime/scheduler/scheduler.js';
import { keepCounts, lazySchedule } from '../runtime/stages/lazy-schedule.js';
import { unifiedLayers } from '../runtime/stages/layer-selection.js';

const greedy: TokenSampler = (logits) => {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
};

let model: LoadedModel;
let baseline = 0;
const L = 6;
let kept: number[];

function prompt(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7 + seed * 13 + ((i * i) % 5)) % 60));
}
const prompts = [prompt(3, 1), prompt(9, 2), prompt(17, 3), prompt(30, 4), prompt(6, 5)];
const N = 10;

const memo = new Map<string, number[]>();

/** Direct computation: prefill `chunk` tokens at a time (pruned as given), decode on `decodeLayers`. */
function direct(ids: number[], n: number, opts: { decodeLayers?: number[]; prune?: (len: number) => PruneStep[]; chunk?: number } = {}): number[] {
  const key = JSON.stringify([ids, n, opts.decodeLayers, opts.prune?.(ids.length), opts.chunk]);
  if (!memo.has(key)) memo.set(key, directRun(ids, n, opts));
  return memo.get(key)!;
}

function directRun(ids: number[], n: number, opts: { decodeLayers?: number[]; prune?: (len: number) => PruneStep[]; chunk?: number } = {}): number[] {
  const cache = new KvCache(L);
  const chunk = opts.chunk ?? ids.length;
  let logits: Float32Array | undefined;
  for (let at = 0; at < ids.length; at += chunk) {
    const part = ids.slice(at, at + chunk);
    const prune = part.length > 1 && opts.prune ? opts.prune(part.length) : undefined;
    const [r] = forward(model, [{ ids: part, past: at > 0 ? cache.past() : undefined, ...(prune ? { prune } : {}) }]);
    cache.append(r!.newKv);
    logits = r!.logits[0];
  }
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const token = greedy(logits!, []);
    out.push(token);
    if (i === n - 1) break;
    const [r] = forward(model, [{ ids: [token], past: cache.past() }], opts.decodeLayers ? { layers: opts.decodeLayers } : {});
    cache.append(r!.newKv);
    logits = r!.logits[0];
  }
  cache.dispose();
  return out;
}

interface Outcome {
  tokens: number[];
  summary?: SequenceSummary;
  error?: Error;
}

function make(sampler: (p: SamplingParams) => TokenSampler = () => greedy, prefillChunk = 64): Scheduler {
  return new Scheduler({ model, sampler, blockSize: 4, prefillChunk });
}

function submit(s: Scheduler, id: string, ids: number[], shape?: SequenceShape, sampling: Partial<SamplingParams> = {}, maxTokens = N, constraint?: ModuloConstraint): Outcome {
  const o: Outcome = { tokens: [] };
  s.submit(
    { id, ids, eosIds: [], sampling: resolveSampling({ maxTokens, ...sampling }), ...(shape ? { shape } : {}), ...(constraint ? { constraint } : {}) },
    { token: (t) => void o.tokens.push(t), done: (summary) => (o.summary = summary), error: (e) => (o.error = e) },
  );
  return o;
}

function drain(s: Scheduler): void {
  for (let steps = 0; s.hasWork() && steps < 10_000; steps++) s.step();
}

function expectClean(s: Scheduler) {
  expect(s.stats()).toMatchObject({ kvBlocksUsed: 0, kvBlocksShared: 0, queueDepth: 0, runningSequences: 0 });
  s.pool.clearCache();
  const st = s.pool.stats();
  expect(st.free).toBe(st.total);
  expect(tf.memory().numTensors).toBe(baseline);
}

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: 64 }, 5);
  prepareModel(model);
  baseline = tf.memory().numTensors;
  kept = unifiedLayers(L, 2);
});
afterAll(() => model.dispose());

describe('skipped-layer decode (lossy)', () => {
  it('prefills at full depth and decodes on the kept layers, alone and batched with plain sequences', () => {
    const s = make(undefined, 8);
    const shaped = prompts.map((p, i) => submit(s, `k${i}`, p, { decodeLayers: kept }));
    const plain = prompts.map((p, i) => submit(s, `p${i}`, p));
    drain(s);
    prompts.forEach((p, i) => {
      expect(shaped[i]!.tokens).toEqual(direct(p, N, { decodeLayers: kept, chunk: 8 }));
      expect(plain[i]!.tokens).toEqual(direct(p, N, { chunk: 8 }));
    });
    expect(shaped[0]!.summary!.shape).toMatchObject({ decodeLayers: kept.length, shallowForwards: N - 1 });
    expectClean(s);
  });

  it('with every layer kept (targetSpeedup 1) equals plain decoding', () => {
    const s = make();
    const all = Array.from({ length: L }, (_, l) => l);
    const outs = prompts.map((p, i) => submit(s, `a${i}`, p, { decodeLayers: all }));
    drain(s);
    outs.forEach((o, i) => expect(o.tokens).toEqual(direct(prompts[i]!, N)));
    expectClean(s);
  });
});

describe('self-speculative decode', () => {
  const spec = (drafts: number, layers: number[] = kept): SequenceShape => ({ decodeLayers: layers, skipMode: 'self-speculative', drafts });

  it('gives the plain greedy output on every prompt, alone and batched with plain and lossy sequences', () => {
    for (const drafts of [1, 3, 5]) {
      const s = make(undefined, 8);
      const outs = prompts.map((p, i) => submit(s, `s${i}`, p, spec(drafts)));
      const others = prompts.map((p, i) => submit(s, `o${i}`, p, i % 2 ? { decodeLayers: kept } : undefined));
      drain(s);
      prompts.forEach((p, i) => {
        expect(outs[i]!.tokens).toEqual(direct(p, N, { chunk: 8 }));
        expect(others[i]!.tokens).toEqual(direct(p, N, { chunk: 8, ...(i % 2 ? { decodeLayers: kept } : {}) }));
      });
      const f = outs[3]!.summary!.shape!;
      expect(f.draftsProposed).toBeGreaterThan(0);
      expect(f.draftsAccepted).toBeLessThanOrEqual(f.draftsProposed!);
      expectClean(s);
    }
  });

  it('accepts every draft when the drafting layers are all layers, and still stops at maxTokens', () => {
    const s = make();
    const all = Array.from({ length: L }, (_, l) => l);
    const o = submit(s, 'x', prompts[2]!, spec(4, all), {}, 7);
    drain(s);
    expect(o.tokens).toEqual(direct(prompts[2]!, 7));
    // 7 tokens: one from the prefill, then the draft length grows with every draft accepted —
    // 1 draft + 1, 2 drafts + 1 — and the last is plain (no room left for a draft).
    expect(o.summary!.shape).toMatchObject({ draftsProposed: 3, draftsAccepted: 3, verifications: 2 });
    expectClean(s);
  });

  it('drafts less when drafts keep failing (adaptive length), with the same output', () => {
    const s = make();
    const o = submit(s, 'x', prompts[3]!, spec(3, [0]), {}, 40);
    drain(s);
    expect(o.tokens).toEqual(direct(prompts[3]!, 40));
    // A fixed length would propose 3 drafts per verification (39 in 40 tokens). One-layer
    // drafts all fail here, so the sequence drafts one, then probes after 8 plain steps and
    // after 16 more (the wait doubles with each failed probe): 3 proposed.
    const f = o.summary!.shape!;
    expect(f.draftsAccepted).toBe(0);
    expect(f.draftsProposed).toBe(3);
    expect(f.verifications).toBe(3);
    expectClean(s);
  });

  it('with drafting\'s cost (selfSpecCost) drafts only chains that pay, with the same output', () => {
    const all = Array.from({ length: L }, (_, l) => l);
    const proposed = (shape: SequenceShape) => {
      const s = make();
      const o = submit(s, 'x', prompts[2]!, shape, {}, 40);
      drain(s);
      expect(o.tokens).toEqual(direct(prompts[2]!, 40));
      expectClean(s);
      return o.summary!.shape!;
    };
    // Drafts on all layers are always accepted; without costs the chain grows to 4.
    const free = proposed(spec(4, all));
    expect(free.draftsAccepted).toBe(free.draftsProposed);
    expect(free.draftsProposed).toBeGreaterThan(25);
    // Rows that cost as much as steps and drafts as much as a step: no chain pays, so after
    // the first verification the sequence only probes, one draft every 8 plain steps.
    const dear = proposed({ ...spec(4, all), selfSpecCost: { rowCost: (n) => n, shallow: 1 } });
    expect(dear.draftsProposed).toBeLessThanOrEqual(6);
    // A forward the same at any width and free drafts: the longest chain, as without costs.
    const cheap = proposed({ ...spec(4, all), selfSpecCost: { rowCost: () => 1, shallow: 0 } });
    expect(cheap.draftsProposed).toBeGreaterThan(25);
  });

  it('with a seeded sampler gives the same tokens as plain sampling (the sampler sees the same rows in the same order)', () => {
    const sampling = { temperature: 0.9, topK: 20, seed: 7 };
    const plain = make(tokenSampler);
    const ref = prompts.map((p, i) => submit(plain, `p${i}`, p, undefined, sampling));
    drain(plain);
    expectClean(plain);
    const s = make(tokenSampler);
    const outs = prompts.map((p, i) => submit(s, `s${i}`, p, spec(3), sampling));
    drain(s);
    outs.forEach((o, i) => expect(o.tokens).toEqual(ref[i]!.tokens));
    expectClean(s);
  });

  it('under an output constraint: drafts and verified rows are masked where the constraint stands, the output is plain constrained decoding\'s', () => {
    const all = Array.from({ length: L }, (_, l) => l);
    for (const sampling of [{ temperature: 0 }, { temperature: 0.9, topK: 20, seed: 5 }]) {
      const plain = make(tokenSampler);
      const ref = prompts.map((p, i) => submit(plain, `p${i}`, p, undefined, sampling, 20, new ModuloConstraint(9)));
      drain(plain);
      expectClean(plain);
      for (const layers of [kept, all]) {
        const s = make(tokenSampler);
        const outs = prompts.map((p, i) => submit(s, `s${i}`, p, spec(3, layers), sampling, 20, new ModuloConstraint(9)));
        drain(s);
        outs.forEach((o, i) => {
          expect(o.error).toBeUndefined();
          expect(o.tokens).toEqual(ref[i]!.tokens);
          // The constraint ends the output at 9 tokens, in the middle of a verification too.
          expect(o.tokens).toHaveLength(9);
          expect(o.summary!.reason).toBe('stop');
        });
        const accepted = outs.reduce((n, o) => n + (o.summary!.shape!.draftsAccepted ?? 0), 0);
        // Drafts from every layer are masked like the full model's rows, so they are accepted.
        if (layers === all && sampling.temperature === 0) expect(accepted).toBeGreaterThan(prompts.length * 4);
        expectClean(s);
      }
    }
  });

  it('frees drafts and blocks when cancelled mid-draft or failed by a listener', () => {
    const s = make();
    const a = submit(s, 'a', prompts[3]!, spec(4));
    let seen = 0;
    s.submit(
      { id: 'b', ids: prompts[1]!, eosIds: [], sampling: resolveSampling({ maxTokens: N }), shape: spec(4) },
      {
        token: () => {
          if (++seen === 3) throw new Error('listener broke');
        },
        done: () => {},
        error: () => {},
      },
    );
    for (let i = 0; i < 4; i++) s.step(); // prefill, then drafting
    s.cancel('a');
    drain(s);
    expect(a.summary).toBeUndefined();
    expectClean(s);
  });
});

describe('pruned prefill (LazyLLM), static (no revival: test/scheduler-lazy-revival.test.ts)', () => {
  const schedule = lazySchedule(L, { keepRatio: 0.4, revive: 0 });
  const shape: SequenceShape = { prune: schedule };
  const steps = (n: number): PruneStep[] => schedule.layers.map((l, i) => ({ fromLayer: l, keepTop: keepCounts(schedule, n)[i]! }));

  it('keepRatio 1 equals plain prefill', () => {
    const s = make(undefined, 8);
    const outs = prompts.map((p, i) => submit(s, `a${i}`, p, { prune: lazySchedule(L, { keepRatio: 1 }) }));
    drain(s);
    outs.forEach((o, i) => expect(o.tokens).toEqual(direct(prompts[i]!, N)));
    expectClean(s);
  });

  it('prunes the whole prompt in one forward by its final token, alone and batched with a chunked plain prefill, as the forward does directly', () => {
    const s = make(undefined, 8);
    const outs = prompts.map((p, i) => submit(s, `z${i}`, p, shape));
    const plain = submit(s, 'plain', prompts[3]!);
    drain(s);
    outs.forEach((o, i) => expect(o.tokens).toEqual(direct(prompts[i]!, N, { prune: steps })));
    expect(plain.tokens).toEqual(direct(prompts[3]!, N, { chunk: 8 }));
    const pruned = outs[3]!.summary!.shape!.prunedAtLayer!;
    // 30 tokens in one forward: 30 − ceil(share·30) at each stage, not per 8-token chunk.
    expect(schedule.layers.map((l) => pruned[l])).toEqual(keepCounts(schedule, 30).map((k) => 30 - k));
    expectClean(s);
  });

  it('runs a pruned prompt in one step past the step budget while plain prompts and decodes share it', () => {
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: 8, maxStepTokens: 12 });
    const plain = submit(s, 'plain', prompts[2]!);
    s.step(); // plain: its first chunk of 8
    const lazy = submit(s, 'lazy', prompts[3]!, shape);
    const report = s.step(); // plain's next chunk, then lazy's whole prompt of 30 (past the 12-token budget)
    expect(report.prefillTokens).toBe(8 + prompts[3]!.length);
    drain(s);
    expect(lazy.tokens).toEqual(direct(prompts[3]!, N, { prune: steps }));
    expect(plain.tokens).toEqual(direct(prompts[2]!, N, { chunk: 8 }));
    expectClean(s);
  });

  it('never shares a pruned KV block: a plain twin recomputes, a pruned one reuses a plain prefix', () => {
    const s = make(undefined, 64);
    const p = prompts[3]!;
    const lazy = submit(s, 'lazy', p, shape);
    drain(s);
    const twin = submit(s, 'twin', p);
    drain(s);
    expect(twin.summary).toMatchObject({ cachedPromptTokens: 0, kvBlocksShared: 0 });
    expect(twin.tokens).toEqual(direct(p, N));
    expect(lazy.tokens).toEqual(direct(p, N, { prune: steps }));
    // The plain twin's full blocks are cached now: a pruned sequence adopts them as they are
    // (read-only) and prunes only the positions it computes itself.
    const longer = [...p, ...prompts[0]!];
    const reuse = submit(s, 'reuse', longer, shape);
    drain(s);
    expect(reuse.summary!.cachedPromptTokens).toBe(30); // 7 full blocks shared, 2 rows copied
    const cache = new KvCache(L);
    const [head] = forward(model, [{ ids: longer.slice(0, 30), logits: 'none' }]);
    cache.append(head!.newKv);
    const tail = longer.slice(30);
    const [r] = forward(model, [{ ids: tail, past: cache.past(), prune: steps(tail.length) }]);
    expect(reuse.tokens[0]).toBe(greedy(r!.logits[0]!, []));
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
    cache.dispose();
    expectClean(s);
  });

  it('stacks with skipped-layer decode and self-speculative decode, and cleans up after cancel', () => {
    const s = make(undefined, 8);
    const both = submit(s, 'both', prompts[3]!, { ...shape, decodeLayers: kept });
    const specd = submit(s, 'spec', prompts[2]!, { ...shape, decodeLayers: kept, skipMode: 'self-speculative', drafts: 3 });
    const gone = submit(s, 'gone', prompts[4]!, shape);
    s.step();
    s.cancel('gone');
    drain(s);
    expect(gone.summary).toBeUndefined();
    expect(both.tokens).toEqual(direct(prompts[3]!, N, { prune: steps, decodeLayers: kept }));
    expect(specd.tokens).toEqual(direct(prompts[2]!, N, { prune: steps }));
    expectClean(s);
  });

  it('refuses a bad shape at submit, naming the field', () => {
    const s = make();
    expect(() => submit(s, 'x', prompts[0]!, { decodeLayers: [3, 1] })).toThrow(/shape\.decodeLayers/);
    expect(() => submit(s, 'y', prompts[0]!, { decodeLayers: kept, skipMode: 'self-speculative' })).toThrow(/shape\.drafts/);
    expect(() => submit(s, 'z', prompts[0]!, { prune: { layers: [0], keep: [0.5] } })).toThrow(/shape\.prune/);
    expectClean(s);
  });
});
