/**
 * Prompt compression before prefill, LLMLingua's iterative token-level compression over
 * Selective Context's lexical units. The prompt is walked in segments of about
 * `segmentTokens` tokens (cut at unit boundaries). Each token of a segment is scored by its
 * self-information −log p(token | kept text before it, earlier tokens of its segment),
 * with the scorer's KV cache carried from segment to segment; once a segment's survivors
 * are chosen, the cache is extended with the kept tokens only, so later segments are
 * conditioned on the compressed text, exactly as the target model will read it.
 *
 * Units are ranked by their total self-information (see `unitScore`: sum, not mean) and
 * the lowest-ranked droppable units of each segment are dropped until the segment meets its
 * share of the budget. Special tokens, chat headers, newlines, `keep` phrases and the
 * protected suffix are never dropped; the rate counts them as kept (see `budget`).
 *
 * Memory is bounded by the segment, not by the prompt: one forward holds one segment's
 * logits (segment × vocab floats) and activations, and the carried cache is capped at
 * `maxCacheTokens` (the first `SINK_TOKENS` plus the most recent ones), which answers
 * LLMLingua's "memory and time on long inputs" (issue #147). All KV is disposed as it
 * goes; tf.memory().numTensors is back to its baseline when `compressPrompt` returns.
 *
 * `PromptCompressor` does one segment per `step()`, so a scheduler can interleave
 * compression with other sequences' decode steps the way it chunks prefill.
 *
 * @example
 * const ids = tokenizer.encode(tokenizer.renderChat([{ role: 'user', content: longText }]));
 * const out = compressPrompt(model, tokenizer, ids, { rate: 0.5, protectedSuffix: 24 });
 * // out.ids: about half as many tokens, whole words, chat markers intact
 */
import * as tf from '@tensorflow/tfjs-core';
import { BadRequestError } from '../../core/errors.js';
import { forward } from '../model/forward.js';
import type { ForwardSequenceResult, LayerKvChunks, LoadedModel } from '../model/types.js';
import { ScorerHead, type ScorerVocab } from './scorer-head.js';
import { lexicalUnits, type UnitTokenizer } from './units.js';

export interface CompressOptions {
  /** Fraction of the prompt's tokens to keep, in (0, 1]; 1 returns the prompt unchanged. */
  rate: number;
  /** Phrases that are never dropped. */
  keep?: readonly string[];
  /** Tokens at the end that are never dropped: the question, the assistant header. */
  protectedSuffix?: number;
  /** Tokens scored per forward (LLMLingua's segment); bounds memory per step. */
  segmentTokens?: number;
  /** Most kept tokens the scorer's cache holds; older ones (after the first few) are evicted. */
  maxCacheTokens?: number;
  /** Score with only the first N layers (cheaper, coarser); default every layer. */
  scorerLayers?: number;
  /** The scorer's softmax over every id (`full`, default) or the prompt's own ids (`context`, far cheaper): scorer-head.ts. */
  scorerVocab?: ScorerVocab;
}

export interface CompressResult {
  ids: number[];
  keptTokens: number;
  originalTokens: number;
  /** Indices (into the original ids) of the kept tokens, ascending. */
  keptIndices: number[];
}

/** LLMLingua's segment size: long enough for context, short enough to bound one forward. */
export const DEFAULT_SEGMENT_TOKENS = 200;
/** A cache of 1024 kept tokens covers a compressed 2–3k-token prompt whole, at a few MB. */
export const DEFAULT_MAX_CACHE_TOKENS = 1024;
/** Kept at the start when the cache is trimmed: attention sinks keep scores stable. */
const SINK_TOKENS = 4;
/** Chunks per layer before the cache is concatenated into one (keeps attention's concat short). */
const COMPACT_CHUNKS = 8;

/** −log softmax(logits)[id], in nats, computed stably in float64. */
export function negLogProb(logits: Float32Array, id: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return max + Math.log(sum) - logits[id]!;
}

/**
 * The scorer's state across segments: a KV cache of the kept text (positions as in the
 * compressed prompt) and the logits that predict the next token after it.
 */
