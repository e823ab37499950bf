import { describe, expect, it } from 'vitest';
import { applyRepetitionPenalty, argmax, candidates, Rng, Sampler, applyOpenAiAdjustments } from './sampler.js';

const logits = Float32Array.from([1, 3, 2, 0.5, -1, 2.5]);

describe('Sampler', () => {
  it('is greedy at temperature 0', () => {
    const s = new Sampler({ temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 3 });
    expect(s.sample(logits)).toBe(1);
  });

  it('gives the same tokens for the same seed, different ones for another', () => {
    const draw = (seed: number) => {
      const s = new Sampler({ temperature: 1.5, topK: 0, topP: 1, repetitionPenalty: 1, seed });
      return Array.from({ length: 40 }, () => s.sample(logits));
    };
    expect(draw(1)).toEqual(draw(1));
    expect(draw(1)).not.toEqual(draw(2));
  });

  it('draws in proportion to softmax(logits / T)', () => {
    const s = new Sampler({ temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, seed: 9 });
    const counts = new Array(6).fill(0);
    const n = 20000;
    for (let i = 0; i < n; i++) counts[s.sample(logits)]++;
    const e = Array.from(logits, (x) => Math.exp(x));
    const z = e.reduce((a, b) => a + b, 0);
    e.forEach((v, i) => expect(Math.abs(counts[i] / n - v / z)).toBeLessThan(0.015));
  });

  it('top-k keeps the k most likely, renormalised', () => {
    const c = candidates(logits, { temperature: 1, topK: 2, topP: 1 });
    expect(c.ids).toEqual([1, 5]);
    const z = Math.exp(3) + Math.exp(2.5);
    expect(c.probs[0]).toBeCloseTo(Math.exp(3) / z, 6);
    expect(c.probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
  });

  it('top-p keeps the smallest most-likely set reaching the mass', () => {
    const e = Array.from(logits, (x) => Math.exp(x));
    const z = e.reduce((a, b) => a + b, 0);
    const p1 = e[1]! / z;
    const p5 = e[5]! / z;
    expect(candidates(logits, { temperature: 1, topK: 0, topP: p1 * 0.99 }).ids).toEqual([1]);
    expect(candidates(logits, { temperature: 1, topK: 0, topP: (p1 + p5) * 0.99 }).ids).toEqual([1, 5]);
    expect(candidates(logits, { temperature: 1, topK: 0, topP: (p1 + p5) * 1.01 }).ids).toEqual([1, 5, 2]);
    const s = new Sampler({ temperature: 1, topK: 0, topP: (p1 + p5) * 0.99, repetitionPenalty: 1, seed: 4 });
    for (let i = 0; i < 200; i++) expect([1, 5]).toContain(s.sample(logits));
  });

  it('top-p over a large vocabulary matches a full sort', () => {
    const rng = new Rng(5);
    const big = Float32Array.from({ length: 5000 }, () => rng.next() * 8);
    const c = candidates(big, { temperature: 0.7, topK: 0, topP: 0.9 });
    const p = Array.from(big, (x) => Math.exp(x / 0.7));
    const z = p.reduce((a, b) => a + b, 0);
    const order = p.map((_, i) => i).sort((a, b) => p[b]! - p[a]!);
    let cum = 0;
    let n = 0;
    while (cum < 0.9 * z) cum += p[order[n++]!]!;
    expect(c.ids).toEqual(order.slice(0, n));
  });

  it('penalises repeated tokens CTRL-style', () => {
    const row = Float32Array.from([2, -2, 1]);
    applyRepetitionPenalty(row, [0, 1, 1], 2);
    expect(Array.from(row)).toEqual([1, -4, 1]);
    const s = new Sampler({ temperature: 0, topK: 0, topP: 1, repetitionPenalty: 10, seed: 0 });
    expect(s.sample(logits, [1])).toBe(5);
    expect(argmax(logits)).toBe(1);
  });
});

describe('argmax', () => {
  it('gives a Float32Array the index a plain array gets: the first of the largest, NaNs skipped, 0 when nothing exceeds −∞', () => {
    const rng = new Rng(7);
    const cases: number[][] = [
      [],
      [3],
      [NaN, NaN],
      [-Infinity, -Infinity, -Infinity],
      [NaN, -Infinity, 2, 2],
      [1, 5, 2, 5, 5, 0, 5],
      [-0, 0, -0],
      [0, 1, 2, 3, 4, 5, 6, 9, 9],
      Array.from({ length: 1031 }, () => Math.round(rng.next() * 20)),
      Array.from({ length: 49_152 }, () => rng.next() * 2 - 1),
    ];
    for (const c of cases) expect(argmax(Float32Array.from(c))).toBe(argmax(Array.from(Float32Array.from(c))));
    // A tie across lanes resolved to the earliest index, wherever it falls among the four.
    for (let first = 0; first < 8; first++) {
      for (let gap = 1; gap < 8; gap++) {
        const row = new Float32Array(16);
        row[first] = 7;
        row[first + gap] = 7;
        expect(argmax(row)).toBe(first);
      }
    }
  });
});

describe('OpenAI logit_bias and penalties', () => {
  it('adds the bias, and subtracts count × frequency + presence for generated tokens only', () => {
    const logits = new Float32Array([1, 1, 1, 1]);
    applyOpenAiAdjustments(logits, [2, 2, 3], { logitBias: { '0': 5, '9': 1 }, frequencyPenalty: 0.5, presencePenalty: 0.25 });
    expect(Array.from(logits)).toEqual([6, 1, 1 - 2 * 0.5 - 0.25, 1 - 0.5 - 0.25]);
  });

  it('a sampler counts only the tokens after generatedFrom', () => {
    const s = new Sampler({ temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 1, presencePenalty: 2 });
    const logits = new Float32Array([0, 1, 0.5]);
    // Token 1 is in the prompt (index 0 < generatedFrom): not penalised, still the argmax.
    expect(s.sample(logits, [1, 2], 1)).toBe(1);
    // Generated, it loses 2 and token 2 (also generated) loses 2: token 0 wins.
    expect(s.sample(logits, [1, 2], 0)).toBe(0);
  });
});
