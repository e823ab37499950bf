/**
 * The engine's core, on whichever thread runs the model: the scheduler plus, per request,
 * tokenization, streaming detokenization, stop strings and timings. It takes requests as
 * token ids or as text (a prompt or chat messages, rendered and tokenized here so that
 * work growing with the input stays off the thread serving HTTP) and gives back small
 * plain events (ids, text, figures): exactly what crosses the worker boundary, so the
 * in-process engine and the worker engine share it unchanged.
 *
 * @example
 * const core = new EngineCore({ model, tokenizer, sampler, emit: (e) => console.log(e) });
 * core.submit({ requestId: 'r1', ids: [1, 2, 3], sampling: resolveSampling({ maxTokens: 4 }) });
 * while (core.hasWork()) core.step();
 */
import * as path from 'node:path';
import { BadRequestError, ContextLengthError, NotAvailableError } from '../../core/errors.js';
import type { OutputConstraint } from '../../core/output.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { ModelTokenizer, IncrementalDetokenizer } from '../checkpoint/tokenizer.js';
import { GrammarCompiler, TokenVocabulary, type GrammarCursor } from '../grammar/index.js';
import { CompressStage } from '../stages/compress-stage.js';
import { sequenceShape, stageEvents, type ShapedStages } from '../stages/shape.js';
import type { ScoredToken } from '../generate/logprobs.js';
import { HeadsLibrary } from '../stages/speculate.js';
import { SkipAdapterLibrary } from '../stages/skip-adapters.js';
import { StopMatcher } from '../generate/stop.js';
import { TokenPieces } from './token-pieces.js';
import { EmbeddingQueue } from './embed.js';
import { forward } from '../model/forward.js';
import { measureSelfSpecCost, type SelfSpecCost } from '../scheduler/self-spec-cost.js';
import type { LoadedModel } from '../model/types.js';
import {
  Scheduler,
  type DraftStep,
  type SchedulerOptions,
  type SchedulerStats,
  type SequenceSummary,
  type StepReport,
} from '../scheduler/scheduler.js';
import { MAX_EMBED_INPUTS, MAX_EMBED_TOKENS, type ChatMessage, type EmbedRequest, type FinishReason, type GenerateEvent, type GenerationMetrics, type GenerationUsage, type StageReport } from '../../core/engine.js';
import type { Stages } from '../../core/stages.js';

/** A prompt as text: tokenized by the core, after the context-length check. */
export type PromptText = { prompt: string } | { messages: ChatMessage[]; assistantPrefix?: string };

export interface CoreSubmit {
  requestId: string;
  /** The prompt as token ids, or... */
  ids?: number[];
  /** ...as text (exactly one of the two). */
  text?: PromptText;
  sampling: SamplingParams;
  owner?: string;
  /** The stages to run, checked by the front against the registry (runtime/stages/registry.ts). */
  stages?: Stages;
  /** Structured output: a token mask keeps the generated text within this constraint. */
  output?: OutputConstraint;
  /**
   * Run the compress stage and stop: the request ends with `done` whose ids and text are
   * the kept prompt (no completion), for a remote model to read (Engine.compressText).
   */
  compressOnly?: boolean;
  /** Opt-in log-probabilities with this many alternatives (GenerateRequest.logprobs). */
  logprobs?: number;
  /** GenerateRequest.maxTokensMustFit. */
  maxTokensMustFit?: boolean;
  /** Score the prompt instead of generating (Engine.score): answered by one `scored` event. */
  score?: true;
  /** Embed these inputs instead of generating (Engine.embed): answered by one `embedded` event. */
  embed?: Pick<EmbedRequest, 'input' | 'dimensions'>;
}

export type CoreEvent =
  | ({ type: 'token'; requestId: string } & Omit<Extract<GenerateEvent, { type: 'token' }>, 'type'>)
  | ({ type: 'stage'; requestId: string } & Omit<Extract<GenerateEvent, { type: 'stage' }>, 'type'>)
  | {
      type: 'done';
      requestId: string;
      reason: FinishReason;
      ids: number[];
      text: string;
      usage: GenerationUsage;
      metrics: GenerationMetrics;
    }
  | { type: 'scored'; requestId: string; logits: Float32Array[] }
  | { type: 'embedded'; requestId: string; vectors: Float32Array[]; tokens: number[] }
  | { type: 'error'; requestId: string; error: Error };

