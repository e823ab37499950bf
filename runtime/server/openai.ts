/**
 * OpenAI-compatible `POST /v1/chat/completions` on the shared engine, streaming (SSE
 * `chat.completion.chunk`s ending with `[DONE]`) and not. A client that goes away
 * unsubscribes, which cancels the generation and frees its KV. The request counts
 * against the server's concurrency limit like a run does.
 *
 * @example
 * app.route('/v1', chatCompletionsRoute({ engine, store, metrics }));
 * // then: new OpenAI({ baseURL: 'http://127.0.0.1:8787/v1' }).chat.completions.create(...)
 */
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { firstValueFrom, fromEvent, last, takeUntil, type Observable } from 'rxjs';
import { BadRequestError, CancelledError, NotFoundError } from '../../core/errors.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { ChatMessage, Engine, FinishReason, GenerateEvent } from '../../core/engine.js';
import { mapError } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import { orderedWrites } from './ordered.js';
import type { RunStore } from './runs.js';

export interface ChatDeps {
  engine: Engine;
  store: RunStore;
  metrics: ServerMetrics;
  modelMatches: (name: string) => boolean;
}

const ROLES = new Set(['system', 'user', 'assistant', 'tool', 'developer']);

function parseMessages(raw: unknown): ChatMessage[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new BadRequestError('messages', 'a non-empty array is required');
  return raw.map((m, i) => {
    const msg = m as { role?: unknown; content?: unknown };
    if (typeof msg?.role !== 'string' || !ROLES.has(msg.role)) throw new BadRequestError(`messages[${i}].role`, 'unknown role');
    // Content may be a string or an array of text parts; other part types are not served.
    let content: string;
    if (typeof msg.content === 'string') content = msg.content;
    else if (Array.isArray(msg.content)) {
      content = msg.content
        .map((p: { type?: unknown; text?: unknown }) => {
          if (p?.type !== 'text' || typeof p.text !== 'string') throw new BadRequestError(`messages[${i}].content`, 'only text parts are supported');
          return p.text;
        })
        .join('');
    } else if (msg.content == null) content = '';
    else throw new BadRequestError(`messages[${i}].content`, 'must be a string or text parts');
    const role = msg.role === 'developer' ? 'system' : (msg.role as ChatMessage['role']);
    return { role, content };
  });
}

function parseSampling(body: Record<string, unknown>): Partial<SamplingParams> {
  const s: Partial<SamplingParams> = {};
  const num = (key: string, min: number, max: number): number | undefined => {
    const v = body[key];
    if (v == null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new BadRequestError(key, `must be a number in [${min}, ${max}]`);
    return v;
  };
  const maxTokens = num('max_completion_tokens', 1, 32768) ?? num('max_tokens', 1, 32768);
  if (maxTokens !== undefined) s.maxTokens = Math.floor(maxTokens);
  const temperature = num('temperature', 0, 2);
  if (temperature !== undefined) s.temperature = temperature;
  const topP = num('top_p', Number.MIN_VALUE, 1);
  if (topP !== undefined) s.topP = topP;
  const seed = num('seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (seed !== undefined) s.seed = Math.floor(seed);
  const stop = body.stop;
  if (typeof stop === 'string') s.stop = [stop];
  else if (Array.isArray(stop) && stop.every((x) => typeof x === 'string')) s.stop = stop as string[];
  else if (stop != null) throw new BadRequestError('stop', 'must be a string or an array of strings');
  if (body.n != null && body.n !== 1) throw new BadRequestError('n', 'only n = 1 is supported');
  return s;
}

const finishReason = (r: FinishReason): 'stop' | 'length' => (r === 'length' ? 'length' : 'stop');

export function chatCompletionsRoute(deps: ChatDeps): Hono {
  const { engine, store, metrics } = deps;
  const app = new Hono();
  let counter = 0;

  app.post('/chat/completions', async (c) => {
    const body = await c.req.json<Record<string, unknown>>().catch(() => {
      throw new BadRequestError('body', 'must be JSON');
    });
    if (typeof body !== 'object' || body === null) throw new BadRequestError('body', 'must be a JSON object');
    const model = typeof body.model === 'string' && body.model ? body.model : engine.modelName;
    if (!deps.modelMatches(model)) throw new NotFoundError('model', model);
    const messages = parseMessages(body.messages);
    const sampling = parseSampling(body);
    const stream = body.stream === true;
    const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    const id = `chatcmpl-${Date.now().toString(36)}${(counter++).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const release = store.acquireSlot();
    metrics.chatCompletion(stream);
    const gen$: Observable<GenerateEvent> = engine.generate({ messages, sampling, owner: id });

    if (!stream) {
      try {
        // A client that hangs up stops the generation it was waiting for.
        const gone$ = fromEvent(c.req.raw.signal, 'abort');
        const done = await firstValueFrom(gen$.pipe(takeUntil(gone$), last(null, null)));
        // The client left before the end: no answer to give, and not a server fault to log.
        if (c.req.raw.signal.aborted) throw new CancelledError('chat completion (the client went away)');
        if (done?.type !== 'done') throw new Error('generation ended without done');
        metrics.tokens(done.usage.completionTokens);
        metrics.ttft(done.metrics.ttftMs);
        return c.json({
          id,
          object: 'chat.completion',
          created,
          model: engine.modelName,
          choices: [{ index: 0, message: { role: 'assistant', content: done.text }, finish_reason: finishReason(done.reason), logprobs: null }],
          usage: {
            prompt_tokens: done.usage.promptTokens,
            completion_tokens: done.usage.completionTokens,
            total_tokens: done.usage.promptTokens + done.usage.completionTokens,
          },
        });
      } finally {
        release();
      }
    }

    return streamSSE(c, async (sse) => {
      const chunk = (delta: Record<string, unknown>, finish: string | null) =>
        sse.writeSSE({
          data: JSON.stringify({
            id,
            object: 'chat.completion.chunk',
            created,
            model: engine.modelName,
            choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
          }),
        });
      await new Promise<void>((resolve) => {
        const out = orderedWrites();
        out.push(() => chunk({ role: 'assistant', content: '' }, null));
        const sub = gen$.subscribe({
          next: (e) => {
            if (e.type === 'token') {
              out.push(() => chunk({ content: e.text }, null));
              return;
            }
            if (e.type === 'stage') return;
            metrics.tokens(e.usage.completionTokens);
            metrics.ttft(e.metrics.ttftMs);
            out.push(() => chunk({}, finishReason(e.reason)));
            if (includeUsage) {
              const usage = {
                prompt_tokens: e.usage.promptTokens,
                completion_tokens: e.usage.completionTokens,
                total_tokens: e.usage.promptTokens + e.usage.completionTokens,
              };
              out.push(() => sse.writeSSE({ data: JSON.stringify({ id, object: 'chat.completion.chunk', created, model: engine.modelName, choices: [], usage }) }));
            }
            out.push(() => sse.writeSSE({ data: '[DONE]' }));
          },
          error: (err: unknown) => {
            // Headers are sent: the error travels in the stream, as OpenAI's API does it.
            // The same body and code as a typed error before the headers would have had.
            const { error } = mapError(err).body;
            out.push(() => sse.writeSSE({ data: JSON.stringify({ error }) }));
            void out.drained().then(resolve);
          },
          complete: () => void out.drained().then(resolve),
        });
        sse.onAbort(() => {
          sub.unsubscribe();
          resolve();
        });
      }).finally(release);
    });
  });

  return app;
}
