/**
 * A scripted Engine for HTTP and browser tests: streams the words of a reply one token
 * at a time with a delay, honours maxTokens and unsubscribe, and counts what is live so
 * tests can check that a cancel freed the engine's work. Replies: a numbered outline
 * when the prompt asks for a skeleton, otherwise a sentence about the last user text.
 *
 * @example
 * const engine = createServerFakeEngine({ delayMs: 5 });
 * engine.generate({ prompt: 'Hi', sampling: { maxTokens: 3 } }).subscribe(console.log);
 */
import { Observable } from 'rxjs';
import { resolveSampling } from '../../core/sampling.js';
import type { ChatMessage, Engine, EngineStats, GenerateEvent, GenerateRequest } from '../../runtime/engine/types.js';

export interface FakeEngineOptions {
  delayMs?: number;
  modelName?: string;
  /** Overrides the reply to a request. */
  reply?: (promptText: string, request: GenerateRequest) => string;
}

export interface ServerFakeEngine extends Engine {
  /** Generations subscribed and not yet finished or unsubscribed. */
  readonly active: number;
  /** Generations ever started. */
  readonly started: number;
  /** Generations ended by unsubscribe before done. */
  readonly cancelled: number;
  /** Tokens emitted in total. */
  readonly emitted: number;
}

const FILLER =
  'Start small and keep going every day with patience care and a clear plan so that each step builds on the last one and the whole becomes easy to follow'.split(' ');

function defaultReply(text: string): string {
  if (/skeleton|outline/i.test(text)) return '1. Gather basic tools\n2. Learn simple recipes\n3. Practice every week';
  const subject = text.trim().split(/\s+/).slice(-4).join(' ');
  return `About ${subject}: ${FILLER.join(' ')}.`;
}

export function createServerFakeEngine(opts: FakeEngineOptions = {}): ServerFakeEngine {
  const delayMs = opts.delayMs ?? 10;
  const modelName = opts.modelName ?? 'fake-mini';
  let active = 0;
  let started = 0;
  let cancelled = 0;
  let emitted = 0;

  const tokenize = (text: string) => Array.from(text.split(/(?<=\s)/), (_, i) => i + 1);
  const renderChat = (messages: ChatMessage[], assistantPrefix?: string) =>
    messages.map((m) => `<|${m.role}|>${m.content}`).join('\n') + '\n<|assistant|>' + (assistantPrefix ?? '');

  const engine: ServerFakeEngine = {
    modelName,
    get active() {
      return active;
    },
    get started() {
      return started;
    },
    get cancelled() {
      return cancelled;
    },
    get emitted() {
      return emitted;
    },
    tokenize,
    detokenize: (ids) => ids.map((id) => `t${id} `).join(''),
    renderChat,
    generate(request: GenerateRequest): Observable<GenerateEvent> {
      return new Observable<GenerateEvent>((subscriber) => {
        const sampling = resolveSampling(request.sampling);
        const promptText = request.prompt ?? (request.messages ? renderChat(request.messages, request.assistantPrefix) : (request.ids ?? []).join(' '));
        const lastUser = request.messages ? [...request.messages].reverse().find((m) => m.role === 'user')?.content ?? '' : promptText;
        const reply = opts.reply ? opts.reply(promptText, request) : defaultReply(lastUser);
        const pieces = reply.split(/(?<=\s)/).slice(0, sampling.maxTokens);
        const t0 = Date.now();
        let ttft = 0;
        let i = 0;
        let finished = false;
        active++;
        started++;
        const promptTokens = tokenize(promptText).length;
        const timer = setInterval(() => {
          if (i < pieces.length) {
            if (i === 0) ttft = Date.now() - t0;
            emitted++;
            subscriber.next({ type: 'token', id: 100 + i, text: pieces[i]! });
            i++;
            return;
          }
          clearInterval(timer);
          finished = true;
          active--;
          const totalMs = Date.now() - t0;
          subscriber.next({
            type: 'done',
            reason: pieces.length < reply.split(/(?<=\s)/).length ? 'length' : 'eos',
            ids: pieces.map((_, k) => 100 + k),
            text: pieces.join(''),
            usage: { promptTokens, completionTokens: pieces.length, cachedPromptTokens: 0 },
            metrics: { ttftMs: ttft, totalMs, decodeTokensPerSec: totalMs > 0 ? (pieces.length * 1000) / totalMs : 0 },
          });
          subscriber.complete();
        }, delayMs);
        return () => {
          clearInterval(timer);
          if (!finished) {
            finished = true;
            active--;
            cancelled++;
          }
        };
      });
    },
    stats(): EngineStats {
      return {
        backend: 'fake',
        model: modelName,
        kvBlocksTotal: 256,
        kvBlocksUsed: active * 4,
        kvBlocksShared: active > 1 ? 2 : 0,
        queueDepth: 0,
        runningSequences: active,
      };
    },
    async close() {},
  };
  return engine;
}
