/**
 * The Engine that operators see, on the main thread: it turns a request (prompt, chat
 * messages or ids) into token ids with the model's tokenizer, hands them to a transport
 * (the core in this thread, or in a worker) and maps the core's events to a cold
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
import type { ChatMessage, Engine, EngineStats, GenerateEvent, GenerateRequest } from '../../core/engine.js';
import type { StageName } from '../../core/stages.js';
import { checkStage, type ModelFacts } from '../stages/registry.js';

export interface EngineTransport {
  /** Queues a request; `listener` gets its events until done or error. */
  submit(msg: CoreSubmit, listener: (event: CoreEvent) => void): void;
  cancel(requestId: string): void;
  stats(): SchedulerStats;
  close(): Promise<void>;
}

let nextRequest = 0;

export class EngineFront implements Engine {
  readonly modelName: string;
  private readonly facts: ModelFacts;
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
          ids: this.requestIds(request),
          sampling: resolveSampling(request.sampling),
          owner: request.owner,
          ...(request.stages && Object.keys(request.stages).length ? { stages: request.stages } : {}),
        };
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
          subscriber.next({ type: 'token', id: event.id, text: event.text });
        } else if (event.type === 'stage') {
          const { requestId: _, ...stage } = event;
          subscriber.next(stage);
        } else if (event.type === 'done') {
          finished = true;
          const { requestId: _, ...done } = event;
          subscriber.next(done);
          subscriber.complete();
        } else {
          finished = true;
          subscriber.error(event.error);
        }
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
      queueDepth: s.queueDepth,
      runningSequences: s.runningSequences,
    };
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

  private requestIds(request: GenerateRequest): number[] {
    for (const [stage, value] of Object.entries(request.stages ?? {})) {
      const refused = value === undefined ? undefined : this.checkStage(stage as StageName);
      if (refused) throw refused;
    }
    const given = [request.prompt, request.messages, request.ids].filter((x) => x !== undefined).length;
    if (given !== 1) throw new BadRequestError('prompt', 'give exactly one of prompt, messages or ids');
    if (request.assistantPrefix !== undefined && request.messages === undefined) {
      throw new BadRequestError('assistantPrefix', 'only applies to messages');
    }
    if (request.ids !== undefined) return request.ids;
    const text = request.messages !== undefined ? this.renderChat(request.messages, request.assistantPrefix) : request.prompt!;
    return this.needTokenizer().encode(text, { addSpecialTokens: false });
  }
}
