/**
 * Self-distillation data for speculative heads (Medusa-1's recipe, TECHNIQUES §4): the
 * base model's own greedy continuations of the project's instruction prompts (the chat,
 * Skeleton-of-Thought, router and QA prompts of runtime/train/data/instruct.ts, train
 * and held-out pools kept apart), with the final hidden state of every continuation
 * position cached, so the heads train without re-running the backbone.
 *
 * A row is one position: its hidden state (after the final norm, what the LM head reads)
 * and the continuation tokens after the one the base model predicts from it: target k is
 * what head k should say (-1 past the end of the continuation).
 *
 * Continuations are generated in the batched scheduler, which hands over each chosen
 * token's hidden state as it goes (SequenceListener.hidden): one pass, no second forward.
 *
 * @example
 * const rows = await distill(model, tokenizer, { prompts: 64, maxTokens: 96, heads: 4, heldOut: false });
 */
import { resolveSampling } from '../../core/sampling.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import type { LoadedModel } from '../model/types.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { buildCorpus } from './data/corpus.js';
import { _internal, generateItems, type InstructKind } from './data/instruct.js';
import { makeRng } from './data/util.js';

export interface DistilledRows {
  hidden: Float32Array; // (rows, hiddenSize)
  targets: Int32Array; // (rows, heads): -1 where the continuation has ended
  /** The base model's own next token at each row (what plain greedy decoding picks there). */
  next: Int32Array; // (rows)
  rows: number;
  heads: number;
  hiddenSize: number;
  prompts: number;
}

export interface DistillOptions {
  prompts: number;
  maxTokens: number;
  heads: number;
  heldOut: boolean;
  seed?: number;
  /** Prompts longer than this (tokens) are skipped: the heads learn continuations, not long contexts. */
  maxPromptTokens?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Shares of the project's instruction kinds (the QA kind has long passages, so fewer of them). */
const SHARES: Record<InstructKind, number> = { chat: 0.35, skeleton: 0.2, point: 0.2, router: 0.1, qa: 0.15 };

/** Word sets at or above this Jaccard similarity count as near-duplicates (templated prompts differing in a word or two). */
export const NEAR_DUPLICATE = 0.8;

/** The lower-cased words of a prompt's messages, the set near-duplicate checks compare. */
export function promptWords(text: string): Set<string> {
  return new Set(text.toLowerCase().match(/[a-z0-9']+/g) ?? []);
}

export function jaccard(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  let shared = 0;
  for (const w of a) if (b.has(w)) shared++;
  const union = a.size + b.size - shared;
  return union === 0 ? 1 : shared / union;
}

/**
 * The instruction prompts as the model's chat template renders them, the assistant's answer
 * left for the model; a prompt whose words are a near-duplicate of an earlier one's is
 * skipped (templated prompts give templated continuations, which would flatter the
 * held-out figures). The list for n is a prefix of the list for any larger n (one seeded
 * stream, filtered in order), so cached chunks of it stay valid when more are asked for.
 */
export function instructionPrompts(tokenizer: ModelTokenizer, n: number, heldOut: boolean, seed: number, maxPromptTokens: number): number[][] {
  return instructionPromptTexts(tokenizer, n, heldOut, seed, maxPromptTokens).map((p) => p.ids);
}

/** The corpus pools per split, built once per process: building them takes seconds, and the cache asks per chunk. */
const pools = new Map<boolean, ReturnType<typeof _internal.makePools>>();
function poolsFor(heldOut: boolean): ReturnType<typeof _internal.makePools> {
  let p = pools.get(heldOut);
  if (p === undefined) pools.set(heldOut, (p = _internal.makePools(buildCorpus(), heldOut)));
  return p;
}

export function instructionPromptTexts(tokenizer: ModelTokenizer, n: number, heldOut: boolean, seed: number, maxPromptTokens: number): { ids: number[]; words: Set<string> }[] {
  const pools = poolsFor(heldOut);
  const out: { ids: number[]; words: Set<string> }[] = [];
  const rng = makeRng(seed + (heldOut ? 1 : 0));
  for (let round = 0; out.length < n && round < 20; round++) {
    for (const item of generateItems(pools, rng, n, SHARES, 'heads')) {
      const messages = item.messages.filter((m, i) => !(m.role === 'assistant' && i === item.messages.length - 1));
      const words = promptWords(messages.map((m) => m.content).join('\n'));
      if (out.some((p) => jaccard(p.words, words) >= NEAR_DUPLICATE)) continue;
      const ids = tokenizer.encodePrompt(tokenizer.renderChat(messages));
      if (ids.length <= maxPromptTokens) out.push({ ids, words });
      if (out.length >= n) break;
    }
  }
  return out;
}

/** Generates the continuations and caches the hidden states of their positions. */
export function distill(model: LoadedModel, tokenizer: ModelTokenizer, o: DistillOptions): DistilledRows {
  const prompts = instructionPrompts(tokenizer, o.prompts, o.heldOut, o.seed ?? 1, o.maxPromptTokens ?? 256);
  return rowsOf(generate(model, tokenizer, prompts, o.maxTokens, o.onProgress), model.config.hiddenSize, o.heads, prompts.length);
}

/** Rows of generated continuations: one per position, targets the K tokens after the model's own next one. */
export function rowsOf(generated: readonly { tokens: number[]; hidden: Float32Array[] }[], d: number, K: number, prompts: number): DistilledRows {
  const hidden: Float32Array[] = [];
  const targets: number[] = [];
  const next: number[] = [];
  for (const { tokens: cont, hidden: rows } of generated) {
    if (cont.length < 2) continue;
    rows.forEach((h, i) => {
      hidden.push(h);
      next.push(cont[i]!);
      for (let k = 0; k < K; k++) targets.push(cont[i + 1 + k] ?? -1);
    });
  }
  const flat = new Float32Array(hidden.length * d);
  hidden.forEach((h, i) => flat.set(h, i * d));
  return { hidden: flat, targets: Int32Array.from(targets), next: Int32Array.from(next), rows: hidden.length, heads: K, hiddenSize: d, prompts };
}

/**
 * Greedy continuations of every prompt, batched by the scheduler, with the hidden state that
 * chose each token (none when `withHidden` is false); end-of-sequence dropped.
 */
export function generate(
  model: LoadedModel,
  tokenizer: ModelTokenizer,
  prompts: number[][],
  maxTokens: number,
  onProgress?: (done: number, total: number) => void,
  withHidden = true,
  maxBatch = 16,
): { tokens: number[]; hidden: Float32Array[] }[] {
  const greedy = (logits: Float32Array) => {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  };
  const s = new Scheduler({ model, sampler: () => greedy, maxBatch });
  const out = prompts.map(() => ({ tokens: [] as number[], hidden: [] as Float32Array[] }));
  let finished = 0;
  prompts.forEach((ids, i) => {
    let row: Float32Array | null = null;
    s.submit(
      { id: `p${i}`, ids, sampling: resolveSampling({ maxTokens }), eosIds: tokenizer.eosIds },
      {
        ...(withHidden ? { hidden: (h: Float32Array) => (row = h) } : {}),
        token: (t) => {
          if (tokenizer.eosIds.includes(t)) return;
          out[i]!.tokens.push(t);
          if (withHidden) out[i]!.hidden.push(row!);
        },
        done: () => onProgress?.(++finished, prompts.length),
        error: (e) => {
          throw e;
        },
      },
    );
  });
  while (s.hasWork()) s.step();
  s.pool.clearCache();
  return out;
}
