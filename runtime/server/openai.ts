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
import { firstValueFrom, fromEvent, last, ReplaySubject, takeUntil, type Observable } from 'rxjs';
import { BadRequestError, CancelledError, NotAvailableError, NotFoundError } from '../../core/errors.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { ChatMessage, Engine, FinishReason, GenerateEvent, GenerationUsage } from '../engine/types.js';
import { openAiError, openAiErrorResponse } from './openai-errors.js';
import { parseToolCall, planTools, responseFormatOutput, ToolCallStream } from './openai-tools.js';
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
    const msg = m as { role?: unknown; content?: unknown; tool_calls?: unknown };
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
    // An earlier tool call is shown to the model in the same JSON form it produces calls in.
    if (role === 'assistant' && Array.isArray(msg.tool_calls) && msg.tool_calls.length > 0) {
      const calls = msg.tool_calls.map((c: { function?: { name?: unknown; arguments?: unknown } }, j: number) => {
        const fn = c?.function;
        if (typeof fn?.name !== 'string' || typeof fn.arguments !== 'string') throw new BadRequestError(`messages[${i}].tool_calls[${j}]`, 'needs function.name and function.arguments');
        let args: unknown;
        try {
          args = JSON.parse(fn.arguments);
        } catch {
          throw new BadRequestError(`messages[${i}].tool_calls[${j}].function.arguments`, 'must be a JSON string');
        }
        return JSON.stringify({ name: fn.name, arguments: args });
      });
      content = (content ? `${content}\n` : '') + calls.join('\n');
    }
    return { role, content };
  });
}

/**
 * Every request field this endpoint reads. Any other field is a 400 naming it: an option
 * a client sets and the server ignores would make its answers silently wrong.
 * `user` is an opaque end-user id for the caller's own logs; it changes nothing here.
 */
const KNOWN_FIELDS = new Set([
  'model', 'messages', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k',
  'seed', 'stop', 'n', 'response_format', 'tools', 'tool_choice', 'parallel_tool_calls', 'user',
  'logprobs', 'top_logprobs', 'logit_bias', 'frequency_penalty', 'presence_penalty',
]);

