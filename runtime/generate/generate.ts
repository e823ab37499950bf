/**
 * The simple generation engine used by the CLI: prefill each request, then decode every
 * live sequence together, one batched forward per step, until each meets an eos id, a
 * stop string or its token budget. Events stream out as an async generator (one token
 * at a time, text already filtered for stop strings); the generator's return value is
 * the final results. Breaking out of the loop frees every KV tensor.
 *
 * (The scheduler engine with paged KV and continuous batching lives elsewhere and reuses
 * Sampler and StopMatcher from this folder.)
 *
 * @example
 * const results = await generateAll(model, tokenizer, [{ prompt: 'Hello' }], { maxTokens: 8 });
 * console.log(results[0].text, results[0].metrics.decodeTokensPerSec);
 */
import { resolveSampling, type SamplingParams } from '../../core/sampling.js';
import { BadRequestError } from '../../core/errors.js';
import { forward } from '../model/forward.js';
import { KvCache } from '../model/kv-cache.js';
import type { ForwardCallOptions, LoadedModel } from '../model/types.js';
import { Sampler } from './sampler.js';
import { StopMatcher } from './stop.js';

/** What generate needs of a tokenizer (ModelTokenizer fits). */
export interface GenerateTokenizer {
  encode(text: string): number[];
  /** A prompt's ids, with bos when the model wants one (ModelTokenizer); default encode. */
  encodePrompt?(text: string): number[];
  detokenizer(): { push(id: number): string; flush(): string };
  eosIds: number[];
}

export interface GenerationInput {
  /** Raw text, encoded without special tokens (needs a tokenizer)... */
  prompt?: string;
  /** ...or token ids. */
  ids?: number[];
  /** Overrides of the call's sampling parameters for this request. */
  sampling?: Partial<SamplingParams>;
}

export interface GenerateOptions extends Partial<SamplingParams> {
  /** Layer subset for every forward (layer skipping). */
  layers?: number[];
  /** Prompt tokens per prefill forward; longer prompts are prefilled in chunks. */
  prefillChunk?: number;
}

export type GenerationFinish = 'eos' | 'stop' | 'length';

export interface GenerationResult {
  /** Generated ids (the eos id that ended it is not included). */
  ids: number[];
  text: string;
  finishReason: GenerationFinish;
  promptTokens: number;
  metrics: { prefillMs: number; decodeTokensPerSec: number; totalMs: number };
}

export type GenerationEvent =
  | { type: 'token'; index: number; id: number; text: string }
  | { type: 'done'; index: number; result: GenerationResult };

