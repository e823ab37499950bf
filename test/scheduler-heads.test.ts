/**
 * Speculative heads in the batched scheduler (SequenceShape.speculate, issue #13): tree
 * verification gives the plain greedy output on every prompt, alone and batched with plain
 * and other speculating sequences of different tree sizes; seeded sampling is exact too;
 * oracle heads whose right answer sits at rank 1 get drafts accepted off the first branch
 * (the kept KV is gathered, not a prefix) with the same output; every block and tensor is
 * back after finished, gated, cancelled and failed runs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveSampling, type SamplingParams } from '../core/sampling.js';
import { initBackend } from '../runtime/backend.js';
import { tokenSampler } from '../runtime/engine/sampling.js';
import { headInput } from '../runtime/heads/files.js';
import { SpeculativeHeads } from '../runtime/heads/heads.js';
import { buildTree, ranksPerHead } from '../runtime/heads/tree.js';
import { forward, prepareModel } from '../runtime/model/forward.js';
import { randomModel } from '../runtime/model/random.js';
import type { LoadedModel } from '../runtime/model/types.js';
import { rowCostFrom } from '../runtime/scheduler/draft-budget.js';
import { Scheduler, type SequenceSummary, type SpeculateShape, type TokenSampler } from '../runtime/scheduler/scheduler.js';
import { KvCache } from './fixtures/kv-cache.js';
import { ModuloConstraint } from './fixtures/toy-constraint.js';

const greedy: TokenSampler = (logits) => {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
};

let model: LoadedModel;
let heads: SpeculativeHeads;
let baseline = 0;
const L = 4;
const V = 64;
const D = 32;
const N = 12;

function prompt(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7 + seed * 13 + ((i * i) % 5)) % 60));
}
const prompts = [prompt(3, 1), prompt(9, 2), prompt(17, 3), prompt(30, 4), prompt(6, 5)];

/** Plain greedy decoding with a contiguous cache, and each position's final hidden state. */
function direct(ids: number[], n: number): { tokens: number[]; hidden: Float32Array[] } {
  const cache = new KvCache(L);
  let [r] = forward(model, [{ ids, returnHidden: true }]);
  const tokens: number[] = [];
  const hidden: Float32Array[] = [];
  for (let i = 0; i < n; i++) {
    cache.append(r!.newKv);
    hidden.push(r!.hidden![0]!);
    tokens.push(greedy(r!.logits[0]!, []));
    if (i === n - 1) break;
    [r] = forward(model, [{ ids: [tokens.at(-1)!], past: cache.past(), returnHidden: true }]);
  }
  cache.dispose();
  return { tokens, hidden };
}

const plain = new Map<number[], ReturnType<typeof direct>>();
const expected = (p: number[]) => {
  if (!plain.has(p)) plain.set(p, direct(p, N));
  return plain.get(p)!;
};

/** Random heads: Medusa or Cerberus with non-zero weights, so their trees vary from step to step. */
function randomHeads(kind: 'medusa' | 'cerberus', K: number, seed: number, vocab?: number[], pendingToken = false): SpeculativeHeads {
  let s = seed;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.6;
  const weights = Array.from({ length: K }, (_, k) => Float32Array.from({ length: headInput(kind, k, D, pendingToken) * D }, rand));
  const biases = Array.from({ length: K }, () => Float32Array.from({ length: D }, rand));
  const meta = { kind, numHeads: K, hiddenSize: D, vocabSize: V, tree: [[0]], gateThreshold: null, ...(vocab ? { vocab } : {}), ...(pendingToken ? { pendingToken } : {}) };
  return new SpeculativeHeads(model, { meta, weights, biases });
}

/**
 * Oracle heads for one prompt: they find the position by its hidden state (nearest of the
 * plain run's) and put the true next tokens at rank 1, a wrong one at rank 0.
 */