export type EngineCoreOptions = Omit<SchedulerOptions, 'model'> & {
  model: LoadedModel;
  tokenizer: ModelTokenizer | null;
  emit: (event: CoreEvent) => void;
};

interface Session {
  detok: IncrementalDetokenizer | null;
  stop: StopMatcher;
  /** Text streamed so far (stop strings and what follows them left out). */
  text: string;
  t0: number;
  tFirst: number;
  /** Prompt tokens before and after the compress stage, when it ran. */
  compressed?: { from: number; to: number };
  /** skipLayers / prunedPrefill, when asked. */
  shaped?: ShapedStages;
  /** The request's position in its output grammar, when it has one. */
  grammar?: GrammarCursor;
  /** Speculative steps reported so far (onDraftStep), and the heads' kind when speculating. */
  draftSteps?: number;
  speculateKind?: string;
}

export class EngineCore {
  readonly scheduler: Scheduler;
  private readonly tokenizer: ModelTokenizer | null;
  private readonly emit: (event: CoreEvent) => void;
  private readonly sessions = new Map<string, Session>();
  /** Requests whose prompt is being compressed (one segment per step) before they are scheduled. */
  private readonly compressing: CompressStage;
  /** Embedding requests, a bounded number of tokens per step between the scheduler's steps. */
  private readonly embedding: EmbeddingQueue;
  /** Scoring requests, one run per step between the scheduler's steps (FIFO). */
  private readonly scoring: Array<{ requestId: string; ids: number[] }> = [];
  /** Compiled output grammars over this model's vocabulary, made on the first constrained request. */
  private grammars: GrammarCompiler | null = null;
  /** Token texts and bytes for log-probabilities, made on the first request that asks. */
  private piecesCache: TokenPieces | null = null;
  /** The model's speculative heads, read on the first request that asks for them. */
  private readonly heads: HeadsLibrary;
  /** The model's skip adapters (kept layers merged), read on the first skipLayers request for a target. */
  private readonly skipAdapters: SkipAdapterLibrary;
  /** Self-speculation's measured costs per drafting model and layer set (measured at the first request that asks). */
  private readonly selfSpecCosts = new WeakMap<LoadedModel, Map<string, SelfSpecCost>>();

  constructor(options: EngineCoreOptions) {
    const { tokenizer, emit, ...schedulerOptions } = options;
    this.scheduler = new Scheduler(schedulerOptions);
    this.tokenizer = tokenizer;
    this.emit = emit;
    this.compressing = new CompressStage(options.model, tokenizer);
    this.embedding = new EmbeddingQueue(options.model);
    this.heads = new HeadsLibrary(options.model, headsFacts(options.model));
    this.skipAdapters = new SkipAdapterLibrary(options.model, headsFacts(options.model));
  }