class CarriedScorer {
  private readonly cache: LayerKvChunks[];
  private readonly layers: number[];
  private cacheTokens = 0;
  /** Position of the next kept token in the compressed prompt (the cache may be trimmed). */
  private nextPosition = 0;
  /** The final-normed hidden row that predicts the next token after the kept text, or null before the first token (nothing predicts it). */
  private lastHidden: Float32Array | null = null;
  /** The segment being decided: its ids, forward result (KV owned until commit). */
  private pending: { ids: number[]; result: ForwardSequenceResult } | null = null;
  private readonly head: ScorerHead;

  constructor(
    private readonly model: LoadedModel,
    scorerLayers: number | undefined,
    private readonly maxCacheTokens: number,
    vocab: ScorerVocab,
    promptIds: readonly number[],
  ) {
    this.head = new ScorerHead(model, vocab, promptIds);
    const L = model.config.numLayers;
    const n = Math.min(L, Math.max(1, Math.floor(scorerLayers ?? L)));
    this.layers = Array.from({ length: n }, (_, l) => l);
    this.cache = Array.from({ length: L }, () => ({ k: [], v: [] }));
  }

  /** The scorer's layers over `ids` after the cache: every token's final-normed hidden row, no LM head (the ScorerHead scores). */
  private run(ids: number[]): ForwardSequenceResult {
    const positions = ids.map((_, i) => this.nextPosition + i);
    const opts = this.layers.length < this.model.config.numLayers ? { layers: this.layers } : {};
    return forward(this.model, [{ ids, positions, past: this.cache, hiddenOnly: true }], opts)[0]!;
  }

  /** Self-information of each token of the segment given the kept text and the segment so far. */
  score(ids: number[]): Float64Array {
    if (this.pending !== null) throw new Error('CarriedScorer: commit the previous segment first');
    const result = this.run(ids);
    this.pending = { ids, result };
    // Row i predicts token i: the kept text's last row for the first, then the segment's own.
    const rows = [...(this.lastHidden === null ? [] : [this.lastHidden]), ...result.hidden!.slice(0, ids.length - 1)];
    const targets = this.lastHidden === null ? ids.slice(1) : ids;
    const h = this.model.config.hiddenSize;
    const flat = new Float32Array(rows.length * h);
    rows.forEach((r, i) => flat.set(r, i * h));
    const x = tf.tensor2d(flat, [rows.length, h]);
    let scored: Float64Array;
    try {
      scored = this.head.information(x, targets);
    } finally {
      x.dispose();
    }
    const info = new Float64Array(ids.length);
    info[0] = Infinity;
    info.set(scored, ids.length - scored.length);
    return info;
  }

