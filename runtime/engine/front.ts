/**
 * The Engine that operators see, on the main thread: it checks a request (prompt, chat
 * messages or ids), hands it to a transport (the core in this thread, or in a worker,
 * which renders and tokenizes text prompts there) and maps the core's events to a cold
 * Observable. Unsubscribing before the end cancels the request, which frees its KV.
 *
 * @example
 * const engine = new EngineFront({ modelName, backend, tokenizer, transport });
 * engine.generate({ prompt: 'Hi', sampling: { maxTokens: 4 } }).subscribe(console.log);
 */
import { Observable } from 'rxjs';
import { BadRequestError, NotAvailableError, type StageUnavailableError } from '../../core/errors.js';
import { resolveSampling } from '../../core/sampling.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import type { SchedulerStats } from '../scheduler/scheduler.js';
import type { CoreEvent, CoreSubmit } from './core.js';
import { MAX_TOP_LOGPROBS, type ChatMessage, type CompressedText, type EmbedRequest, type EmbedResult, type Engine, type EngineHealth, type EngineStats, type GenerateEvent, type GenerateRequest, type ScoreRequest, type ScoreResult } from '../../core/engine.js';
import type { StageName, Stages } from '../../core/stages.js';
import { checkStage, type ModelFacts } from '../stages/registry.js';

export interface EngineTransport {
  /** Queues a request; `listener` gets its events until done or error. */
  submit(msg: CoreSubmit, listener: (event: CoreEvent) => void): void;
  cancel(requestId: string): void;
  stats(): SchedulerStats;
  close(): Promise<void>;
  /** Supervised transports (the worker) say when they are down. */
  health?(): EngineHealth;
  /** Ends the model's worker as a crash would (fault injection); absent on the main thread. */
  kill?(): Promise<void>;
  /** Resolves when the model is serving again after a restart. */
  whenUp?(): Promise<void>;
  /** tf tensors alive where the model runs (the worker reports them with each step). */
  tensors?(): number;
}

let nextRequest = 0;

export class EngineFront implements Engine {
  readonly modelName: string;
  private readonly facts: ModelFacts;
  /** Constrained decoding walks token texts, so it needs the tokenizer. */
  readonly supportsOutput: boolean;
  private readonly backend: string;
  private readonly tokenizer: ModelTokenizer | null;
  private readonly transport: EngineTransport;
  private closed = false;

  constructor(args: { modelName: string; backend: string; tokenizer: ModelTokenizer | null; transport: EngineTransport; facts?: ModelFacts }) {
    this.modelName = args.modelName;
    this.facts = args.facts ?? { name: args.modelName, hasTokenizer: args.tokenizer !== null };
    this.backend = args.backend;
    this.tokenizer = args.tokenizer;
    this.transport = args.transport;
    this.supportsOutput = args.tokenizer !== null;
  }

  /** The stage registry's verdict for this engine's model (runtime/stages/registry.ts). */
  checkStage(name: StageName): StageUnavailableError | undefined {
    return checkStage(name, this.facts);
  }