  /** Queues a request; a refusal (KvExhaustedError, a bad request) comes back as its error event. */
  submit(request: CoreSubmit): void {
    const { requestId } = request;
    if (request.sampling.stop.length > 0 && this.tokenizer === null) {
      return this.fail(requestId, new BadRequestError('sampling.stop', 'stop strings need a model with a tokenizer'));
    }
    if (request.logprobs !== undefined && this.tokenizer === null) {
      return this.fail(requestId, new BadRequestError('logprobs', 'log-probabilities name tokens by their text, which needs a model with a tokenizer'));
    }
    if (request.embed) return this.submitEmbed(requestId, request.embed);
    let msg: CoreSubmit & { ids: number[] };
    try {
      msg = { ...request, ids: request.ids ?? this.promptIds(request) };
    } catch (err) {
      return this.fail(requestId, err instanceof Error ? err : new Error(String(err)));
    }
    if (msg.score) {
      this.scoring.push({ requestId, ids: msg.ids });
      return;
    }
    const session: Session = {
      detok: this.tokenizer?.detokenizer({ skipSpecialTokens: true }) ?? null,
      stop: new StopMatcher(msg.sampling.stop),
      text: '',
      t0: performance.now(),
      tFirst: 0,
    };
    try {
      const speculate = msg.stages?.speculate !== undefined ? this.heads.shape(msg.stages.speculate) : undefined;
      session.shaped = sequenceShape(this.scheduler.model.config.numLayers, msg.stages ?? {}, speculate, this.skipAdapters);
      const shape = session.shaped?.shape;
      // Drafts only where they pay on this machine (SKEIN_MEASURED_COSTS=0: the acceptance-only rule, to compare).
      if (shape?.skipMode === 'self-speculative' && process.env.SKEIN_MEASURED_COSTS !== '0') shape.selfSpecCost = this.selfSpecCost(shape.decodeLayers!, shape.drafts!, shape.decodeModel);
      if (speculate) session.speculateKind = speculate.kind;
      if (msg.output !== undefined) session.grammar = this.grammarsFor().cursor(msg.output);
    } catch (err) {
      return this.fail(requestId, err instanceof Error ? err : new Error(String(err)));
    }
    this.sessions.set(requestId, session);
    const compress = msg.stages?.compress;
    if (compress === undefined && msg.compressOnly) return this.fail(requestId, new BadRequestError('stages.compress', 'a compress-only request needs the compress stage'));
    if (compress === undefined) return this.schedule(msg, session);
    // The prompt is compressed first, one segment per step; TTFT counts from here, so it includes that.
    const t0 = performance.now();
    this.compressing.start(
      requestId,
      msg.ids,
      compress,
      (r) => {
        session.compressed = { from: r.originalTokens, to: r.keptTokens };
        this.emit({
          type: 'stage',
          requestId,
          stage: 'compress',
          decided: { rate: compress.rate, keepPhrases: compress.keep?.length ?? 0, scorerLayers: this.compressing.scorerLayers, scorerVocab: this.compressing.scorerVocab },
          figures: { tokensIn: r.originalTokens, tokensOut: r.keptTokens, wallMs: performance.now() - t0 },
        });
        if (msg.compressOnly) return this.finishCompressOnly(requestId, session, r.ids);
        this.schedule({ ...msg, ids: r.ids }, session);
      },
      (error) => this.fail(requestId, error),
    );
  }

  /**
   * Renders and tokenizes a text prompt. The context check comes first and costs one
   * length: no token covers more characters than the longest vocabulary entry, so a text
   * whose length over that already exceeds the context is refused without tokenizing it
   * (a 1 MiB prompt otherwise takes seconds to tokenize, only to be refused). Prompts for
   * the compress stage are exempt: the context is checked after compression.
   */
  private promptIds(msg: CoreSubmit): number[] {
    const text = msg.text;
    if (!text) throw new BadRequestError('prompt', 'give token ids or a text prompt');
    const tokenizer = this.tokenizer;
    if (!tokenizer) throw new NotAvailableError('tokenizer', 'this model has none; send token ids');
    const chars = 'prompt' in text ? text.prompt.length : text.messages.reduce((n, m) => n + m.content.length, (text.assistantPrefix ?? '').length);
    const maxPos = this.scheduler.model.config.maxPositionEmbeddings;
    const atLeast = Math.ceil(chars / tokenizer.maxTokenChars);
    if (msg.stages?.compress === undefined && atLeast >= maxPos) {
      throw new ContextLengthError('prompt', maxPos, `${chars} characters are at least ${atLeast} tokens, the model's context is ${maxPos}`);
    }
    const rendered = 'prompt' in text ? text.prompt : tokenizer.renderChat(text.messages) + (text.assistantPrefix ?? '');
    return tokenizer.encodePrompt(rendered);
  }

