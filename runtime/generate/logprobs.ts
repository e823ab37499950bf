/**
 * Log-probabilities of a sampled token and of its most likely alternatives, from the logit
 * row the sampler picked from: after the output grammar's mask (a masked token has
 * -Infinity and probability 0, so it is never an alternative) and after logit_bias and the
 * penalties, before temperature, top-k and top-p (OpenAI's logprobs do not change with
 * temperature). One pass for the normaliser and one for the top n, kept as a small sorted
 * list: n is at most 20 (OpenAI's limit), so no vocabulary-wide sort.
 *
 * @example
 * const scored = scoreToken(row, chosenId, 5); // { logprob: -0.3, top: [{ id, logprob }, …5] }
 */

export interface ScoredId {
  id: number;
  logprob: number;
}

export interface ScoredToken {
  /** The chosen token's log-probability (natural log). */
  logprob: number;
  /** The `top` most likely tokens, most likely first (ties: lower id first). */
  top: ScoredId[];
}

/** log Σ exp(row), computed around the maximum so large logits do not overflow. */
export function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return max + Math.log(sum);
}

export function scoreToken(row: Float32Array, id: number, top: number): ScoredToken {
  const z = logSumExp(row);
  const best: ScoredId[] = [];
  if (top > 0) {
    for (let i = 0; i < row.length; i++) {
      const v = row[i]!;
      if (v === -Infinity || (best.length === top && v <= best[top - 1]!.logprob)) continue;
      let j = best.length < top ? best.length : top - 1;
      while (j > 0 && best[j - 1]!.logprob < v) j--;
      best.splice(j, 0, { id: i, logprob: v });
      if (best.length > top) best.pop();
    }
  }
  for (const b of best) b.logprob -= z;
  return { logprob: row[id]! - z, top: best };
}
