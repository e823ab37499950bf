/**
 * Token sampling on a row of logits: repetition penalty (CTRL), then greedy when the
 * temperature is 0, else temperature, top-k, top-p (nucleus) and a draw from a seeded
 * PRNG. Each sequence owns its Sampler, so its draws depend only on its own seed and
 * history — the same seed gives the same tokens whatever else is batched with it.
 *
 * @example
 * const sampler = new Sampler({ temperature: 0.8, topK: 40, topP: 0.95, repetitionPenalty: 1.1, seed: 7 });
 * const id = sampler.sample(logits, previousIds);
 */
import type { SamplingParams } from '../../core/sampling.js';

export type SamplerParams = Pick<SamplingParams, 'temperature' | 'topK' | 'topP' | 'repetitionPenalty' | 'seed'> &
  Partial<Pick<SamplingParams, 'frequencyPenalty' | 'presencePenalty' | 'logitBias'>>;

/** A 32-bit PRNG (mulberry32) whose whole state is one number, so it can be saved. */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

export function argmax(x: ArrayLike<number>): number {
  if (x instanceof Float32Array) return argmaxF32(x);
  let best = 0;
  let bestVal = -Infinity;
  for (let i = 0; i < x.length; i++) {
    if (x[i]! > bestVal) {
      bestVal = x[i]!;
      best = i;
    }
  }
  return best;
}

/**
 * argmax on a Float32Array (a logits row), paid on every greedy token: four lanes, each
 * with its largest value and that value's first index, then the smallest index among the
 * lanes holding the overall largest — the index the generic loop returns (NaNs skipped; 0
 * when nothing exceeds −∞). The generic loop waits on each compare and sees plain arrays
 * too, so its loads go polymorphic: ~100 µs over SmolLM2's 49,152 logits, ~40 µs here.
 */
function argmaxF32(x: Float32Array): number {
  const n = x.length;
  let m0 = -Infinity;
  let m1 = -Infinity;
  let m2 = -Infinity;
  let m3 = -Infinity;
  let i0 = 0;
  let i1 = 0;
  let i2 = 0;
  let i3 = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const a = x[i]!;
    const b = x[i + 1]!;
    const c = x[i + 2]!;
    const d = x[i + 3]!;
    if (a > m0) {
      m0 = a;
      i0 = i;
    }
    if (b > m1) {
      m1 = b;
      i1 = i + 1;
    }
    if (c > m2) {
      m2 = c;
      i2 = i + 2;
    }
    if (d > m3) {
      m3 = d;
      i3 = i + 3;
    }
  }
  for (; i < n; i++) {
    if (x[i]! > m0) {
      m0 = x[i]!;
      i0 = i;
    }
  }
  const m = Math.max(m0, m1, m2, m3);
  if (m === -Infinity) return 0;
  let best = n;
  if (m0 === m) best = i0;
  if (m1 === m && i1 < best) best = i1;
  if (m2 === m && i2 < best) best = i2;
  if (m3 === m && i3 < best) best = i3;
  return best;
}

/** CTRL's penalty on every id seen: positive logits divided by it, negative multiplied. */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    const v = logits[id];
    if (v === undefined) continue;
    logits[id] = v > 0 ? v / penalty : v * penalty;
  }
}

/**
 * OpenAI's logit_bias, then its frequency and presence penalties over the generated
 * tokens: logit[t] += bias[t] − count[t]·frequency − (count[t] > 0)·presence.
 */
export function applyOpenAiAdjustments(
  logits: Float32Array,
  generated: Iterable<number>,
  params: Partial<Pick<SamplingParams, 'frequencyPenalty' | 'presencePenalty' | 'logitBias'>>,
): void {
  for (const [id, bias] of Object.entries(params.logitBias ?? {})) {
    const i = Number(id);
    if (i < logits.length) logits[i]! += bias;
  }
  const frequency = params.frequencyPenalty ?? 0;
  const presence = params.presencePenalty ?? 0;
  if (frequency === 0 && presence === 0) return;
  const counts = new Map<number, number>();
  for (const id of generated) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const [id, n] of counts) if (id < logits.length) logits[id]! -= n * frequency + presence;
}