function oracleHeads(p: number[]): SpeculateShape['heads'] {
  const { tokens, hidden } = expected(p);
  const dist = (a: Float32Array, b: Float32Array) => a.reduce((sum, x, i) => sum + (x - b[i]!) ** 2, 0);
  return {
    candidates: (rows, ranks) =>
      rows.map((h) => {
        let at = 0;
        hidden.forEach((x, i) => dist(x, h) < dist(hidden[at]!, h) && (at = i));
        return ranks.map((k, head) => {
          const truth = tokens[at + 1 + head] ?? 0;
          return [(truth + 1) % V, truth, (truth + 2) % V].slice(0, k);
        });
      }),
  };
}

function shape(h: SpeculateShape['heads'], nodes: number, rankAccuracy: number[][], extra: Partial<SpeculateShape> = {}): SpeculateShape {
  const tree = buildTree(rankAccuracy, nodes);
  return { heads: h, tree, ranks: ranksPerHead(tree, rankAccuracy.length), gate: null, acceptance: 'exact', ...extra };
}
const flatAcc = [
  [0.5, 0.3, 0.1],
  [0.4, 0.3, 0.1],
  [0.3, 0.2, 0.1],
];

interface Outcome {
  tokens: number[];
  summary?: SequenceSummary;
  error?: Error;
}

function make(sampler: (p: SamplingParams) => TokenSampler = () => greedy, extra: { maxDraftTokens?: number } = {}): Scheduler {
  return new Scheduler({ model, sampler, blockSize: 4, prefillChunk: 8, ...extra });
}

function submit(s: Scheduler, id: string, ids: number[], spec?: SpeculateShape, sampling: Partial<SamplingParams> = {}, maxTokens = N, constraint?: ModuloConstraint): Outcome {
  const o: Outcome = { tokens: [] };
  s.submit(
    { id, ids, eosIds: [], sampling: resolveSampling({ maxTokens, ...sampling }), ...(spec ? { shape: { speculate: spec } } : {}), ...(constraint ? { constraint } : {}) },
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
  model = randomModel({ hiddenSize: D, numHeads: 4, numKvHeads: 2, numLayers: L, vocabSize: V }, 7);
  prepareModel(model);
  heads = randomHeads('cerberus', 3, 11);
  baseline = tf.memory().numTensors;
});
afterAll(() => {
  heads.dispose();
  model.dispose();
});

