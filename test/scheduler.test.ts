/**
 * The in-thread scheduler on a tiny random model: greedy outputs are the same whether a
 * sequence runs alone, batched, forked from a shared prefix or preempted and resumed;
 * every block and tensor comes back after finished, failed and cancelled runs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError, KvExhaustedError } from '../core/errors.js';
import { resolveSampling } from '../core/sampling.js';
import { initBackend } from '../runtime/backend.js';
import { tokenSampler } from '../runtime/engine/sampling.js';
import { greedyAlone } from './fixtures/kv-cache.js';
import { forward, prepareModel } from '../runtime/model/forward.js';
import { randomModel } from '../runtime/model/random.js';
import type { LoadedModel } from '../runtime/model/types.js';
import {
  Scheduler,
  type SchedulerOptions,
  type SequenceSummary,
  type TokenSampler,
} from '../runtime/scheduler/scheduler.js';

const greedy: TokenSampler = (logits) => {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
};

let model: LoadedModel;
let baseline = 0;

function prompt(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7 + seed * 13 + ((i * i) % 5)) % 60));
}

/** Plain generation with a contiguous cache: the oracle the paged scheduler must match. */
function generateAlone(ids: number[], maxTokens: number): number[] {
  return greedyAlone(model, ids, maxTokens);
}

interface Outcome {
  tokens: number[];
  summary?: SequenceSummary;
  error?: Error;
}

function make(options: Partial<SchedulerOptions> = {}): Scheduler {
  return new Scheduler({ model, sampler: () => greedy, blockSize: 4, ...options });
}

function submit(s: Scheduler, id: string, ids: number[], maxTokens: number, owner?: string): Outcome {
  const o: Outcome = { tokens: [] };
  s.submit(
    { id, ids, owner, eosIds: [], sampling: resolveSampling({ maxTokens }) },
    {
      token: (t) => void o.tokens.push(t),
      done: (summary) => (o.summary = summary),
      error: (e) => (o.error = e),
    },
  );
  return o;
}

function drain(s: Scheduler, maxSteps = 10_000): { preempted: number; steps: number; maxBatch: number } {
  let preempted = 0;
  let steps = 0;
  let maxBatch = 0;
  while (s.hasWork() && steps < maxSteps) {
    const r = s.step();
    preempted += r.preempted;
    maxBatch = Math.max(maxBatch, r.sequences);
    steps++;
  }
  return { preempted, steps, maxBatch };
}

function expectClean(s: Scheduler) {
  expect(s.stats()).toMatchObject({ kvBlocksUsed: 0, kvBlocksShared: 0, queueDepth: 0, runningSequences: 0 });
  s.pool.clearCache();
  const st = s.pool.stats();
  expect(st.free).toBe(st.total);
  expect(tf.memory().numTensors).toBe(baseline);
}

const prompts = [prompt(3, 1), prompt(9, 2), prompt(17, 3), prompt(30, 4), prompt(6, 5)];
const N = 8;
let alone: number[][];

