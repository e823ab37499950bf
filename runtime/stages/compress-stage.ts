/**
 * The compress stage as the engine runs it, on the thread that owns the model: requests
 * that ask for `stages.compress` wait here while their prompt is compressed, one segment
 * per engine step (so a long prompt does not stall other sequences' decoding, the way
 * chunked prefill does not), and then go to the scheduler with the shorter ids.
 *
 * The engine does not know which part of a prompt is the question, so it protects the
 * last paragraph or line of text (where chat prompts and LLMLingua put the question)
 * unless that is most of the prompt; callers who know their question pass it in `keep`.
 *
 * @example
 * const stage = new CompressStage(model, tokenizer);
 * stage.start('r1', ids, { rate: 0.5 }, (r) => scheduler.submit({ id: 'r1', ids: r.ids, ... }), fail);
 * while (stage.hasWork()) stage.step();
 */
import { BadRequestError, NotAvailableError } from '../../core/errors.js';
import type { LoadedModel } from '../model/types.js';
import { PromptCompressor, type CompressResult } from './compress.js';
import type { ScorerVocab } from './scorer-head.js';
import type { EngineStageDef } from './types.js';
import { tokenTexts, type UnitTokenizer } from './units.js';

/** The registry's entry (runtime/stages/registry.ts). */
export const compressStage: EngineStageDef = {
  name: 'compress',
  forward: 'before prefill, a scorer pass over the prompt with the first layers only (ForwardCallOptions.layers), one segment per engine step; the prompt ids are then replaced by the kept ones',
  unavailable: (model) =>
    model.hasTokenizer
      ? undefined
      : { missing: 'the model has no tokenizer.json to find whole words with', remedy: 'use a model folder with its tokenizer, or send the prompt uncompressed' },
};

/** The request's stage options (Stages['compress'] in core/stages.ts). */
export interface CompressStageOptions {
  rate: number;
  keep?: readonly string[];
}

/** A protected question longer than this share of the prompt is not protected (it is the text). */
const MAX_PROTECTED_SHARE = 0.25;

/**
 * Tokens to protect at the end of a prompt: the last paragraph holding text (after the
 * last blank line: "Question: …\nAnswer:"), or else its last line with text (not a chat
 * header like `<|im_start|>assistant`), through to the end. 0 when even that line is more
 * than a quarter of the prompt: then it is the context itself, not a question.
 */
export function defaultProtectedSuffix(tokenizer: UnitTokenizer, ids: readonly number[]): number {
  const texts = tokenTexts(tokenizer, ids);
  const lineStarts: number[] = [0];
  for (let i = 0; i < ids.length - 1; i++) if (texts[i]!.includes('\n')) lineStarts.push(i + 1);
  let line = -1;
  for (let l = lineStarts.length - 1; l >= 0 && line < 0; l--) {
    const from = lineStarts[l]!;
    const to = l + 1 < lineStarts.length ? lineStarts[l + 1]! : ids.length;
    if (tokenizer.isSpecial(ids[from]!)) continue;
    for (let i = from; i < to && line < 0; i++) if (!tokenizer.isSpecial(ids[i]!) && /[\p{L}\p{N}]/u.test(texts[i]!)) line = from;
  }
  if (line < 0) return 0;
  const cap = ids.length * MAX_PROTECTED_SHARE;
  // The paragraph: back from that line to the token holding the last blank line before it.
  const offsets = [0];
  for (const t of texts) offsets.push(offsets.at(-1)! + t.length);
  const before = texts.join('').slice(0, offsets[line]!);
  const blank = [...before.matchAll(/\n[ \t]*\n/g)].at(-1);
  if (blank !== undefined) {
    const at = blank.index + blank[0].length;
    let p = line;
    while (p > 0 && offsets[p - 1]! >= at) p--;
    if (p > 0 && offsets[p]! > at) p--; // a token straddling the break: start with it
    if (ids.length - p <= cap) return ids.length - p;
  }
  return ids.length - line <= cap ? ids.length - line : 0;
}