  generate(request: GenerateRequest): Observable<GenerateEvent> {
    return new Observable<GenerateEvent>((subscriber) => {
      let msg: CoreSubmit;
      try {
        if (this.closed) throw new NotAvailableError('engine', 'it is closed');
        msg = {
          requestId: `q${++nextRequest}`,
          ...this.requestPrompt(request),
          sampling: resolveSampling(request.sampling),
          owner: request.owner,
          ...(request.stages && Object.keys(request.stages).length ? { stages: request.stages } : {}),
          ...(request.output !== undefined ? { output: request.output } : {}),
          ...(request.logprobs !== undefined ? { logprobs: request.logprobs } : {}),
          ...(request.maxTokensMustFit ? { maxTokensMustFit: true } : {}),
        };
        if (msg.logprobs !== undefined && !(Number.isInteger(msg.logprobs) && msg.logprobs >= 0 && msg.logprobs <= MAX_TOP_LOGPROBS)) {
          throw new BadRequestError('logprobs', `must be an integer from 0 to ${MAX_TOP_LOGPROBS}`);
        }
        if (!(Number.isInteger(msg.sampling.maxTokens) && msg.sampling.maxTokens >= 1)) {
          throw new BadRequestError('sampling.maxTokens', 'must be a positive integer');
        }
      } catch (err) {
        subscriber.error(err);
        return;
      }
      let finished = false;
      this.transport.submit(msg, (event) => {
        if (event.type === 'token') {
          const { requestId: _, ...token } = event;
          subscriber.next(token);
        } else if (event.type === 'stage') {
          const { requestId: _, ...stage } = event;
          subscriber.next(stage);
        } else if (event.type === 'done') {
          finished = true;
          const { requestId: _, ...done } = event;
          subscriber.next(done);
          subscriber.complete();
        } else if (event.type === 'error') {
          finished = true;
          subscriber.error(event.error);
        }
      });
      return () => {
        if (!finished) this.transport.cancel(msg.requestId);
      };
    });
  }

  /** The compress stage alone, on the model's thread like any request (see CoreSubmit.compressOnly). */
  compressText(text: string, options: NonNullable<Stages['compress']>, owner?: string): Observable<CompressedText> {
    return new Observable<CompressedText>((subscriber) => {
      let msg: CoreSubmit;
      try {
        if (this.closed) throw new NotAvailableError('engine', 'it is closed');
        const refused = this.checkStage('compress');
        if (refused) throw refused;
        this.needTokenizer();
        msg = {
          requestId: `q${++nextRequest}`,
          text: { prompt: text },
          sampling: resolveSampling({ maxTokens: 1 }),
          owner,
          stages: { compress: options },
          compressOnly: true,
        };
      } catch (err) {
        subscriber.error(err);
        return;
      }
      let finished = false;
      let stage: Extract<CoreEvent, { type: 'stage' }> | undefined;
      this.transport.submit(msg, (event) => {
        if (event.type === 'stage') stage = event;
        else if (event.type === 'done') {
          finished = true;
          subscriber.next({
            text: event.text,
            from: event.metrics.compressedFrom ?? event.usage.promptTokens,
            to: event.metrics.compressedTo ?? event.usage.promptTokens,
            decided: stage?.decided ?? {},
            wallMs: stage?.figures.wallMs ?? event.metrics.totalMs,
          });
          subscriber.complete();
        } else if (event.type === 'error') {
          finished = true;
          subscriber.error(event.error);
        }
      });
      return () => {
        if (!finished) this.transport.cancel(msg.requestId);
      };
    });
  }

  score(request: ScoreRequest): Observable<ScoreResult> {
    return new Observable<ScoreResult>((subscriber) => {
      if (this.closed) return subscriber.error(new NotAvailableError('engine', 'it is closed'));
      // Sampling is not used; the core's message carries it for its shape only.
      const msg: CoreSubmit = { requestId: `q${++nextRequest}`, ids: request.ids, sampling: resolveSampling({}), owner: request.owner, score: true };
      let finished = false;
      this.transport.submit(msg, (event) => {
        finished = event.type === 'scored' || event.type === 'error' || event.type === 'done';
        if (event.type === 'scored') {
          subscriber.next({ logits: event.logits });
          subscriber.complete();
        } else if (event.type === 'error') subscriber.error(event.error);
      });
      return () => {
        if (!finished) this.transport.cancel(msg.requestId);
      };
    });
  }

