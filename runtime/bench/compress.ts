/**
 * `skein bench compress`: prompt compression (runtime/stages/compress.ts) on passage-QA
 * items (300–1500-token passages with one planted fact, from the training data's held-out
 * eval set), each item answered greedily several ways in the same run, interleaved: the full
 * prompt, and compressed to 50 % and to 33 % of its tokens by each scorer asked for.
 * Speed and quality side by side:
 *
 * - ttft_compressed50_vs_full = mean full TTFT / mean compressed TTFT (above 1 is faster);
 *   the compressed TTFT includes the compression itself. Same for total time (`total_…`).
 * - accuracy_delta_50 = accuracy compressed − accuracy full (exact answer substring in the
 *   greedy output, scoreEvalItem); answer_retained_50 = share of items whose answer is
 *   still in the compressed prompt (a check on what compression drops that does not need
 *   the model to answer well), beside answer_retained_random_scores_50: the same
 *   procedure with random token scores, so the model's own contribution shows; and
 *   answer_nll_delta_50 = change in the reference answer's mean −log p per token after the
 *   compressed prompt (teacher-forced; below 0 is better), which a weak model's 0 % exact
 *   match cannot show.
 *
 * The question is passed as a keep phrase (what compressPrompt's `question` does) and the
 * engine's default protected suffix applies. The model is models/skein-mini when present
 * (else a random model of the bench shape with the skein tokenizer, where accuracy is 0
 * both ways and only the speed figures mean anything: `note` says so).
 * Settings (`--arg key=value`): items (default 30), model, max-tokens (16), scorer-layers:
 * a comma list of scorers, each scoring with the model's first N layers (default: all of
 * them, and the engine's default, a quarter). A scorer with fewer layers is cheaper and
 * coarser; its figures are tagged `_lN` (ttft_compressed50_l2_vs_full).
 *
 * @example
 * const figures = await getBench('compress')!.run({ log: console.error, args: { items: '10' } });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { createEngine } from '../engine/index.js';
import { benchModel, round, timedRun, warmUp } from '../engine/bench-support.js';
import type { EngineFront } from '../engine/front.js';
import type { GenerateRequest } from '../../core/engine.js';
import { loadEngineModel } from '../engine/model-spec.js';
import { NotAvailableError } from '../../core/errors.js';
import { MODELS_DIR } from '../checkpoint/load.js';
import { ModelTokenizer } from '../checkpoint/tokenizer.js';
import type { LoadedModel } from '../model/types.js';
import { mulberry32 } from '../model/random.js';
import { budget, negLogProb, PromptCompressor } from '../stages/compress.js';
import { forward } from '../model/forward.js';
import { lexicalUnits } from '../stages/units.js';
import { defaultProtectedSuffix, defaultScorerLayers } from '../stages/compress-stage.js';
import type { ScorerVocab } from '../stages/scorer-head.js';
import { scoreEvalItem, type EvalItem } from '../train/data/instruct.js';
import { registerBench } from './index.js';

const ROOT = path.dirname(MODELS_DIR);
/** Built training data (skein train-data): data/ by default, .skein/train/data for training runs. */
const DATA_DIRS = [path.join(ROOT, 'data'), path.join(ROOT, '.skein', 'train', 'data')];
const dataFile = (rel: string) => DATA_DIRS.map((d) => path.join(d, rel)).find((f) => fs.existsSync(f));
const RATES = [0.5, 0.33] as const;

/** Held-out passage-QA items: data/eval/items.jsonl when built, else generated (slow). */
async function qaItems(n: number, log: (line: string) => void): Promise<EvalItem[]> {
  const file = dataFile(path.join('eval', 'items.jsonl'));
  let items: EvalItem[];
  if (file !== undefined) {
    items = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as EvalItem);
  } else {
    log('compress: no data/eval/items.jsonl (skein train-data builds it); generating eval items from the corpus');
    const { buildCorpus } = await import('../train/data/corpus.js');
    const { buildEvalItems } = await import('../train/data/instruct.js');
    items = buildEvalItems(buildCorpus(), { seed: 1001, perKind: n });
  }
  return items.filter((i) => i.kind === 'qa').slice(0, n);
}

/** The question line of a QA prompt (all three templates write "Question: …"). */
export function questionOf(item: EvalItem): string | undefined {
  return /Question: [^\n]+/.exec(item.messages.at(-1)!.content)?.[0];
}

interface Answer {
  ttftMs: number;
  totalMs: number;
  completionTokens: number;
  text: string;
  ids: number[];
}

/** One generation timed on the caller's side, with its text. */
async function timedAnswer(engine: EngineFront, request: GenerateRequest): Promise<Answer> {
  const { ttftMs, totalMs, done } = await timedRun(engine, request);
  return { ttftMs, totalMs, completionTokens: done.usage.completionTokens, text: done.text, ids: done.ids };
}