  /**
   * Checks an embedding request and queues it. Limits come before tokenizing, as for
   * prompts: a text's length over the longest vocabulary entry is a lower bound on its
   * tokens, so an oversized request is refused without tokenizing it.
   */
  private submitEmbed(requestId: string, embed: NonNullable<CoreSubmit['embed']>): void {
    let inputs: number[][];
    try {
      const { hiddenSize, maxPositionEmbeddings: context, vocabSize } = this.scheduler.model.config;
      if (embed.dimensions !== undefined && embed.dimensions !== hiddenSize) {
        throw new BadRequestError('dimensions', `the model's vectors have ${hiddenSize} dimensions; ${embed.dimensions} would need a projection it does not have`);
      }
      const { input } = embed;
      if (input.length === 0 || input.length > MAX_EMBED_INPUTS) throw new BadRequestError('input', `give 1 to ${MAX_EMBED_INPUTS} inputs, not ${input.length}`);
      const tokenizer = this.tokenizer;
      const atLeast = input.reduce<number>((n, x) => n + (typeof x === 'string' ? Math.ceil(x.length / (tokenizer?.maxTokenChars ?? 1)) : x.length), 0);
      const tooMany = (n: number) => new BadRequestError('input', `${n} tokens in all, more than the ${MAX_EMBED_TOKENS} one request may embed`);
      if (atLeast > MAX_EMBED_TOKENS) throw tooMany(atLeast);
      inputs = input.map((x, i) => {
        if (typeof x === 'string' && tokenizer === null) throw new NotAvailableError('tokenizer', 'this model has none; send token ids');
        const least = typeof x === 'string' ? Math.ceil(x.length / tokenizer!.maxTokenChars) : 0;
        if (least > context) throw new ContextLengthError(`input[${i}]`, context, `${x.length} characters are at least ${least} tokens, the model's context is ${context}`);
        const ids = typeof x === 'string' ? tokenizer!.encodePrompt(x) : x;
        if (ids.length === 0) throw new BadRequestError(`input[${i}]`, 'is empty');
        if (ids.length > context) throw new ContextLengthError(`input[${i}]`, context, `${ids.length} tokens, the model's context is ${context}`);
        const outside = typeof x === 'string' ? undefined : ids.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
        if (outside !== undefined) throw new BadRequestError(`input[${i}]`, `token id ${outside} is outside the vocabulary (${vocabSize})`);
        return ids;
      });
      const total = inputs.reduce((n, ids) => n + ids.length, 0);
      if (total > MAX_EMBED_TOKENS) throw tooMany(total);
    } catch (err) {
      return this.fail(requestId, err instanceof Error ? err : new Error(String(err)));
    }
    this.embedding.submit(
      requestId,
      inputs,
      (vectors) => this.emit({ type: 'embedded', requestId, vectors, tokens: inputs.map((ids) => ids.length) }),
      (error) => this.fail(requestId, error),
    );
  }

  private get pieces(): TokenPieces {
    return (this.piecesCache ??= new TokenPieces(this.tokenizer!));
  }

  private grammarsFor(): GrammarCompiler {
    if (this.tokenizer === null) throw new BadRequestError('output', 'constrained output needs a model with a tokenizer');
    this.grammars ??= new GrammarCompiler(TokenVocabulary.fromTokenizer(this.tokenizer, this.scheduler.model.config.vocabSize));
    return this.grammars;
  }