describe('speculative heads in the scheduler', () => {
  it('gives the plain greedy output on every prompt, alone and batched with plain sequences and other tree sizes', () => {
    for (const nodes of [1, 4, 9]) {
      const s = make();
      const outs = prompts.map((p, i) => submit(s, `h${i}`, p, shape(heads, nodes, flatAcc)));
      const others = prompts.map((p, i) => submit(s, `o${i}`, p, i % 2 ? shape(heads, 2 + i, flatAcc) : undefined));
      drain(s);
      prompts.forEach((p, i) => {
        expect(outs[i]!.tokens).toEqual(expected(p).tokens);
        expect(others[i]!.tokens).toEqual(expected(p).tokens);
      });
      const f = outs[3]!.summary!.shape!;
      expect(f.verifications).toBeGreaterThan(0);
      expect(f.draftsProposed).toBeGreaterThanOrEqual(f.verifications!);
      expectClean(s);
    }
  });

  it('gives the plain greedy output with heads projecting onto a vocabulary subset, alone and batched', () => {
    const subset = randomHeads('medusa', 3, 5, Array.from({ length: 24 }, (_, i) => 3 + i * 2)); // 24 of 64 tokens
    const s = make();
    const outs = prompts.map((p, i) => submit(s, `v${i}`, p, shape(subset, 6, flatAcc)));
    const others = prompts.map((p, i) => submit(s, `o${i}`, p, i % 2 ? shape(heads, 4, flatAcc) : undefined));
    drain(s);
    prompts.forEach((p, i) => {
      expect(outs[i]!.tokens).toEqual(expected(p).tokens);
      expect(others[i]!.tokens).toEqual(expected(p).tokens);
    });
    expect(outs[3]!.summary!.shape!.verifications).toBeGreaterThan(0);
    subset.dispose();
    expectClean(s);
  });

  it('hands heads reading the pending token the one the base model chose from each hidden row, and decodes the same', () => {
    const reading = randomHeads('cerberus', 3, 9, undefined, true);
    const seen: { row: Float32Array; pending: number }[] = [];
    const recording: SpeculateShape['heads'] = {
      candidates: (rows, ranks, pending) => {
        rows.forEach((row, i) => seen.push({ row, pending: pending[i]! }));
        return reading.candidates(rows, ranks, pending);
      },
    };
    const s = make();
    const outs = prompts.map((p, i) => submit(s, `t${i}`, p, shape(recording, 5, flatAcc)));
    drain(s);
    prompts.forEach((p, i) => expect(outs[i]!.tokens).toEqual(expected(p).tokens));
    expect(seen.length).toBeGreaterThan(prompts.length);
    // The row that chose a token is the plain run's hidden state at that position (nearest of them, as the oracle finds it).
    const dist = (a: Float32Array, b: Float32Array) => a.reduce((sum, x, i) => sum + (x - b[i]!) ** 2, 0);
    for (const { row, pending } of seen) {
      const plainRuns = prompts.map((p) => expected(p));
      let best = { d: Infinity, token: -1 };
      for (const run of plainRuns) run.hidden.forEach((h, j) => dist(h, row) < best.d && (best = { d: dist(h, row), token: run.tokens[j]! }));
      expect(best.d).toBeLessThan(1e-6);
      expect(pending).toBe(best.token);
    }
    reading.dispose();
    expectClean(s);
  });

  it('with the batch\'s cost model: free rows take every node, rows that cost a step take none (no heads run), same output', () => {
    let calls = 0;
    const counting: SpeculateShape['heads'] = {
      candidates: (rows, ranks, pending) => {
        calls++;
        return heads.candidates(rows, ranks, pending);
      },
    };
    const nodeValues = [0.5, 0.3, 0.2, 0.1, 0.05];
    for (const [name, relative, drafts] of [
      ['free', [1, 1, 1], true],
      ['costly', [1, 2, 3], false],
    ] as const) {
      calls = 0;
      const rowCost = rowCostFrom({ rows: [1, 2, 3], relative: [...relative] });
      const s = make();
      const outs = prompts.map((p, i) => submit(s, `${name}${i}`, p, shape(counting, 5, flatAcc, { nodeValues, rowCost })));
      drain(s);
      prompts.forEach((p, i) => expect(outs[i]!.tokens).toEqual(expected(p).tokens));
      const f = outs.map((o) => o.summary!.shape!);
      const proposed = f.reduce((n, x) => n + (x.draftsProposed ?? 0), 0);
      const skipped = f.reduce((n, x) => n + (x.unaffordableSteps ?? 0), 0);
      if (drafts) {
        expect(proposed).toBeGreaterThan(0);
        expect(skipped).toBe(0);
        expect(calls).toBeGreaterThan(0);
      } else {
        expect(proposed).toBe(0);
        expect(skipped).toBeGreaterThan(0);
        expect(calls).toBe(0);
      }
      expectClean(s);
    }
  });

  it('accepts drafts off the first branch with oracle heads, keeps the gathered KV right, and frees the rest', () => {
    for (const p of prompts) {
      const s = make();
      const o = submit(s, 'x', p, shape(oracleHeads(p), 8, flatAcc));
      drain(s);
      expect(o.tokens).toEqual(expected(p).tokens);
      const f = o.summary!.shape!;
      // Rank 1 is right at every depth: the path [1, 1, 1] is in an 8-node tree from flatAcc.
      expect(f.draftsAccepted).toBeGreaterThanOrEqual(N / 2);
      expect(f.verifications).toBeLessThan(N - 1);
      expect(f.acceptedAtDepth![0]).toBeGreaterThan(0);
      expectClean(s);
    }
  });

  it('is exact for seeded sampling too: the sampler sees the same rows in the same order', () => {
    const sampling = { temperature: 0.9, topK: 20, seed: 3 };
    const ref = make(tokenSampler);
    const plainOuts = prompts.map((p, i) => submit(ref, `p${i}`, p, undefined, sampling));
    drain(ref);
    expectClean(ref);
    const s = make(tokenSampler);
    const outs = prompts.map((p, i) => submit(s, `s${i}`, p, shape(heads, 6, flatAcc), sampling));
    drain(s);
    outs.forEach((o, i) => expect(o.tokens).toEqual(plainOuts[i]!.tokens));
    expectClean(s);
  });

  it('under an output constraint: each tree row is masked after the path to it, the output is plain constrained decoding\'s', () => {
    for (const sampling of [{ temperature: 0 }, { temperature: 0.9, topK: 20, seed: 3 }]) {
      const ref = make(tokenSampler);
      const plainOuts = prompts.map((p, i) => submit(ref, `p${i}`, p, undefined, sampling, 20, new ModuloConstraint(7)));
      drain(ref);
      expectClean(ref);
      const s = make(tokenSampler);
      const outs = prompts.map((p, i) => submit(s, `s${i}`, p, shape(heads, 8, flatAcc), sampling, 20, new ModuloConstraint(7)));
      drain(s);
      outs.forEach((o, i) => {
        expect(o.error).toBeUndefined();
        expect(o.tokens).toEqual(plainOuts[i]!.tokens);
        expect(o.tokens).toHaveLength(7);
        expect(o.summary!.reason).toBe('stop');
        expect(o.summary!.shape!.verifications).toBeGreaterThan(0);
      });
      expectClean(s);
    }
  });

  it('typical acceptance runs (not exact: it may differ from plain sampling) and frees everything', () => {
    const s = make(tokenSampler);
    const o = submit(s, 't', prompts[2]!, shape(oracleHeads(prompts[2]!), 8, flatAcc, { acceptance: 'typical' }), { temperature: 0.8, seed: 1 });
    drain(s);
    expect(o.tokens).toHaveLength(N);
    expect(o.summary!.shape!.verifications).toBeGreaterThan(0);
    expectClean(s);
  });

  it('the entropy gate sends every step to plain decoding at threshold 0, with the same output', () => {
    const s = make();
    const o = submit(s, 'g', prompts[1]!, shape(heads, 6, flatAcc, { gate: 0 }));
    drain(s);
    expect(o.tokens).toEqual(expected(prompts[1]!).tokens);
    // Every token but the first and the last is followed by a gate decision (the last has nothing left to draft).
    expect(o.summary!.shape).toMatchObject({ gatedSteps: N - 2 });
    expect(o.summary!.shape!.verifications ?? 0).toBe(0);
    expectClean(s);
  });

  it('shares the step budget among trees (maxDraftTokens) and still decodes the same', () => {
    const s = make(undefined, { maxDraftTokens: 3 });
    const outs = prompts.map((p, i) => submit(s, `b${i}`, p, shape(heads, 12, flatAcc)));
    drain(s);
    outs.forEach((o, i) => expect(o.tokens).toEqual(expected(prompts[i]!).tokens));
    // Five trees share three draft rows: at most one node each per verification.
    for (const o of outs) expect(o.summary!.shape!.draftsProposed!).toBeLessThanOrEqual(o.summary!.shape!.verifications!);
    expectClean(s);
  });

  it('frees trees and blocks when cancelled mid-run or failed by a listener', () => {
    const s = make();
    const a = submit(s, 'a', prompts[3]!, shape(heads, 9, flatAcc));
    let seen = 0;
    s.submit(
      { id: 'b', ids: prompts[1]!, eosIds: [], sampling: resolveSampling({ maxTokens: N }), shape: { speculate: shape(heads, 9, flatAcc) } },
      {
        token: () => {
          if (++seen === 3) throw new Error('listener broke');
        },
        done: () => {},
        error: () => {},
      },
    );
    for (let i = 0; i < 6; i++) s.step();
    s.cancel('a');
    drain(s);
    expect(a.summary).toBeUndefined();
    expectClean(s);
  });
});
