import { describe, expect, it } from 'vitest';
import { logSumExp, scoreToken } from './logprobs.js';

describe('scoreToken', () => {
  it('gives log-softmax of the chosen token and the top alternatives, most likely first', () => {
    const row = Float32Array.from([1, 3, 2, 0.5, -1, 2.5]);
    const z = Math.log(Array.from(row).reduce((s, x) => s + Math.exp(x), 0));
    const scored = scoreToken(row, 2, 3);
    expect(scored.logprob).toBeCloseTo(2 - z, 6);
    expect(scored.top.map((t) => t.id)).toEqual([1, 5, 2]);
    scored.top.forEach((t) => expect(t.logprob).toBeCloseTo(row[t.id]! - z, 6));
  });

  it('never lists a masked token, and masked rows renormalise over what is left', () => {
    const row = Float32Array.from([5, -Infinity, 1, -Infinity]);
    const scored = scoreToken(row, 2, 4);
    expect(scored.top.map((t) => t.id)).toEqual([0, 2]);
    expect(Math.exp(scored.top[0]!.logprob) + Math.exp(scored.top[1]!.logprob)).toBeCloseTo(1, 9);
  });

  it('keeps ties in id order, lists nothing for top 0, and survives huge logits', () => {
    expect(scoreToken(Float32Array.from([2, 2, 2]), 0, 2).top.map((t) => t.id)).toEqual([0, 1]);
    expect(scoreToken(Float32Array.from([2, 1]), 0, 0).top).toEqual([]);
    const big = Float32Array.from([1000, 1000]);
    expect(logSumExp(big) - big[0]!).toBeCloseTo(Math.log(2), 6);
    expect(scoreToken(big, 1, 1).logprob).toBeCloseTo(-Math.log(2), 6);
  });
});