  private schedule(msg: CoreSubmit & { ids: number[] }, session: Session): void {
    const { requestId } = msg;
    try {
      this.scheduler.submit(
        {
          id: requestId,
          ids: msg.ids,
          sampling: msg.sampling,
          owner: msg.owner,
          eosIds: this.tokenizer?.eosIds,
          ...(session.shaped ? { shape: session.shaped.shape } : {}),
          ...(session.grammar ? { constraint: session.grammar } : {}),
          ...(msg.logprobs !== undefined ? { logprobs: msg.logprobs } : {}),
          ...(msg.maxTokensMustFit ? { maxTokensMustFit: true } : {}),
        },
        {
          token: (id, final, scored) => this.onToken(requestId, session, id, final, scored),
          admitted: (a) => this.onAdmitted(requestId, a),
          draftStep: (d) => this.onDraftStep(requestId, session, d),
          done: (summary) => this.onDone(requestId, session, summary),
          error: (error) => this.fail(requestId, error),
        },
      );
    } catch (err) {
      this.fail(requestId, err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** The end of a compress-only request: the kept prompt as its ids and text, nothing generated. */
  private finishCompressOnly(requestId: string, s: Session, ids: number[]): void {
    this.sessions.delete(requestId);
    const totalMs = performance.now() - s.t0;
    this.emit({
      type: 'done',
      requestId,
      reason: 'length',
      ids,
      text: this.tokenizer!.decode(ids, { skipSpecialTokens: true }),
      usage: { promptTokens: ids.length, completionTokens: 0, cachedPromptTokens: 0 },
      metrics: {
        ttftMs: totalMs,
        totalMs,
        decodeTokensPerSec: 0,
        ...(s.compressed ? { compressedFrom: s.compressed.from, compressedTo: s.compressed.to, stages: { compress: { ...s.compressed } } } : {}),
      },
    });
  }

  /** The costs a self-speculative sequence drafts by, measured once per drafting model, layer set and chain length. */
  private selfSpecCost(layers: readonly number[], drafts: number, decodeModel: LoadedModel | undefined): SelfSpecCost {
    const by = this.selfSpecCosts.get(decodeModel ?? this.scheduler.model) ?? new Map<string, SelfSpecCost>();
    this.selfSpecCosts.set(decodeModel ?? this.scheduler.model, by);
    const key = `${layers.join(',')}:${drafts}`;
    let cost = by.get(key);
    if (cost === undefined) by.set(key, (cost = measureSelfSpecCost(this.scheduler.model, layers, drafts, decodeModel)));
    return cost;
  }

  private fail(requestId: string, error: Error): void {
    this.sessions.delete(requestId);
    this.emit({ type: 'error', requestId, error });
  }

  /** Stops a request and frees its KV; no further event for it. */
  cancel(requestId: string): void {
    const queued = this.scoring.findIndex((r) => r.requestId === requestId);
    if (queued >= 0) this.scoring.splice(queued, 1);
    this.embedding.cancel(requestId);
    this.sessions.delete(requestId);
    this.compressing.cancel(requestId);
    this.scheduler.cancel(requestId);
  }

  hasWork(): boolean {
    return this.scheduler.hasWork() || this.compressing.hasWork() || this.scoring.length > 0 || this.embedding.hasWork();
  }

  step(): StepReport {
    if (this.compressing.hasWork()) this.compressing.step();
    const score = this.scoring.shift();
    if (score) this.score(score.requestId, score.ids);
    if (this.embedding.hasWork()) this.embedding.step();
    return this.scheduler.step();
  }

  /**
   * One teacher-forced forward over the whole prompt, outside the KV pool: scoring keeps
   * no state, so it takes no blocks, and the forward frees the KV it made at once.
   */
  private score(requestId: string, ids: number[]): void {
    try {
      const { vocabSize, maxPositionEmbeddings } = this.scheduler.model.config;
      if (ids.length === 0) throw new BadRequestError('ids', 'give at least one token id to score');
      if (ids.length > maxPositionEmbeddings) throw new BadRequestError('ids', `${ids.length} tokens exceed the model's context of ${maxPositionEmbeddings}`);
      const outside = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
      if (outside !== undefined) throw new BadRequestError('ids', `token id ${outside} is outside the vocabulary (${vocabSize})`);
      const [r] = forward(this.scheduler.model, [{ ids, logits: 'all' }]);
      for (const e of r!.newKv) e?.k.dispose(), e?.v.dispose();
      this.emit({ type: 'scored', requestId, logits: r!.logits });
    } catch (err) {
      this.fail(requestId, err instanceof Error ? err : new Error(String(err)));
    }
  }

  stats(): SchedulerStats {
    const s = this.scheduler.stats();
    // A request whose prompt is being compressed is waiting too.
    return { ...s, queueDepth: s.queueDepth + this.compressing.waiting };
  }

  close(err: Error): void {
    for (const { requestId } of this.scoring.splice(0)) this.emit({ type: 'error', requestId, error: err });
    this.embedding.close(err);
    this.compressing.close(err);
    this.scheduler.close(err);
    this.sessions.clear();
    this.heads.dispose();
    this.skipAdapters.dispose();
  }

  /** KV sharing over a common prefix, as a stage event: the blocks adopted instead of computed. */
  private onAdmitted(requestId: string, a: { promptTokens: number; cachedPromptTokens: number; kvBlocksShared: number }): void {
    if (a.kvBlocksShared === 0) return;
    this.emit({
      type: 'stage',
      requestId,
      stage: 'kvShare',
      decided: { prefixSharing: true },
      figures: { tokensIn: a.promptTokens, tokensOut: a.promptTokens - a.cachedPromptTokens, kvBlocksShared: a.kvBlocksShared, wallMs: 0 },
    });
  }

  /**
   * One speculative step, as it happens: a stage event per verification (drafts proposed
   * and accepted) or closed gate, numbered from 1; the stage's totals follow at the end.
   */
  private onDraftStep(requestId: string, s: Session, d: DraftStep): void {
    s.draftSteps = (s.draftSteps ?? 0) + 1;
    const spec = s.shaped?.shape.speculate;
    this.emit({
      type: 'stage',
      requestId,
      stage: spec ? 'speculate' : 'skipLayers',
      decided: { step: s.draftSteps, gated: d.gated, ...(spec ? { kind: s.speculateKind ?? 'heads', acceptance: spec.acceptance } : { mode: 'self-speculative' }) },
      figures: { draftsProposed: d.proposed, draftsAccepted: d.accepted, wallMs: 0 },
    });
  }

  private onToken(requestId: string, s: Session, id: number, final: boolean, scored?: ScoredToken): boolean {
    if (s.tFirst === 0) s.tFirst = performance.now();
    let decoded = s.detok ? s.detok.push(id) : '';
    if (final && s.detok) decoded += s.detok.flush();
    const pushed = s.stop.push(decoded);
    const stopped = pushed.stopped;
    const text = final && !stopped ? pushed.text + s.stop.flush() : pushed.text;
    s.text += text;
    // An end-of-sequence token adds no text, so it gets no log-probability (as OpenAI lists content tokens only).
    const eos = final && this.tokenizer !== null && this.tokenizer.eosIds.includes(id);
    if (scored === undefined || eos) this.emit({ type: 'token', requestId, id, text });
    else this.emit({ type: 'token', requestId, id, text, logprobs: { ...this.pieces.of(id, scored.logprob), top: scored.top.map((t) => this.pieces.of(t.id, t.logprob)) } });
    return stopped;
  }

  private onDone(requestId: string, s: Session, summary: SequenceSummary): void {
    this.sessions.delete(requestId);
    const t1 = performance.now();
    const ttftMs = (s.tFirst || t1) - s.t0;
    const totalMs = t1 - s.t0;
    const decodeMs = totalMs - ttftMs;
    const stages = stageReport(s, summary);
    // The forward-shaping stages report once the sequence is done: their figures (tokens
    // pruned per layer, drafts accepted, forward time) are the scheduler's at that point.
    for (const e of stageEvents(stages)) this.emit({ type: 'stage', requestId, ...e });
    this.emit({
      type: 'done',
      requestId,
      reason: summary.reason,
      ids: summary.ids,
      text: s.text,
      usage: {
        promptTokens: summary.promptTokens,
        completionTokens: summary.completionTokens,
        cachedPromptTokens: summary.cachedPromptTokens,
      },
      metrics: {
        ttftMs,
        totalMs,
        decodeTokensPerSec: decodeMs > 0 ? ((summary.completionTokens - 1) * 1000) / decodeMs : 0,
        kvBlocksShared: summary.kvBlocksShared,
        ...(s.compressed ? { compressedFrom: s.compressed.from, compressedTo: s.compressed.to } : {}),
        ...(stages.skipLayers ? { layersRun: stages.skipLayers.layers.length } : {}),
        ...(stages.skipLayers?.draftsAccepted !== undefined ? { acceptedDraftTokens: stages.skipLayers.draftsAccepted } : {}),
        ...(stages.speculate ? { acceptedDraftTokens: stages.speculate.draftsAccepted } : {}),
        ...(stages.prunedPrefill ? { prunedTokens: Math.max(0, ...Object.values(stages.prunedPrefill.prunedAtLayer)) } : {}),
        ...(Object.keys(stages).length > 0 ? { stages } : {}),
      },
    });
  }
}

/** Every stage's report for a finished request. */
function stageReport(s: Session, summary: SequenceSummary): StageReport {
  return {
    ...(s.compressed ? { compress: { ...s.compressed } } : {}),
    ...(s.shaped ? s.shaped.report(summary.shape) : {}),
  };
}

/** The model's name and folder as the heads and skip-adapter lookups want them (runtime/heads/files.ts findHeadsDir). */
export function headsFacts(model: LoadedModel): { name: string; dir?: string } {
  const dir = (model as { dir?: string }).dir ?? (/\.gguf$/i.test(model.source) ? path.dirname(model.source) : model.source);
  return { name: path.basename(dir), dir };
}
