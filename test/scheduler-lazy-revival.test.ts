/**
 * LazyLLM's Aux Cache and revival in the batched scheduler (SequenceShape.prune.revive):
 * a pruned sequence prefills its whole prompt in one forward (its final token prunes),
 * parks its pruned tokens' hidden states, and decode steps revive them by the stated rule. Checked against a direct run of the same
 * rule on the forward with a plain contiguous cache; every block, Aux-Cache entry and
 * tensor is back after finished, failed, cancelled and preempted runs; and revival never
 * touches a shared prefix.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSampling } from '../core/sampling.js';
import { initBackend } from '../runtime/backend.js';
import { forward, prepareModel } from '../runtime/model/forward.js';
import { randomModel } from '../runtime/model/random.js';
import type { LoadedModel, ResumeStep } from '../runtime/model/types.js';
import { pruneSteps, Scheduler, type SequenceShape, type SequenceSummary, type TokenSampler } from '../runtime/scheduler/scheduler.js';
import { lazySchedule, type LazySchedule } from '../runtime/stages/lazy-schedule.js';
import { KvCache } from './fixtures/kv-cache.js';

const greedy: TokenSampler = (logits) => {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
};

let model: LoadedModel;
let baseline = 0;
const L = 6;
const N = 10;
const CHUNK = 8;
const schedule: LazySchedule = lazySchedule(L, { keepRatio: 0.4, revive: 2 });

function prompt(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7 + seed * 13 + ((i * i) % 5)) % 60));
}
const prompts = [prompt(9, 2), prompt(17, 3), prompt(30, 4), prompt(41, 6)];

beforeAll(async () => {
  await initBackend();
  model = randomModel({ hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: 64 }, 5);
  prepareModel(model);
  baseline = tf.memory().numTensors;
});
afterAll(() => model.dispose());

/**
 * The rule run directly on the forward: pruned prefill in chunks of `chunk` (the whole
 * prompt, as the scheduler runs a pruned one) parking every pruned token, then each later
 * chunk and decode step reviving, per pruning layer i, the parked tokens
 * ranked among the top ceil(keep_i · positions) by the step's last token, at most `revive`.
 */
function direct(ids: number[], n: number, s: LazySchedule, chunk = ids.length): { tokens: number[]; revivedAtLayer: Record<number, number> } {
  const cache = new KvCache(L);
  const positions: number[][] = Array.from({ length: L }, () => []);
  const parked = new Map<number, { layer: number; hidden: Float32Array }>();
  const revivedAtLayer: Record<number, number> = {};
  let length = 0;
  const run = (part: number[]): Float32Array => {
    const resume: ResumeStep[] = s.layers.flatMap((l, i) => {
      const at = [...parked].filter(([, e]) => e.layer === l).map(([p]) => p).sort((a, b) => a - b);
      const rank = Math.ceil(s.keep[i]! * (length + part.length) - 1e-9);
      return at.length ? [{ fromLayer: l, positions: at, hidden: at.map((p) => parked.get(p)!.hidden), select: { rank, max: s.revive } }] : [];
    });
    const prune = part.length > 1 ? pruneSteps(s, part.length) : undefined;
    const [r] = forward(model, [
      {
        ids: part,
        past: length > 0 ? cache.past() : undefined,
        ...(prune ? { prune, returnPrunedHidden: true } : {}),
        ...(resume.length ? { resume, pastPositions: positions } : {}),
      },
    ]);
    cache.append(r!.newKv);
    r!.newKv.forEach((e, l) => positions[l]!.push(...e!.tokenIndices.map((i) => length + i)));
    if (r!.resumedKv) {
      cache.append(r!.resumedKv.map((e) => (e ? { ...e, tokenIndices: [] } : null)));
      r!.resumedKv.forEach((e, l) => e && positions[l]!.push(...e.positions));
    }
    for (const p of r!.prunedHidden ?? []) p.tokenIndices.forEach((i, j) => parked.set(length + i, { layer: p.fromLayer, hidden: p.hidden[j]! }));
    for (const { fromLayer, positions: ps } of r!.resumed ?? []) {
      ps.forEach((p) => parked.delete(p));
      if (ps.length) revivedAtLayer[fromLayer] = (revivedAtLayer[fromLayer] ?? 0) + ps.length;
    }
    length += part.length;
    return r!.logits[0]!;
  };
  let logits!: Float32Array;
  for (let at = 0; at < ids.length; at += chunk) logits = run(ids.slice(at, at + chunk));
  const tokens: number[] = [];
  for (let i = 0; i < n; i++) {
    tokens.push(greedy(logits, []));
    if (i < n - 1) logits = run([tokens.at(-1)!]);
  }
  cache.dispose();
  return { tokens, revivedAtLayer };
}

interface Outcome {
  tokens: number[];
  summary?: SequenceSummary;
  error?: Error;
}

function submit(s: Scheduler, id: string, ids: number[], shape?: SequenceShape, onToken?: (n: number) => void): Outcome {
  const o: Outcome = { tokens: [] };
  s.submit(
    { id, ids, eosIds: [], sampling: resolveSampling({ maxTokens: N }), ...(shape ? { shape } : {}) },
    {
      token: (t) => {
        o.tokens.push(t);
        onToken?.(o.tokens.length);
      },
      done: (summary) => (o.summary = summary),
      error: (e) => (o.error = e),
    },
  );
  return o;
}