  /** Embeddings on the model's thread (runtime/engine/embed.ts): tokenizing and the limits are checked there too. */
  embed(request: EmbedRequest): Observable<EmbedResult> {
    return new Observable<EmbedResult>((subscriber) => {
      if (this.closed) return subscriber.error(new NotAvailableError('engine', 'it is closed'));
      const embed = { input: request.input, ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}) };
      // Sampling is not used; the core's message carries it for its shape only.
      const msg: CoreSubmit = { requestId: `q${++nextRequest}`, sampling: resolveSampling({}), owner: request.owner, embed };
      let finished = false;
      this.transport.submit(msg, (event) => {
        finished = event.type === 'embedded' || event.type === 'error' || event.type === 'done';
        if (event.type === 'embedded') {
          subscriber.next({ vectors: event.vectors, tokens: event.tokens });
          subscriber.complete();
        } else if (event.type === 'error') subscriber.error(event.error);
      });
      return () => {
        if (!finished) this.transport.cancel(msg.requestId);
      };
    });
  }

  tokenize(text: string): number[] {
    return this.needTokenizer().encode(text, { addSpecialTokens: false });
  }

  detokenize(ids: number[]): string {
    return this.needTokenizer().decode(ids, { skipSpecialTokens: true });
  }

  renderChat(messages: ChatMessage[], assistantPrefix?: string): string {
    return this.needTokenizer().renderChat(messages) + (assistantPrefix ?? '');
  }

  stats(): EngineStats {
    const s = this.transport.stats();
    return {
      backend: this.backend,
      model: this.modelName,
      kvBlocksTotal: s.kvBlocksTotal,
      kvBlocksUsed: s.kvBlocksUsed,
      kvBlocksShared: s.kvBlocksShared,
      kvBlocksCached: s.kvBlocksCached,
      kvTensors: s.kvTensors,
      auxCacheEntries: s.auxCacheEntries,
      queueDepth: s.queueDepth,
      runningSequences: s.runningSequences,
      ...(this.transport.tensors ? { tensors: this.transport.tensors() } : {}),
    };
  }

  health(): EngineHealth {
    return this.transport.health?.() ?? { status: 'ok', restarts: 0 };
  }

  /**
   * Ends the model's worker as a crash would, for tests and the soak bench: requests in
   * flight fail with EngineUnavailableError, new ones wait, and the supervisor restarts
   * it. Resolves when it is serving again. Not available on a main-thread engine.
   */
  async killWorker(): Promise<void> {
    if (!this.transport.kill) throw new NotAvailableError('killWorker', 'the model runs on the main thread');
    await this.transport.kill();
    await this.transport.whenUp?.();
  }

  /** The scheduler's own figures (cached blocks, bytes per block) beside the Engine's. */
  kvStats(): SchedulerStats {
    return this.transport.stats();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.transport.close();
  }

  private needTokenizer(): ModelTokenizer {
    if (this.tokenizer === null) throw new NotAvailableError('tokenizer', `model ${this.modelName} has none; send token ids`);
    return this.tokenizer;
  }

  /**
   * The prompt as the core takes it: ids as given, text as given. Rendering the chat
   * template and tokenizing grow with the input, so they happen in the core, on the
   * model's thread, after its context check (see EngineCore.promptIds).
   */
  private requestPrompt(request: GenerateRequest): Pick<CoreSubmit, 'ids' | 'text'> {
    for (const [stage, value] of Object.entries(request.stages ?? {})) {
      const refused = value === undefined ? undefined : this.checkStage(stage as StageName);
      if (refused) throw refused;
    }
    const given = [request.prompt, request.messages, request.ids].filter((x) => x !== undefined).length;
    if (given !== 1) throw new BadRequestError('prompt', 'give exactly one of prompt, messages or ids');
    if (request.assistantPrefix !== undefined && request.messages === undefined) {
      throw new BadRequestError('assistantPrefix', 'only applies to messages');
    }
    if (request.ids !== undefined) return { ids: request.ids };
    this.needTokenizer();
    if (request.messages !== undefined) {
      return { text: { messages: request.messages, ...(request.assistantPrefix !== undefined ? { assistantPrefix: request.assistantPrefix } : {}) } };
    }
    return { text: { prompt: request.prompt! } };
  }
}