interface ModeResult extends Omit<Answer, 'text' | 'ids'> {
  compressMs: number;
  promptTokens: number;
  pass: boolean;
  retained: boolean;
  /** Mean −log p per token of the reference answer after the prompt (teacher-forced). */
  answerNll: number;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

registerBench('compress', {
  description: 'Prompt compression on passage QA: TTFT, total time and accuracy, full vs 50% vs 33%',
  async run({ log, args = {} }) {
    const n = Number(args.items ?? 30);
    const maxTokens = Number(args['max-tokens'] ?? 16);
    // Scorers to compare: every layer (LLMLingua's small LM is here the model itself), and/or
    // only the first N layers, a cheaper scorer (`--arg scorer-layers=8,2`).
    const scorerList = (args['scorer-layers'] ?? '').split(',').filter(Boolean).map(Number);
    const spec = benchModel(args);
    const random = typeof spec !== 'string';
    const engine = await createEngine({ model: spec, thread: 'main', prefixSharing: false });
    // The bench compresses on its own copy of the model (same weights: same folder or seed),
    // on this thread, so the timing is what a request with stages.compress would pay.
    const { model, tokenizer: own } = await loadEngineModel(spec);
    try {
      const tokenizerFile = dataFile(path.join('tokenizer', 'tokenizer.json'));
      if (own === null && tokenizerFile === undefined) throw new NotAvailableError('compress bench', 'no model with a tokenizer and no data/tokenizer (run skein train-data)');
      const tokenizer = own ?? ModelTokenizer.fromDir(path.dirname(tokenizerFile!));
      const items = await qaItems(n, log);
      log(`compress: ${items.length} passage-QA items on ${engine.modelName}${random ? ' (random weights: accuracy is meaningless)' : ''}`);
      await warmUp(engine);

      const L = model.config.numLayers;
      // Default: LLMLingua's way (every layer scores) and the engine's default scorer.
      const scorers = scorerList.length ? scorerList.map((k) => Math.min(L, k)) : [...new Set([L, defaultScorerLayers(L)])];
      interface Mode { rate: number; layers: number; tag: string }
      const modes: (Mode | null)[] = [null];
      for (const layers of scorers) {
        for (const rate of RATES) modes.push({ rate, layers, tag: `${Math.round(rate * 100)}${layers === L ? '' : `_l${layers}`}` });
      }
      const runMode = async (item: EvalItem, ids: number[], mode: Mode | null): Promise<ModeResult> => {
        let prompt = ids;
        let compressMs = 0;
        if (mode !== null) {
          const t0 = performance.now();
          prompt = compressIds(model, tokenizer, ids, mode.rate, questionOf(item), mode.layers);
          compressMs = performance.now() - t0;
        }
        const { text, ids: out, ...timed } = await timedAnswer(engine, { ids: prompt, sampling: { maxTokens, temperature: 0 } });
        // A random model's engine has no tokenizer and returns no text: decode here.
        const answer = text || tokenizer.decode(out, { skipSpecialTokens: true });
        return {
          ...timed,
          ttftMs: timed.ttftMs + compressMs,
          totalMs: timed.totalMs + compressMs,
          compressMs,
          promptTokens: prompt.length,
          pass: scoreEvalItem(item, answer).pass,
          retained: tokenizer.decode(prompt).toLowerCase().includes(item.expected.toLowerCase()),
          answerNll: answerNll(model, prompt, tokenizer.encode(item.expected)),
        };
      };

      const results: ModeResult[][] = modes.map(() => []);
      // The model's share of the quality: the same units, budget and sum, with random scores.
      const randomRetained = RATES.map(() => 0);
      for (const [k, item] of items.entries()) {
        const ids = tokenizer.encode(tokenizer.renderChat(item.messages));
        RATES.forEach((rate, r) => {
          const kept = randomScoreCompress(tokenizer, ids, rate, questionOf(item), k + 1);
          if (tokenizer.decode(kept).toLowerCase().includes(item.expected.toLowerCase())) randomRetained[r]!++;
        });
        // Interleaved per item, so that load drifting during the run biases no mode.
        for (const [m, mode] of modes.entries()) results[m]!.push(await runMode(item, ids, mode));
        const row = modes.map((mode, m) => {
          const r = results[m]!.at(-1)!;
          return `${mode === null ? 'full' : mode.tag} ${r.promptTokens}t ${r.ttftMs.toFixed(0)}ms ${r.pass ? 'pass' : 'fail'}`;
        });
        log(`compress: item ${k + 1}/${items.length}: ${row.join(' | ')}`);
      }

      const summary = (rs: ModeResult[]) => ({
        promptTokens: round(mean(rs.map((r) => r.promptTokens)), 1),
        ttftMs: round(mean(rs.map((r) => r.ttftMs)), 1),
        totalMs: round(mean(rs.map((r) => r.totalMs)), 1),
        compressMs: round(mean(rs.map((r) => r.compressMs)), 1),
        completionTokens: round(mean(rs.map((r) => r.completionTokens)), 1),
        accuracy: round(mean(rs.map((r) => (r.pass ? 1 : 0))), 3),
        answerNll: round(mean(rs.map((r) => r.answerNll)), 3),
        answerRetained: round(mean(rs.map((r) => (r.retained ? 1 : 0))), 3),
      });
      const full = summary(results[0]!);
      const byMode: Record<string, ReturnType<typeof summary>> = { full };
      const ratios: Record<string, number> = {};
      RATES.forEach((rate, r) => {
        ratios[`answer_retained_random_scores_${Math.round(rate * 100)}`] = round(randomRetained[r]! / items.length, 3);
      });
      modes.forEach((mode, i) => {
        if (mode === null) return;
        const s = summary(results[i]!);
        const tag = mode.tag;
        byMode[`compressed${tag}`] = s;
        ratios[`ttft_compressed${tag}_vs_full`] = round(full.ttftMs / s.ttftMs);
        ratios[`total_compressed${tag}_vs_full`] = round(full.totalMs / s.totalMs);
        ratios[`prompt_tokens_compressed${tag}_vs_full`] = round(s.promptTokens / full.promptTokens, 3);
        ratios[`accuracy_delta_${tag}`] = round(s.accuracy - full.accuracy, 3);
        ratios[`answer_retained_${tag}`] = s.answerRetained;
        ratios[`answer_nll_delta_${tag}`] = round(s.answerNll - full.answerNll, 3);
        log(
          `compress: ${tag}: prompt ${s.promptTokens} vs ${full.promptTokens} tokens, TTFT ${s.ttftMs} vs ${full.ttftMs} ms ` +
            `(${ratios[`ttft_compressed${tag}_vs_full`]}×, compression ${s.compressMs} ms), accuracy ${s.accuracy} vs ${full.accuracy}, ` +
            `answer NLL ${s.answerNll} vs ${full.answerNll} nats/token, answer kept in ${Math.round(s.answerRetained * 100)}% of prompts (random scores: ${Math.round(ratios[`answer_retained_random_scores_${Math.round(mode.rate * 100)}`]! * 100)}%)`,
        );
      });
      return {
        ratios,
        model: engine.modelName,
        items: items.length,
        maxTokens,
        numLayers: L,
        scorerLayers: scorers,
        modes: byMode,
        ...(random ? { note: 'models/skein-mini not found: random weights with the skein tokenizer. Accuracy is 0 by construction and answer retention reflects random scores; only the speed figures mean anything' } : {}),
      };
    } finally {
      model.dispose();
      await engine.close();
    }
  },
});

/** What the engine's compress stage does with a request's ids, run here to completion. */
export function compressIds(
  model: LoadedModel,
  tokenizer: ModelTokenizer,
  ids: number[],
  rate: number,
  question: string | undefined,
  scorerLayers?: number,
  scorerVocab?: ScorerVocab,
): number[] {
  const c = new PromptCompressor(model, tokenizer, ids, {
    rate,
    keep: question ? [question] : undefined,
    protectedSuffix: defaultProtectedSuffix(tokenizer, ids),
    scorerLayers,
    ...(scorerVocab ? { scorerVocab } : {}),
  });
  try {
    while (!c.step());
    return c.result().ids;
  } finally {
    c.dispose();
  }
}

/**
 * The control for answer retention: the same lexical units, forced tokens, budget and
 * sum-of-scores ranking as the compressor, but each token's score is random instead of
 * its self-information (one global pass, no segments). What the model adds over this is
 * the model's contribution; what this keeps already comes from units, keep and length.
 */
export function randomScoreCompress(tokenizer: ModelTokenizer, ids: number[], rate: number, question: string | undefined, seed: number): number[] {
  const units = lexicalUnits(tokenizer, ids, { keep: question ? [question] : undefined, protectedSuffix: defaultProtectedSuffix(tokenizer, ids) });
  const rand = mulberry32(seed);
  let forced = 0;
  for (const f of units.forced) forced += f;
  const ends = [...units.starts.slice(1), ids.length];
  const droppable = units.starts.map((start, u) => ({ start, end: ends[u]! })).filter((u) => !units.forced[u.start]);
  const total = droppable.reduce((a, u) => a + u.end - u.start, 0);
  const target = Math.round(budget(rate, ids.length, forced) * total);
  const scored = droppable.map((u) => {
    let score = 0;
    for (let i = u.start; i < u.end; i++) score += rand();
    return { ...u, score };
  });
  scored.sort((a, b) => a.score - b.score);
  const drop = new Uint8Array(ids.length);
  let kept = total;
  for (const u of scored) {
    if (kept <= target) break;
    for (let i = u.start; i < u.end; i++) drop[i] = 1;
    kept -= u.end - u.start;
  }
  return ids.filter((_, i) => !drop[i]);
}

/**
 * How likely the target model finds the reference answer right after the prompt: the mean
 * −log p of its tokens, teacher-forced. A quality figure that moves even when a small
 * model's greedy answers are all wrong (exact-match accuracy then reads 0 both ways).
 */
function answerNll(model: LoadedModel, prompt: number[], answer: number[]): number {
  if (answer.length === 0) return 0;
  const [r] = forward(model, [{ ids: [...prompt, ...answer], logits: 'all' }]);
  tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  let sum = 0;
  for (let j = 0; j < answer.length; j++) sum += negLogProb(r!.logits[prompt.length - 1 + j]!, answer[j]!);
  return sum / answer.length;
}