function drain(s: Scheduler): void {
  for (let steps = 0; s.hasWork() && steps < 10_000; steps++) s.step();
}

function expectClean(s: Scheduler) {
  expect(s.stats()).toMatchObject({ kvBlocksUsed: 0, kvBlocksShared: 0, auxCacheEntries: 0, queueDepth: 0, runningSequences: 0 });
  s.pool.clearCache();
  const st = s.pool.stats();
  expect(st.free).toBe(st.total);
  expect(tf.memory().numTensors).toBe(baseline);
}

const shape: SequenceShape = { prune: schedule };

describe('LazyLLM revival from the Aux Cache in the scheduler', () => {
  it('prunes the whole prompt at once and revives in decode steps exactly as the rule run directly, alone and batched with plain sequences', () => {
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: CHUNK });
    const outs = prompts.map((p, i) => submit(s, `r${i}`, p, shape));
    const plain = submit(s, 'plain', prompts[2]!);
    drain(s);
    let revived = 0;
    prompts.forEach((p, i) => {
      const d = direct(p, N, schedule);
      expect(outs[i]!.tokens).toEqual(d.tokens);
      const f = outs[i]!.summary!.shape!;
      expect(f.revivedAtLayer ?? {}).toEqual(d.revivedAtLayer);
      revived += Object.values(d.revivedAtLayer).reduce((a, b) => a + b, 0);
    });
    expect(revived).toBeGreaterThan(0); // the rule did revive here: the check is not vacuous
    expect(plain.tokens).toEqual(direct(prompts[2]!, N, { ...schedule, keep: schedule.keep.map(() => 1) }, CHUNK).tokens);
    expectClean(s);
  });

  it('revive 0 is static pruning: nothing parked, nothing revived', () => {
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: CHUNK });
    const o = submit(s, 'x', prompts[3]!, { prune: { ...schedule, revive: 0 } });
    s.step();
    expect(s.stats().auxCacheEntries).toBe(0);
    drain(s);
    expect(o.summary!.shape!.revivedAtLayer).toBeUndefined();
    expectClean(s);
  });

  it('counts the Aux Cache in the KV budget while it runs and frees it on finish, failure and cancel', () => {
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: CHUNK });
    const done = submit(s, 'done', prompts[3]!, shape);
    const failed = submit(s, 'failed', prompts[2]!, shape, (n) => {
      if (n === 3) throw new Error('listener broke');
    });
    const cancelled = submit(s, 'cancelled', prompts[1]!, shape);
    for (let i = 0; i < 3; i++) s.step();
    const mid = s.stats();
    expect(mid.auxCacheEntries).toBeGreaterThan(0);
    // The budget shows them: the blocks held exceed what the positions alone need.
    const positions = [prompts[3]!, prompts[2]!, prompts[1]!].reduce((n, p) => n + Math.min(p.length, 3 * CHUNK), 0);
    expect(mid.kvBlocksUsed).toBeGreaterThan(Math.ceil(positions / 4));
    s.cancel('cancelled');
    drain(s);
    expect(done.summary?.reason).toBe('length');
    expect(failed.error?.message).toBe('listener broke');
    expect(cancelled.summary).toBeUndefined();
    expectClean(s);
  });

  it('drops the Aux Cache of a preempted sequence and parks afresh on its recompute', () => {
    // 24 blocks of 4: two 41-token sequences cannot both grow to 51 tokens with their caches.
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: CHUNK, kvBudgetBlocks: 24 });
    const a = submit(s, 'a', prompts[3]!, shape);
    const b = submit(s, 'b', prompts[3]!.slice().reverse(), shape);
    drain(s);
    expect(a.summary!.preemptions + b.summary!.preemptions).toBeGreaterThan(0);
    expect([a.tokens.length, b.tokens.length]).toEqual([N, N]);
    expectClean(s);
  });

  it('never revives into a shared prefix: adopted positions are never parked, and the plain cache stays intact', () => {
    const s = new Scheduler({ model, sampler: () => greedy, blockSize: 4, prefillChunk: CHUNK });
    const p = prompts[2]!;
    const first = submit(s, 'first', p);
    drain(s);
    const longer = [...p, ...prompts[1]!];
    const lazy = submit(s, 'lazy', longer, shape);
    drain(s);
    expect(lazy.summary!.cachedPromptTokens).toBe(30); // 7 full blocks of the plain prefix shared, 2 rows copied
    // Only the 17 tokens it computed itself were pruned (chunks of 8, 8, 1 from position 30),
    // so only they were ever parked and revived: the adopted rows are read as they are.
    const pruned = lazy.summary!.shape!.prunedAtLayer!;
    expect(Math.max(...Object.values(pruned))).toBeLessThanOrEqual(17);
    const again = submit(s, 'again', p);
    drain(s);
    expect(again.summary!.cachedPromptTokens).toBeGreaterThan(0);
    expect(again.tokens).toEqual(first.tokens);
    expectClean(s);
  });

  it('refuses a bad revive budget by name', () => {
    const s = new Scheduler({ model, sampler: () => greedy });
    expect(() => submit(s, 'x', prompts[0]!, { prune: { ...schedule, revive: -1 } })).toThrow(/shape\.prune\.revive/);
    expect(() => lazySchedule(L, { keepRatio: 0.5, revive: 1.5 })).toThrow(/prunedPrefill\.revive/);
    expectClean(s);
  });
});