/**
 * The candidate distribution after temperature, top-k and top-p: token ids and their
 * renormalised probabilities, most likely first. Exposed for tests and for samplers
 * (speculative acceptance) that need the distribution rather than a draw.
 */
export function candidates(logits: Float32Array, params: Pick<SamplerParams, 'temperature' | 'topK' | 'topP'>): { ids: number[]; probs: number[] } {
  const n = logits.length;
  const temp = params.temperature;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  const p = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp((logits[i]! - max) / temp);
    p[i] = e;
    total += e;
  }
  // Only tokens at least as likely as a threshold can be in the kept set; lower the
  // threshold until the candidates cover the mass needed, so we sort a few, not the vocab.
  const k = params.topK > 0 ? Math.min(params.topK, n) : n;
  const needMass = params.topP < 1 ? params.topP * total : total;
  let threshold = 1e-4 * total;
  let ids: number[] = [];
  for (;;) {
    ids = [];
    let mass = 0;
    for (let i = 0; i < n; i++) {
      if (p[i]! >= threshold) {
        ids.push(i);
        mass += p[i]!;
      }
    }
    const enough = params.topK > 0 ? ids.length >= k : mass >= needMass * (1 - 1e-12);
    if (enough || threshold === 0) break;
    threshold = threshold < 1e-30 * total ? 0 : threshold * 1e-4;
  }
  ids.sort((a, b) => p[b]! - p[a]! || a - b);
  if (ids.length > k) ids.length = k;
  if (params.topP < 1) {
    // Nucleus of what top-k left: the whole vocabulary's mass, or the top k's.
    let keptMass = total;
    if (params.topK > 0) {
      keptMass = 0;
      for (const id of ids) keptMass += p[id]!;
    }
    let cum = 0;
    let cut = ids.length;
    for (let j = 0; j < ids.length; j++) {
      cum += p[ids[j]!]!;
      if (cum >= params.topP * keptMass) {
        cut = j + 1;
        break;
      }
    }
    ids.length = cut;
  }
  let kept = 0;
  for (const id of ids) kept += p[id]!;
  return { ids, probs: ids.map((id) => p[id]! / kept) };
}

export class Sampler {
  readonly rng: Rng;
  constructor(readonly params: SamplerParams) {
    this.rng = new Rng(params.seed);
  }

  /**
   * Picks the next id. `logits` is not modified; `history` feeds the repetition penalty,
   * its part from `generatedFrom` on the frequency and presence penalties (generated
   * tokens only, as OpenAI counts them). `seen` gets the row the draw is made from
   * (penalties and logit_bias applied, before temperature): what logprobs are scored on.
   */
  sample(logits: Float32Array, history: readonly number[] = [], generatedFrom = history.length, seen?: (row: Float32Array) => void): number {
    let row = logits;
    const p = this.params;
    const adjusts = (p.frequencyPenalty ?? 0) !== 0 || (p.presencePenalty ?? 0) !== 0 || Object.keys(p.logitBias ?? {}).length > 0;
    if (p.repetitionPenalty !== 1 || adjusts) row = logits.slice();
    if (p.repetitionPenalty !== 1) applyRepetitionPenalty(row, history, p.repetitionPenalty);
    if (adjusts) applyOpenAiAdjustments(row, history.slice(generatedFrom), p);
    seen?.(row);
    if (this.params.temperature === 0) return argmax(row);
    if (this.params.topK === 0 && this.params.topP >= 1) return this.drawFull(row);
    const { ids, probs } = candidates(row, this.params);
    let u = this.rng.next();
    for (let j = 0; j < ids.length; j++) {
      u -= probs[j]!;
      if (u < 0) return ids[j]!;
    }
    return ids[ids.length - 1]!;
  }

  /** Plain temperature sampling over the whole vocabulary: no sort needed. */
  private drawFull(row: Float32Array): number {
    const t = this.params.temperature;
    let max = -Infinity;
    for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
    const p = new Float64Array(row.length);
    let total = 0;
    for (let i = 0; i < row.length; i++) total += p[i] = Math.exp((row[i]! - max) / t);
    let u = this.rng.next() * total;
    for (let i = 0; i < row.length; i++) {
      u -= p[i]!;
      if (u < 0) return i;
    }
    return argmax(row);
  }
}
