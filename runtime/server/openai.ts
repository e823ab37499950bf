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
import { chatRequestSchema, checkRequest, type ChatRequest } from '../../core/requests.js';
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

/** The chat messages of a checked request: text parts joined, `developer` read as `system`. */
function messagesOf(body: ChatRequest): ChatMessage[] {
  return body.messages.map((m) => {
    const content = typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join('');
    return { role: m.role === 'developer' ? 'system' : (m.role as ChatMessage['role']), content };
  });
}

/** The sampling fields of a checked request, in Skein's names (limits from core/sampling.ts's schema). */
function samplingOf(body: ChatRequest): Partial<SamplingParams> {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  return {
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
    ...(body.top_p !== undefined ? { topP: body.top_p } : {}),
    ...(body.seed !== undefined ? { seed: body.seed } : {}),
    ...(body.stop !== undefined ? { stop: typeof body.stop === 'string' ? [body.stop] : body.stop } : {}),
  };
}

const finishReason = (r: FinishReason): 'stop' | 'length' => (r === 'length' ? 'length' : 'stop');

export function chatCompletionsRoute(deps: ChatDeps): Hono {
  const { engine, store, metrics } = deps;
  const app = new Hono();
  let counter = 0;

  app.post('/chat/completions', async (c) => {
    const json = await c.req.json<unknown>().catch(() => {
      throw new BadRequestError('body', 'must be JSON');
    });
    const body = checkRequest(chatRequestSchema, json);
    const model = body.model || engine.modelName;
    if (!deps.modelMatches(model)) throw new NotFoundError('model', model);
    const messages = messagesOf(body);
    const sampling = samplingOf(body);
    const stream = body.stream === true;
    const includeUsage = body.stream_options?.include_usage === true;
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