interface Live {
  index: number;
  prompt: number[];
  params: SamplingParams;
  sampler: Sampler;
  cache: KvCache;
  ids: number[];
  history: number[];
  detok: { push(id: number): string; flush(): string } | null;
  stop: StopMatcher;
  text: string;
  next: number;
  prefillMs: number;
  decodeStart: number;
  /** Tokens sampled before batched decode began (from the prefill). */
  decodeBase: number;
  start: number;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function* generate(
  model: LoadedModel,
  tokenizer: GenerateTokenizer | null,
  requests: GenerationInput[],
  options: GenerateOptions = {},
): AsyncGenerator<GenerationEvent, GenerationResult[]> {
  const { layers, prefillChunk = 256, ...sampling } = options;
  const fwdOpts: ForwardCallOptions = layers ? { layers } : {};
  const eos = new Set([...model.config.eosTokenIds, ...(tokenizer?.eosIds ?? [])]);
  const results: GenerationResult[] = new Array(requests.length);
  const live: Live[] = [];
  try {
    for (let index = 0; index < requests.length; index++) {
      const req = requests[index]!;
      let prompt: number[];
      if (req.ids !== undefined) prompt = req.ids;
      else if (req.prompt !== undefined) {
        if (tokenizer === null) throw new BadRequestError(`requests[${index}].prompt`, 'a text prompt needs a tokenizer');
        prompt = tokenizer.encodePrompt?.(req.prompt) ?? tokenizer.encode(req.prompt);
      } else throw new BadRequestError(`requests[${index}]`, 'give prompt or ids');
      if (prompt.length === 0) throw new BadRequestError(`requests[${index}]`, 'the prompt is empty');
      const params = resolveSampling({ ...sampling, ...req.sampling });
      if (params.stop.length > 0 && tokenizer === null) throw new BadRequestError('stop', 'stop strings need a tokenizer');

      const start = performance.now();
      const cache = new KvCache(model.config.numLayers);
      const s: Live = {
        index, prompt, params, cache, start,
        sampler: new Sampler(params),
        ids: [],
        history: [...prompt],
        detok: tokenizer?.detokenizer() ?? null,
        stop: new StopMatcher(params.stop),
        text: '',
        next: -1,
        prefillMs: 0,
        decodeStart: 0,
        decodeBase: 0,
      };
      live.push(s);
      let logits: Float32Array | undefined;
      for (let at = 0; at < prompt.length; at += prefillChunk) {
        const chunk = prompt.slice(at, at + prefillChunk);
        const last = at + prefillChunk >= prompt.length;
        const [r] = forward(model, [{ ids: chunk, past: cache.past(), logits: last ? 'last' : 'none' }], fwdOpts);
        cache.append(r!.newKv);
        if (last) logits = r!.logits[0];
      }
      s.prefillMs = performance.now() - start;
      yield* accept(s, logits!);
      await yieldToEventLoop();
    }
    const decodeStart = performance.now();
    for (const s of live) {
      s.decodeStart = decodeStart;
      s.decodeBase = s.ids.length;
    }
    while (live.some((s) => s.next >= 0)) {
      const running = live.filter((s) => s.next >= 0);
      const res = forward(model, running.map((s) => ({ ids: [s.next], past: s.cache.past() })), fwdOpts);
      for (let i = 0; i < running.length; i++) {
        running[i]!.cache.append(res[i]!.newKv);
        yield* accept(running[i]!, res[i]!.logits[0]!);
      }
      await yieldToEventLoop();
    }
    return results;
  } finally {
    for (const s of live) s.cache.dispose();
  }

  /** Samples the next token of s from logits, emits it, and finishes s when it ends. */
  function* accept(s: Live, logits: Float32Array): Generator<GenerationEvent> {
    const id = s.sampler.sample(logits, s.history);
    let finish: GenerationFinish | null = null;
    if (eos.has(id)) finish = 'eos';
    else {
      s.ids.push(id);
      s.history.push(id);
      const delta = s.detok?.push(id) ?? '';
      const { text, stopped } = s.stop.push(delta);
      s.text += text;
      yield { type: 'token', index: s.index, id, text };
      if (stopped) finish = 'stop';
      else if (s.ids.length >= s.params.maxTokens) finish = 'length';
    }
    if (finish === null) {
      s.next = id;
      return;
    }
    s.next = -1;
    if (finish !== 'stop') {
      const tail = s.stop.push(s.detok?.flush() ?? '').text + s.stop.flush();
      s.text += tail;
      if (tail.length > 0) yield { type: 'token', index: s.index, id: -1, text: tail };
    }
    const now = performance.now();
    const decodeSec = s.decodeStart > 0 ? (now - s.decodeStart) / 1000 : 0;
    // Tokens sampled from prefill logits are not decode steps.
    const decoded = s.decodeStart > 0 ? s.ids.length + (finish === 'eos' ? 1 : 0) - s.decodeBase : 0;
    const result: GenerationResult = {
      ids: s.ids,
      text: s.text,
      finishReason: finish,
      promptTokens: s.prompt.length,
      metrics: { prefillMs: s.prefillMs, decodeTokensPerSec: decodeSec > 0 ? decoded / decodeSec : 0, totalMs: now - s.start },
    };
    results[s.index] = result;
    s.cache.dispose();
    yield { type: 'done', index: s.index, result };
  }
}

/** Runs generate to the end; `onEvent` sees every event as it happens. */
export async function generateAll(
  model: LoadedModel,
  tokenizer: GenerateTokenizer | null,
  requests: GenerationInput[],
  options: GenerateOptions = {},
  onEvent?: (e: GenerationEvent) => void,
): Promise<GenerationResult[]> {
  const it = generate(model, tokenizer, requests, options);
  for (;;) {
    const step = await it.next();
    if (step.done) return step.value;
    onEvent?.(step.value);
  }
}