/**
 * The engine scores with the first quarter of the model's layers (at least one, at most
 * four) and the context vocabulary (DEFAULT_SCORER_VOCAB). LLMLingua
 * scores with a small LM for a large target; here the target is the model itself, and a
 * scorer as costly as the prefill it shortens can only make the first token later. The
 * first layers of the same model are the small LM at hand: they share its tokenizer, and
 * skein-mini's training drops later layers at random (LayerSkip-style layer dropout), so
 * its head is used to reading earlier residual streams. Measured by `skein bench compress`
 * on skein-mini (30 passage-QA items, ~990 tokens): all 8 layers give 0.62× / 0.79× TTFT
 * at rate 0.5 / 0.33, the first 2 give 1.16× / 1.60×, with the answer kept in the
 * compressed prompt as often (80 % / 57 % vs 80 % / 67 %).
 *
 * On SmolLM2-135M (30 layers) a quarter is 8 layers, and with the full LM head at every
 * position an 8-layer scorer still cost 0.57 of a full prefill (1,024 tokens: 8.1 s vs
 * 14.2 s CPU); with the head cheap (context vocabulary) the scorer's cost is its layers,
 * so the cap of four. Measured side by side by `skein bench stages --arg parts=stacked
 * --arg items=6 --arg tokens=1024 --arg scorers=30:full,8:full,8:context,2:context`
 * (SmolLM2-135M Q4_1, 6 passage-QA prompts of 1,030 tokens compressed to 340, TTFT in CPU
 * time with the compression, load ~10): compress33 TTFT vs the whole prompt 0.66× with 30
 * layers + full head, 1.29× with 8 + full (the old default), 1.75× with 8 + context,
 * **2.42× with 4 + context**, 2.77× with 2 + context; every one kept the answer in the
 * compressed prompt 6/6 (random-score control 3/6), and all but the 30-layer one lost the
 * same 2 of the full model's 2 right answers (30 layers lost 1). Four, not two: the two
 * cost the same accuracy here, and more layers are the safer ranking where six items
 * cannot tell them apart.
 */
export function defaultScorerLayers(numLayers: number): number {
  return Math.max(1, Math.min(4, Math.round(numLayers / 4)));
}

/**
 * The engine's scorer vocabulary: the prompt's own ids (scorer-head.ts). Against the full
 * head on the same 8 layers (figures above) it took compress33 TTFT from 1.29× to 1.75×
 * with the same retention (6/6) and accuracy (−2/6), answer NLL +0.13 vs +0.10.
 */
export const DEFAULT_SCORER_VOCAB: ScorerVocab = 'context';

interface Job {
  compressor: PromptCompressor;
  done: (result: CompressResult) => void;
  fail: (err: Error) => void;
}

export class CompressStage {
  /** Waiting prompts in arrival order (Map iteration order): the oldest is stepped first. */
  private readonly jobs = new Map<string, Job>();

  /** Layers the scorer runs (see `defaultScorerLayers`). */
  readonly scorerLayers: number;
  /** The scorer's softmax vocabulary (see `DEFAULT_SCORER_VOCAB`). */
  readonly scorerVocab: ScorerVocab;

  constructor(
    private readonly model: LoadedModel,
    private readonly tokenizer: UnitTokenizer | null,
    options: { scorerLayers?: number; scorerVocab?: ScorerVocab } = {},
  ) {
    this.scorerLayers = options.scorerLayers ?? defaultScorerLayers(model.config.numLayers);
    this.scorerVocab = options.scorerVocab ?? DEFAULT_SCORER_VOCAB;
  }

  /**
   * Starts compressing a prompt. `done` gets the result (synchronously when nothing is to
   * be dropped, rate 1); `fail` gets a bad option or a model error. Exactly one is called,
   * unless the job is cancelled first.
   */
  start(requestId: string, ids: readonly number[], options: CompressStageOptions, done: Job['done'], fail: Job['fail']): void {
    let compressor: PromptCompressor;
    try {
      if (this.jobs.has(requestId)) throw new BadRequestError('requestId', `${requestId} is already being compressed`);
      if (this.tokenizer === null) throw new NotAvailableError('stage compress', 'the model has no tokenizer to find whole words with');
      compressor = new PromptCompressor(this.model, this.tokenizer, ids, {
        rate: options.rate,
        keep: options.keep,
        protectedSuffix: defaultProtectedSuffix(this.tokenizer, ids),
        scorerLayers: this.scorerLayers,
        scorerVocab: this.scorerVocab,
      });
    } catch (err) {
      fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (compressor.done) {
      done(compressor.result());
      return;
    }
    this.jobs.set(requestId, { compressor, done, fail });
  }

  hasWork(): boolean {
    return this.jobs.size > 0;
  }

  /** Prompts waiting for compression. */
  get waiting(): number {
    return this.jobs.size;
  }

  /** Compresses one segment of the oldest waiting prompt. */
  step(): void {
    const first = this.jobs.entries().next();
    if (first.done) return;
    const [id, job] = first.value;
    let finished: boolean;
    try {
      finished = job.compressor.step();
    } catch (err) {
      this.jobs.delete(id);
      job.compressor.dispose();
      job.fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (!finished) return;
    this.jobs.delete(id);
    job.done(job.compressor.result());
  }

  /** Drops a waiting prompt and frees its scorer cache; no callback. */
  cancel(requestId: string): void {
    const job = this.jobs.get(requestId);
    if (job === undefined) return;
    this.jobs.delete(requestId);
    job.compressor.dispose();
  }

  /** Fails every waiting prompt with `err` and frees everything. */
  close(err: Error): void {
    const jobs = [...this.jobs.values()];
    this.jobs.clear();
    for (const job of jobs) {
      job.compressor.dispose();
      job.fail(err);
    }
  }
}