describe('Scheduler', () => {
  beforeAll(async () => {
    await initBackend();
    model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: 2, vocabSize: 64 }, 11);
    prepareModel(model);
    baseline = tf.memory().numTensors;
    alone = prompts.map((p) => generateAlone(p, N));
  });

  afterAll(() => model.dispose());

  it('runs one sequence like plain generation, paging its KV', () => {
    for (let i = 0; i < prompts.length; i++) {
      const s = make({ prefillChunk: 8 });
      const o = submit(s, 'a', prompts[i]!, N);
      drain(s);
      expect(o.tokens).toEqual(alone[i]);
      expect(o.summary).toMatchObject({ reason: 'length', completionTokens: N, cachedPromptTokens: 0 });
      expectClean(s);
    }
  });

  it('batches many sequences in one forward with the same outputs', () => {
    const s = make({ prefillChunk: 8 });
    const outs = prompts.map((p, i) => submit(s, `s${i}`, p, N));
    const { maxBatch } = drain(s);
    expect(maxBatch).toBe(prompts.length);
    outs.forEach((o, i) => expect(o.tokens).toEqual(alone[i]));
    expectClean(s);
  });

  it('forks a live sequence: shares its blocks, partial last block copy-on-write', () => {
    const s = make();
    const p = prompts[3]!; // 30 tokens: 7 full blocks and a partial one of 2
    const a = submit(s, 'a', p, N);
    s.step(); // prefill of a
    const b = submit(s, 'b', [...p, ...prompts[0]!], N);
    s.step(); // a and b both append to the shared partial block: the first to do so copies it
    expect(s.stats().kvBlocksShared).toBe(7);
    drain(s);
    expect(a.tokens).toEqual(alone[3]);
    expect(b.tokens).toEqual(generateAlone([...p, ...prompts[0]!], N));
    expect(b.summary).toMatchObject({ cachedPromptTokens: 30, kvBlocksShared: 8 });
    expectClean(s);
  });

  it('reuses the prefix of a finished sequence, and holds back a twin until its prefix is computed', () => {
    const s = make({ prefillChunk: 8 });
    const p = prompts[3]!;
    submit(s, 'a', p, N);
    drain(s);
    const b = submit(s, 'b', [...p.slice(0, 22), 9, 9, 9], N);
    drain(s);
    expect(b.summary!.cachedPromptTokens).toBe(22);
    expect(b.tokens).toEqual(generateAlone([...p.slice(0, 22), 9, 9, 9], N));
    s.pool.clearCache();
    // Four requests over one prefix at once: the first computes it, the others share it.
    const q = prompt(40, 9);
    const outs = [1, 2, 3, 4].map((i) => submit(s, `q${i}`, [...q, i + 3], 4));
    drain(s);
    const want = outs.map((_, i) => generateAlone([...q, i + 4], 4));
    outs.forEach((o, i) => expect(o.tokens).toEqual(want[i]));
    expect(outs.map((o) => o.summary!.cachedPromptTokens)).toEqual([0, 40, 40, 40]);
    expectClean(s);
  });

  it('preempts the youngest when memory runs out and resumes it with the same output', () => {
    // 10 blocks of 4 tokens; the five sequences need 3..10 blocks each.
    const s = make({ kvBudgetBlocks: 10, prefillChunk: 8 });
    const outs = prompts.map((p, i) => submit(s, `s${i}`, p, N));
    const { preempted } = drain(s);
    expect(preempted).toBeGreaterThan(0);
    outs.forEach((o, i) => {
      expect(o.error).toBeUndefined();
      expect(o.tokens).toEqual(alone[i]);
    });
    expect(outs.some((o) => o.summary!.preemptions > 0)).toBe(true);
    expectClean(s);
  });

  it('samples with a seeded sampler per sequence: same tokens alone, batched, preempted', () => {
    const sampled = (options: Partial<SchedulerOptions>, which: number[]) => {
      const s = make({ sampler: tokenSampler, ...options });
      const outs = which.map((i) => {
        const o: Outcome = { tokens: [] };
        const sampling = resolveSampling({ maxTokens: N, temperature: 0.9, topK: 20, repetitionPenalty: 1.2, seed: 100 + i });
        s.submit({ id: `s${i}`, ids: prompts[i]!, eosIds: [], sampling }, { token: (t) => void o.tokens.push(t), done: () => {}, error: (e) => (o.error = e) });
        return o;
      });
      const { preempted } = drain(s);
      expectClean(s);
      return { tokens: outs.map((o) => o.tokens), preempted };
    };
    const single = prompts.map((_, i) => sampled({}, [i]).tokens[0]);
    expect(sampled({ prefillChunk: 8 }, [0, 1, 2, 3, 4]).tokens).toEqual(single);
    const squeezed = sampled({ kvBudgetBlocks: 10, prefillChunk: 8 }, [0, 1, 2, 3, 4]);
    expect(squeezed.preempted).toBeGreaterThan(0);
    expect(squeezed.tokens).toEqual(single);
  });

  it('keeps shared prefixes correct under preemption and eviction', () => {
    const q = prompt(22, 8);
    const reqs = [0, 1, 2, 3, 4, 5].map((i) => [...q, ...prompt(3 + i, 20 + i)]);
    const want = reqs.map((r) => generateAlone(r, N));
    const s = make({ kvBudgetBlocks: 14, prefillChunk: 8 });
    const outs = reqs.map((r, i) => submit(s, `p${i}`, r, N));
    const { preempted } = drain(s);
    expect(preempted).toBeGreaterThan(0);
    outs.forEach((o, i) => expect(o.tokens).toEqual(want[i]));
    expect(outs.filter((o) => o.summary!.cachedPromptTokens > 0).length).toBeGreaterThan(0);
    expectClean(s);
  });

  it('rejects a request that can never fit with KvExhaustedError, and bad token ids', () => {
    const s = make({ kvBudgetBlocks: 4 });
    expect(() => submit(s, 'big', prompt(20, 1), 4)).toThrow(KvExhaustedError);
    expect(() => submit(s, 'bad', [1, 64], 4)).toThrow(BadRequestError);
    const o = submit(s, 'small', prompt(5, 1), 4);
    drain(s);
    expect(o.tokens).toHaveLength(4);
    expectClean(s);
  });

  it('frees everything on cancel mid-prefill, cancel mid-decode and failures', () => {
    const s = make({ prefillChunk: 8 });
    submit(s, 'prefilling', prompt(30, 7), N);
    s.step();
    expect(s.stats().kvBlocksUsed).toBeGreaterThan(0);
    s.cancel('prefilling');
    expect(s.stats().kvBlocksUsed).toBe(0);
    // Cancelled from inside its own token callback, mid-step, while others run on.
    const ok = submit(s, 'ok', prompts[1]!, N);
    let seen = 0;
    s.submit(
      { id: 'decoding', ids: prompts[2]!, eosIds: [], sampling: resolveSampling({ maxTokens: N }) },
      { token: () => void (++seen === 3 && s.cancel('decoding')), done: () => {}, error: () => {} },
    );
    const other = submit(s, 'other', prompts[0]!, N);
    let thrown: Error | undefined;
    s.submit(
      { id: 'throws', ids: prompts[3]!, eosIds: [], sampling: resolveSampling({ maxTokens: N }) },
      { token: () => { throw new Error('listener broke'); }, done: () => {}, error: (e) => (thrown = e) },
    );
    drain(s);
    expect(seen).toBe(3);
    expect(thrown?.message).toBe('listener broke');
    expect(ok.tokens).toEqual(alone[1]);
    expect(other.tokens).toEqual(alone[0]);
    expectClean(s);
    // A forward that throws fails the sequences of that step only.
    let calls = 0;
    const flaky = make({
      forward: (m, seqs, opts) => {
        if (++calls === 2) throw new Error('boom');
        return forward(m, seqs, opts);
      },
    });
    const f1 = submit(flaky, 'f1', prompts[0]!, N);
    flaky.step();
    const f2 = submit(flaky, 'f2', prompts[1]!, N);
    drain(flaky);
    expect(f1.error?.message).toBe('boom');
    expect(f2.error?.message).toBe('boom');
    const f3 = submit(flaky, 'f3', prompts[0]!, N);
    drain(flaky);
    expect(f3.tokens).toEqual(alone[0]);
    expectClean(flaky);
  });

  it('serves owners fairly under the fair policy', () => {
    const order: string[] = [];
    const s = make({ policy: 'fair', maxBatch: 1 });
    for (let i = 0; i < 3; i++) {
      s.submit(
        { id: `a${i}`, ids: prompts[0]!, owner: 'A', eosIds: [], sampling: resolveSampling({ maxTokens: 2 }) },
        { token: () => {}, done: () => order.push(`a${i}`), error: () => {} },
      );
    }
    s.submit(
      { id: 'b0', ids: prompts[0]!, owner: 'B', eosIds: [], sampling: resolveSampling({ maxTokens: 2 }) },
      { token: () => {}, done: () => order.push('b0'), error: () => {} },
    );
    drain(s);
    expect(order.indexOf('b0')).toBeLessThan(order.indexOf('a2'));
    expect(order[0]).toBe('a0');
  });
});