function refuseUnsupported(body: Record<string, unknown>): void {
  for (const key of Object.keys(body)) if (!KNOWN_FIELDS.has(key)) throw new BadRequestError(key, 'is not supported by this server');
  if (body.logprobs != null && body.logprobs !== false) throw new BadRequestError('logprobs', 'log probabilities are not supported yet');
  if (body.top_logprobs != null && body.top_logprobs !== 0) throw new BadRequestError('top_logprobs', 'log probabilities are not supported yet');
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
  const topK = num('top_k', -1, 1_000_000);
  // vLLM's convention: -1 (or 0) disables top-k.
  if (topK !== undefined) s.topK = Math.max(0, Math.floor(topK));
  const seed = num('seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (seed !== undefined) s.seed = Math.floor(seed);
  const stop = body.stop;
  if (typeof stop === 'string') s.stop = [stop];
  else if (Array.isArray(stop) && stop.every((x) => typeof x === 'string')) s.stop = stop as string[];
  else if (stop != null) throw new BadRequestError('stop', 'must be a string or an array of strings');
  if (s.stop?.some((x) => x.length === 0)) throw new BadRequestError('stop', 'stop strings must not be empty');
  if (s.stop && s.stop.length > 4) throw new BadRequestError('stop', 'at most 4 stop strings');
  if (body.n != null && body.n !== 1) throw new BadRequestError('n', 'only n = 1 is supported');
  const frequency = num('frequency_penalty', -2, 2);
  if (frequency !== undefined) s.frequencyPenalty = frequency;
  const presence = num('presence_penalty', -2, 2);
  if (presence !== undefined) s.presencePenalty = presence;
  const bias = body.logit_bias;
  if (bias != null) {
    if (typeof bias !== 'object' || Array.isArray(bias)) throw new BadRequestError('logit_bias', 'must map token ids to numbers');
    const entries = Object.entries(bias as Record<string, unknown>);
    if (entries.length > 300) throw new BadRequestError('logit_bias', 'at most 300 tokens');
    const logitBias: Record<string, number> = Object.create(null);
    for (const [id, v] of entries) {
      if (!/^(0|[1-9][0-9]{0,8})$/.test(id)) throw new BadRequestError(`logit_bias.${id}`, 'keys must be token ids');
      if (typeof v !== 'number' || !Number.isFinite(v) || v < -100 || v > 100) throw new BadRequestError(`logit_bias.${id}`, 'must be a number in [-100, 100]');
      logitBias[id] = v;
    }
    s.logitBias = logitBias;
  }
  return s;
}

/** The tool system message goes first, merged into the caller's system message when there is one. */
function withToolSystem(messages: ChatMessage[], system: string | undefined): ChatMessage[] {
  if (system === undefined) return messages;
  if (messages[0]?.role === 'system') return [{ role: 'system', content: `${messages[0].content}\n\n${system}` }, ...messages.slice(1)];
  return [{ role: 'system', content: system }, ...messages];
}

/**
 * Starts the generation and waits for its first event, so that a request refused at
 * submit (a prompt past the context, a schema the grammar cannot compile) is an HTTP
 * error before any stream starts. Later events are replayed to the stream's subscriber.
 */
async function started(gen$: Observable<GenerateEvent>): Promise<{ events$: Observable<GenerateEvent>; cancel: () => void }> {
  const events = new ReplaySubject<GenerateEvent>();
  const sub = gen$.subscribe(events);
  try {
    await firstValueFrom(events);
  } catch (err) {
    sub.unsubscribe();
    throw err;
  }
  return { events$: events, cancel: () => sub.unsubscribe() };
}

const usageOf = (u: GenerationUsage) => ({
  prompt_tokens: u.promptTokens,
  completion_tokens: u.completionTokens,
  total_tokens: u.promptTokens + u.completionTokens,
});

const finishReason = (r: FinishReason): 'stop' | 'length' => (r === 'length' ? 'length' : 'stop');

export function chatCompletionsRoute(deps: ChatDeps): Hono {
  const { engine, store, metrics } = deps;
  const app = new Hono();
  let counter = 0;
  // A schema the grammar refuses is named by the field it came from (tools or response_format).
  const grammarParams = new WeakMap<Request, string>();
  app.onError((err, c) => openAiErrorResponse(c, err, grammarParams.get(c.req.raw) ?? null));

  app.post('/chat/completions', async (c) => {
    const body = await c.req.json<Record<string, unknown>>().catch(() => {
      throw new BadRequestError('body', 'must be JSON');
    });
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequestError('body', 'must be a JSON object');
    refuseUnsupported(body);
    const model = typeof body.model === 'string' && body.model ? body.model : engine.modelName;
    if (!deps.modelMatches(model)) throw new NotFoundError('model', model);
    const tools = planTools(body);
    const format = responseFormatOutput(body.response_format);
    if (format && tools.mode !== 'text') throw new BadRequestError('response_format', 'cannot be combined with tools yet');
    const grammarParam = tools.mode !== 'text' ? 'tools' : 'response_format';
    grammarParams.set(c.req.raw, grammarParam);
    const output = tools.output ?? format;
    if (output && !engine.supportsOutput) throw new NotAvailableError(grammarParam, `model ${engine.modelName} cannot constrain its output`);
    const messages = withToolSystem(parseMessages(body.messages), tools.system);
    const sampling = parseSampling(body);
    const stream = body.stream === true;
    const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    const id = `chatcmpl-${Date.now().toString(36)}${(counter++).toString(36)}`;
    const callId = `call_${id.slice(8)}`;
    const created = Math.floor(Date.now() / 1000);
    const release = store.acquireSlot();
    metrics.chatCompletion(stream);
    const gen$: Observable<GenerateEvent> = engine.generate({ messages, sampling, owner: id, ...(output ? { output } : {}) });

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
        const isCall = done.reason !== 'length' && (tools.mode === 'call' || (tools.mode === 'either' && done.text.startsWith('{')));
        const message = isCall
          ? { role: 'assistant', content: null, tool_calls: [parseToolCall(done.text, callId)] }
          : { role: 'assistant', content: done.text };
        return c.json({
          id,
          object: 'chat.completion',
          created,
          model: engine.modelName,
          choices: [{ index: 0, message, finish_reason: isCall ? 'tool_calls' : finishReason(done.reason), logprobs: null }],
          usage: usageOf(done.usage),
        });
      } finally {
        release();
      }
    }

    let run: Awaited<ReturnType<typeof started>>;
    try {
      run = await started(gen$);
    } catch (err) {
      release();
      throw err;
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
        out.push(() => chunk({ role: 'assistant', content: tools.mode === 'call' ? null : '' }, null));
        // 'either' holds text back until its first character says whether this is a call.
        let call: ToolCallStream | null = tools.mode === 'call' ? new ToolCallStream(callId) : null;
        let pending: string | null = tools.mode === 'either' ? '' : null;
        const emit = (piece: string) => {
          if (call) for (const d of call.push(piece)) out.push(() => chunk({ tool_calls: [d] }, null));
          else if (piece) out.push(() => chunk({ content: piece }, null));
        };
        const sub = run.events$.subscribe({
          next: (e) => {
            if (e.type === 'token') {
              if (pending === null) return emit(e.text);
              pending += e.text;
              if (pending.length === 0) return;
              if (pending.startsWith('{')) call = new ToolCallStream(callId);
              const first = pending;
              pending = null;
              return emit(first);
            }
            metrics.tokens(e.usage.completionTokens);
            metrics.ttft(e.metrics.ttftMs);
            if (pending) emit(pending);
            if (call) for (const d of call.finish()) out.push(() => chunk({ tool_calls: [d] }, null));
            out.push(() => chunk({}, call && e.reason !== 'length' ? 'tool_calls' : finishReason(e.reason)));
            if (includeUsage) {
              const usage = usageOf(e.usage);
              out.push(() => sse.writeSSE({ data: JSON.stringify({ id, object: 'chat.completion.chunk', created, model: engine.modelName, choices: [], usage }) }));
            }
            out.push(() => sse.writeSSE({ data: '[DONE]' }));
          },
          error: (err: unknown) => {
            // Headers are sent: the error travels in the stream, as OpenAI's API does it.
            const { error } = openAiError(err, grammarParam).body;
            out.push(() => sse.writeSSE({ data: JSON.stringify({ error }) }));
            void out.drained().then(resolve);
          },
          complete: () => void out.drained().then(resolve),
        });
        sse.onAbort(() => {
          sub.unsubscribe();
          run.cancel();
          resolve();
        });
      }).finally(release);
    });
  });

  return app;
}
