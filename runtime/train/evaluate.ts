/**
 * Evaluates a model folder through the runtime's own forward (what users run): held-out
 * perplexity per data part, and greedy answers to held-out instruction items (passage QA,
 * SoT skeletons, routing, definitions) scored by the data package's scorer.
 *
 * @example
 * const model = await loadModel('skein-mini');
 * const ppl = perplexityByPart(model, { email: [[4093, 12, 99, ...]] });
 * const qa = await evalItems(model, items.filter((i) => i.kind === 'qa'));
 */
import fs from 'node:fs';
import { forward } from '../model/forward.js';
import type { LoadedCheckpoint } from '../checkpoint/load.js';
import { lastValueFrom } from 'rxjs';
import type { GenerateEvent } from '../../core/engine.js';
import type { SamplingParams } from '../../core/sampling.js';
import { engineOnModel } from '../engine/index.js';
import { renderChat } from './data/tokenizer-files.js';
import { scoreEvalItem, type EvalItem, type EvalKind } from './data/instruct.js';

/** Mean next-token NLL and perplexity of each part over its token windows (optionally with a layer subset). */
export function perplexityByPart(model: LoadedCheckpoint, windows: Record<string, number[][]>, layers?: number[]): Record<string, { loss: number; perplexity: number; tokens: number }> {
  const out: Record<string, { loss: number; perplexity: number; tokens: number }> = {};
  for (const [part, list] of Object.entries(windows)) {
    let sum = 0;
    let n = 0;
    for (const ids of list) {
      const [r] = forward(model, [{ ids: ids.slice(0, -1), logits: 'all' }], layers ? { layers } : {});
      for (let t = 0; t < r.logits.length; t++) {
        const row = r.logits[t];
        let max = -Infinity;
        for (const x of row) if (x > max) max = x;
        let z = 0;
        for (const x of row) z += Math.exp(x - max);
        sum += Math.log(z) + max - row[ids[t + 1]];
        n++;
      }
      for (const kv of r.newKv) {
        kv?.k.dispose();
        kv?.v.dispose();
      }
    }
    out[part] = { loss: sum / n, perplexity: Math.exp(sum / n), tokens: n };
  }
  return out;
}

export interface ItemResult {
  id: string;
  kind: EvalKind;
  output: string;
  pass: boolean;
  score: number;
}

export interface ItemsSummary {
  byKind: Partial<Record<EvalKind, { n: number; passed: number; accuracy: number; meanScore: number }>>;
  results: ItemResult[];
}

/**
 * Answers to raw prompts on the shared engine over `model` (this thread), all submitted
 * at once so the scheduler batches them; `layers` runs every forward on that layer subset.
 */
async function answers(model: LoadedCheckpoint, prompts: string[], sampling: Partial<SamplingParams>, layers?: number[]): Promise<string[]> {
  const engine = engineOnModel(model, model.tokenizer(), layers ? { forward: (m, seqs) => forward(m, seqs, { layers }) } : {});
  try {
    const done = await Promise.all(prompts.map((prompt) => lastValueFrom(engine.generate({ prompt, sampling }))));
    return done.map((e) => (e as Extract<GenerateEvent, { type: 'done' }>).text);
  } finally {
    await engine.close();
  }
}

/** Greedy answers (ChatML prompt, stop at <|im_end|>) to eval items, scored. */
export async function evalItems(model: LoadedCheckpoint, items: EvalItem[], opts: { maxTokens?: number; layers?: number[]; batch?: number } = {}): Promise<ItemsSummary> {
  const results: ItemResult[] = [];
  const batch = opts.batch ?? 4;
  for (let i = 0; i < items.length; i += batch) {
    const chunk = items.slice(i, i + batch);
    const outs = await answers(
      model,
      chunk.map((it) => renderChat(it.messages, true)),
      { temperature: 0, maxTokens: opts.maxTokens ?? (chunk.some((c) => c.kind === 'skeleton') ? 64 : 32) },
      opts.layers,
    );
    chunk.forEach((it, j) => {
      const s = scoreEvalItem(it, outs[j]);
      results.push({ id: it.id, kind: it.kind, output: outs[j], pass: s.pass, score: s.score });
    });
  }
  const byKind: ItemsSummary['byKind'] = {};
  for (const r of results) {
    const k = (byKind[r.kind] ??= { n: 0, passed: 0, accuracy: 0, meanScore: 0 });
    k.n++;
    if (r.pass) k.passed++;
    k.meanScore += r.score;
  }
  for (const k of Object.values(byKind)) {
    k.accuracy = k.passed / k.n;
    k.meanScore /= k.n;
  }
  return { byKind, results };
}

export function readEvalItems(file: string): EvalItem[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as EvalItem);
}

/** Greedy text for one chat turn (model card samples). */
export async function chat(model: LoadedCheckpoint, user: string, maxTokens = 96, layers?: number[]): Promise<string> {
  const [text] = await answers(model, [renderChat([{ role: 'user', content: user }], true)], { temperature: 0, maxTokens, repetitionPenalty: 1.1 }, layers);
  return text;
}

/**
 * Teacher-forced mean −log p per token of `answer` (followed by the end-of-turn token)
 * after the chat prompt of `messages`. Finer than exact-match accuracy: it moves before a
 * small model's greedy answers become right, so it can bound passage-QA quality.
 */
export function answerNll(model: LoadedCheckpoint, messages: EvalItem['messages'], answer: string): number {
  const tok = model.tokenizer();
  const prompt = tok.encode(renderChat(messages, true));
  const target = [...tok.encode(answer), ...tok.eosIds.slice(0, 1)];
  const ids = [...prompt, ...target];
  const [res] = forward(model, [{ ids, logits: 'all' }]);
  for (const kv of res!.newKv) {
    if (kv) {
      kv.k.dispose();
      kv.v.dispose();
    }
  }
  let nll = 0;
  for (let i = 0; i < target.length; i++) {
    // The logits at position p predict token p+1.
    const row = res!.logits[prompt.length - 1 + i]!;
    let max = -Infinity;
    for (const x of row) if (x > max) max = x;
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    nll += max + Math.log(sum) - row[target[i]!]!;
  }
  return nll / target.length;
}