  /**
   * Extends the cache with the kept tokens of the pending segment. The KV of the kept
   * prefix before the first dropped token is exactly what a kept-only forward would give
   * (those tokens saw nothing that is dropped), so it is reused; the kept tokens after
   * the first drop are run again over the compressed text.
   */
  commit(keep: ArrayLike<boolean>): void {
    const p = this.pending;
    if (p === null) throw new Error('CarriedScorer: nothing to commit');
    this.pending = null;
    const n = p.ids.length;
    let prefix = 0;
    while (prefix < n && keep[prefix]) prefix++;
    const newKv = p.result.newKv;
    if (prefix === n) {
      this.appendKv(newKv, null);
      this.lastHidden = p.result.hidden![n - 1]!;
      this.nextPosition += n;
    } else {
      try {
        if (prefix > 0) {
          this.appendKv(newKv, prefix);
          this.lastHidden = p.result.hidden![prefix - 1]!;
          this.nextPosition += prefix;
        }
      } finally {
        tf.dispose(newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
      }
      const rest: number[] = [];
      for (let i = prefix + 1; i < n; i++) if (keep[i]) rest.push(p.ids[i]!);
      if (rest.length > 0) {
        const r = this.run(rest);
        this.appendKv(r.newKv, null);
        this.lastHidden = r.hidden!.at(-1)!;
        this.nextPosition += rest.length;
      }
    }
    this.trim();
  }

  /** Takes a forward's KV (all rows, or the first `rows` rows as copies). */
  private appendKv(newKv: ForwardSequenceResult['newKv'], rows: number | null): void {
    let added = 0;
    newKv.forEach((e, l) => {
      if (e === null) return;
      const layer = this.cache[l]!;
      if (rows === null) {
        layer.k.push(e.k);
        layer.v.push(e.v);
        added = e.k.shape[0];
      } else {
        const w = e.k.shape[1];
        layer.k.push(tf.slice(e.k, [0, 0], [rows, w]));
        layer.v.push(tf.slice(e.v, [0, 0], [rows, w]));
        added = rows;
      }
      if (layer.k.length > COMPACT_CHUNKS) this.compact(layer);
    });
    this.cacheTokens += added;
  }

  private compact(layer: LayerKvChunks): void {
    const k = tf.concat(layer.k, 0) as tf.Tensor2D;
    const v = tf.concat(layer.v, 0) as tf.Tensor2D;
    tf.dispose([...layer.k, ...layer.v]);
    layer.k = [k];
    layer.v = [v];
  }

  /** Evicts the oldest kept tokens (after the sinks) once the cache passes its cap. */
  private trim(): void {
    if (this.cacheTokens <= this.maxCacheTokens) return;
    const keepTail = this.maxCacheTokens - SINK_TOKENS;
    for (const layer of this.cache) {
      if (layer.k.length === 0) continue;
      const cut = (chunks: tf.Tensor2D[]) =>
        tf.tidy(() => {
          const all = chunks.length === 1 ? chunks[0]! : (tf.concat(chunks, 0) as tf.Tensor2D); // (cacheTokens, kvDim)
          const w = all.shape[1];
          const head = tf.slice(all, [0, 0], [SINK_TOKENS, w]);
          const tail = tf.slice(all, [all.shape[0] - keepTail, 0], [keepTail, w]);
          return tf.concat([head, tail], 0) as tf.Tensor2D; // (maxCacheTokens, kvDim)
        });
      const k = cut(layer.k);
      const v = cut(layer.v);
      tf.dispose([...layer.k, ...layer.v]);
      layer.k = [k];
      layer.v = [v];
    }
    this.cacheTokens = this.maxCacheTokens;
  }

  dispose(): void {
    if (this.pending !== null) {
      tf.dispose(this.pending.result.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
      this.pending = null;
    }
    for (const layer of this.cache) {
      tf.dispose([...layer.k, ...layer.v]);
      layer.k = [];
      layer.v = [];
    }
    this.cacheTokens = 0;
    this.head.dispose();
  }
}

function checkOptions(options: CompressOptions): void {
  const { rate, segmentTokens, maxCacheTokens, protectedSuffix, scorerLayers, scorerVocab } = options;
  if (!(Number.isFinite(rate) && rate > 0 && rate <= 1)) throw new BadRequestError('compress.rate', `must be in (0, 1], got ${rate}`);
  if (segmentTokens !== undefined && !(Number.isInteger(segmentTokens) && segmentTokens >= 1)) {
    throw new BadRequestError('compress.segmentTokens', 'must be a positive integer');
  }
  if (maxCacheTokens !== undefined && !(Number.isInteger(maxCacheTokens) && maxCacheTokens > SINK_TOKENS)) {
    throw new BadRequestError('compress.maxCacheTokens', `must be an integer above ${SINK_TOKENS}`);
  }
  if (protectedSuffix !== undefined && !(Number.isInteger(protectedSuffix) && protectedSuffix >= 0)) {
    throw new BadRequestError('compress.protectedSuffix', 'must be a non-negative integer');
  }
  if (scorerLayers !== undefined && !(Number.isInteger(scorerLayers) && scorerLayers >= 1)) {
    throw new BadRequestError('compress.scorerLayers', 'must be a positive integer');
  }
  if (scorerVocab !== undefined && scorerVocab !== 'full' && scorerVocab !== 'context') {
    throw new BadRequestError('compress.scorerVocab', `must be 'full' or 'context', got ${JSON.stringify(scorerVocab)}`);
  }
}

/**
 * A unit's score: the SUM of its tokens' self-information, which by the chain rule is the
 * unit's own self-information, −log p(unit | context). Not the mean: a rare word, a name or
 * a number is split by BPE into several tokens of which only the first few are
 * surprising (after "Robesp", "ierre" is nearly certain), and the mean would dilute
 * exactly the units that carry the facts (LLMLingua issue #89, "key facts lost"). The
 * mean ranks by information per token of budget, a knapsack view; measured on passage QA
 * (20 items, an early skein-mini checkpoint), the sum kept the answer in 95 % / 70 % of
 * prompts at rate 0.5 / 0.33 where the mean kept 70 % / 45 %. Part of that is BPE length
 * itself standing for rarity (random weights with the sum keep 95 % / 80 %): the bench
 * reports retention so the model's share can be read off.
 */
export function unitScore(info: ArrayLike<number>, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += info[i]!;
  return sum;
}

/**
 * The share of droppable tokens to keep so that the whole prompt keeps `rate` of its
 * tokens: forced tokens count as kept, so the droppable ones give up what they take.
 * When the forced tokens alone pass the budget, every droppable token goes.
 */
export function budget(rate: number, total: number, forced: number): number {
  const droppable = total - forced;
  if (droppable <= 0) return 1;
  return Math.min(1, Math.max(0, (Math.round(rate * total) - forced) / droppable));
}

/** Compression of one prompt, one segment per step. Dispose it when abandoned early. */
export class PromptCompressor {
  readonly originalTokens: number;
  private readonly ids: number[];
  private readonly scorer: CarriedScorer | null;
  /** Token ranges [from, to) of the segments, cut at unit boundaries. */
  private readonly segments: [number, number][] = [];
  private readonly unitStarts: number[];
  private readonly forced: Uint8Array;
  private readonly droppableRate: number;
  private next = 0;
  private droppableSeen = 0;
  private droppableKept = 0;
  private readonly kept: number[] = [];
  /** The last scored segment and its tokens' self-information (for inspection and tests). */
  lastSegment: { from: number; to: number; scores: Float64Array } | null = null;

  constructor(model: LoadedModel, tokenizer: UnitTokenizer, ids: readonly number[], options: CompressOptions) {
    checkOptions(options);
    this.ids = ids.slice();
    this.originalTokens = ids.length;
    const trivial = options.rate >= 1 || ids.length < 2;
    const units = trivial ? null : lexicalUnits(tokenizer, ids, { keep: options.keep, protectedSuffix: options.protectedSuffix });
    this.unitStarts = units?.starts ?? [];
    this.forced = units?.forced ?? new Uint8Array(ids.length);
    let forced = 0;
    for (const f of this.forced) forced += f;
    this.droppableRate = trivial ? 1 : budget(options.rate, ids.length, forced);
    if (units === null || this.droppableRate >= 1) {
      // Nothing to drop: no model call at all.
      this.scorer = null;
      for (let i = 0; i < ids.length; i++) this.kept.push(i);
      return;
    }
    const per = options.segmentTokens ?? DEFAULT_SEGMENT_TOKENS;
    let from = 0;
    for (let u = 1; u <= units.starts.length; u++) {
      const end = u < units.starts.length ? units.starts[u]! : ids.length;
      if (end - from >= per || end === ids.length) {
        this.segments.push([from, end]);
        from = end;
      }
    }
    this.scorer = new CarriedScorer(model, options.scorerLayers, options.maxCacheTokens ?? DEFAULT_MAX_CACHE_TOKENS, options.scorerVocab ?? 'full', ids);
  }

  get done(): boolean {
    return this.scorer === null || this.next >= this.segments.length;
  }

  /** Scores and decides the next segment; returns true when the whole prompt is done. */
  step(): boolean {
    if (this.done) return true;
    const [from, to] = this.segments[this.next++]!;
    try {
      const info = this.scorer!.score(this.ids.slice(from, to));
      this.lastSegment = { from, to, scores: info };
      const keep = this.decide(info, from, to);
      this.scorer!.commit(keep);
      for (let i = from; i < to; i++) if (keep[i - from]) this.kept.push(i);
    } catch (err) {
      this.dispose();
      throw err;
    }
    if (this.done) this.scorer!.dispose();
    return this.done;
  }

  /** Drops the lowest-scoring droppable units of a segment until it meets its share. */
  private decide(info: Float64Array, from: number, to: number): boolean[] {
    const keep = new Array<boolean>(to - from).fill(true);
    const units: { start: number; end: number; score: number }[] = [];
    let droppable = 0;
    // Units inside [from, to): segments are cut at unit starts, so each lies wholly inside.
    let u = this.unitStarts.findIndex((s) => s >= from);
    for (; u < this.unitStarts.length && this.unitStarts[u]! < to; u++) {
      const start = this.unitStarts[u]!;
      const end = u + 1 < this.unitStarts.length ? this.unitStarts[u + 1]! : this.ids.length;
      if (this.forced[start]) continue;
      units.push({ start, end, score: unitScore(info, start - from, end - from) });
      droppable += end - start;
    }
    // Error diffusion: each segment aims at the running total, so rounding does not add up.
    this.droppableSeen += droppable;
    const target = Math.max(0, Math.round(this.droppableRate * this.droppableSeen) - this.droppableKept);
    let keptHere = droppable;
    units.sort((a, b) => a.score - b.score || a.start - b.start);
    for (const unit of units) {
      if (keptHere <= target) break;
      const after = keptHere - (unit.end - unit.start);
      // Stop when dropping this unit would land further from the target than keeping it.
      if (Math.abs(after - target) > Math.abs(keptHere - target)) break;
      for (let i = unit.start; i < unit.end; i++) keep[i - from] = false;
      keptHere = after;
    }
    this.droppableKept += keptHere;
    return keep;
  }

  /** Indices of the tokens kept so far, ascending. */
  get keptIndices(): readonly number[] {
    return this.kept;
  }

  result(): CompressResult {
    if (!this.done) throw new Error('PromptCompressor: result() before the last step');
    return { ids: this.kept.map((i) => this.ids[i]!), keptTokens: this.kept.length, originalTokens: this.originalTokens, keptIndices: this.kept.slice() };
  }

  /** Frees the scorer's cache (idempotent). */
  dispose(): void {
    this.scorer?.dispose();
  }
}

/**
 * Compresses a prompt to about `rate` of its tokens (see the module header). Synchronous:
 * it runs the model; in the engine it runs where the model lives.
 */
export function compressPrompt(model: LoadedModel, tokenizer: UnitTokenizer, ids: readonly number[], options: CompressOptions): CompressResult {
  const c = new PromptCompressor(model, tokenizer, ids, options);
  try {
    while (!c.step());
    return c.result();
  } finally {
    c.dispose();
  }
}

/**
 * Self-information of every token with nothing dropped, scored segment by segment over
 * the carried cache: the same computation compressPrompt does, exposed so that it can be
 * checked against one forward over the whole prompt. Entry 0 is Infinity (nothing
 * predicts the first token).
 */
export function selfInformation(
  model: LoadedModel,
  ids: readonly number[],
  options: Pick<CompressOptions, 'segmentTokens' | 'scorerLayers' | 'maxCacheTokens' | 'scorerVocab'> = {},
): Float64Array {
  const per = options.segmentTokens ?? DEFAULT_SEGMENT_TOKENS;
  const scorer = new CarriedScorer(model, options.scorerLayers, options.maxCacheTokens ?? DEFAULT_MAX_CACHE_TOKENS, options.scorerVocab ?? 'full', ids);
  const out = new Float64Array(ids.length);
  try {
    for (let from = 0; from < ids.length; from += per) {
      const seg = ids.slice(from, from + per);
      out.set(scorer.score(seg), from);
      scorer.commit(new Array<boolean>(seg.length).fill(true));
    }
  } finally {
    scorer.dispose();
  }
  return out;
}
