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

/** The instruction prompts as the model's chat template renders them, the assistant's answer left for the model. */
export function instructionPrompts(tokenizer: ModelTokenizer, n: number, heldOut: boolean, seed: number, maxPromptTokens: number): number[][] {
  const pools = _internal.makePools(buildCorpus(), heldOut);
  const out: number[][] = [];
  const rng = makeRng(seed + (heldOut ? 1 : 0));
  for (let round = 0; out.length < n && round < 20; round++) {
    for (const item of generateItems(pools, rng, n, SHARES, 'heads')) {
      const messages = item.messages.filter((m, i) => !(m.role === 'assistant' && i === item.messages.length - 1));
      const ids = tokenizer.encodePrompt(tokenizer.renderChat(messages));
      if (ids.length <= maxPromptTokens) out.push(ids);
      if (out.length >= n) break;
    }
  }
  return out;
}

/** Generates the continuations and caches the hidden states of their positions. */
export function distill(model: LoadedModel, tokenizer: ModelTokenizer, o: DistillOptions): DistilledRows {
  const prompts = instructionPrompts(tokenizer, o.prompts, o.heldOut, o.seed ?? 1, o.maxPromptTokens ?? 256);
  const generated = generate(model, tokenizer, prompts, o.maxTokens, o.onProgress);
  const d = model.config.hiddenSize;
  const K = o.heads;
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
  return { hidden: flat, targets: Int32Array.from(targets), next: Int32Array.from(next), rows: hidden.length, heads: K, hiddenSize: d, prompts: prompts.length };
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
): { tokens: number[]; hidden: Float32Array[] }[] {
  const greedy = (logits: Float32Array) => {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  };
  const s = new Scheduler({ model, sampler: () => greedy, maxBatch: 16 });
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
