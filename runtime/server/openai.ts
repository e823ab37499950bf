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
import { chatRequestSchema, checkRequest, type ChatRequest } from '../../core/requests.js';
import type { ChatMessage, Engine, FinishReason, GenerateEvent, GenerationUsage } from '../../core/engine.js';
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

/**
 * The chat messages of a checked request: text parts joined, `developer` read as
 * `system`. An earlier tool call is shown to the model in the same JSON form it produces
 * calls in.
 */
function messagesOf(body: ChatRequest): ChatMessage[] {
  return body.messages.map((m, i) => {
    let content = typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join('');
    const role = m.role === 'developer' ? 'system' : (m.role as ChatMessage['role']);
    if (role === 'assistant' && m.tool_calls && m.tool_calls.length > 0) {
      const calls = m.tool_calls.map((call, j) => {
        let args: unknown;
        try {
          args = JSON.parse(call.function.arguments);
        } catch {
          throw new BadRequestError(`/messages/${i}/tool_calls/${j}/function/arguments`, 'must be a JSON string');
        }
        return JSON.stringify({ name: call.function.name, arguments: args });
      });
      content = (content ? `${content}\n` : '') + calls.join('\n');
    }
    return { role, content };
  });
}

/** The sampling fields of a checked request, in Skein's names (limits from core/sampling.ts's schema). */
function samplingOf(body: ChatRequest): Partial<SamplingParams> {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  return {
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
    ...(body.top_p !== undefined ? { topP: body.top_p } : {}),
    ...(body.top_k !== undefined ? { topK: Math.max(0, body.top_k) } : {}),
    ...(body.repetition_penalty !== undefined ? { repetitionPenalty: body.repetition_penalty } : {}),
    ...(body.seed !== undefined ? { seed: body.seed } : {}),
    ...(body.stop !== undefined ? { stop: typeof body.stop === 'string' ? [body.stop] : body.stop } : {}),
    ...(body.frequency_penalty !== undefined ? { frequencyPenalty: body.frequency_penalty } : {}),
    ...(body.presence_penalty !== undefined ? { presencePenalty: body.presence_penalty } : {}),
    ...(body.logit_bias !== undefined ? { logitBias: Object.assign(Object.create(null) as Record<string, number>, body.logit_bias) } : {}),
  };
}

/**
 * vLLM's and SGLang's continuation (`continue_final_message: true`,
 * `add_generation_prompt: false`): the last message is an assistant turn the answer
 * continues, which is Skein's assistantPrefix. The two flags only make sense together.
 */
function continuation(body: ChatRequest, messages: ChatMessage[]): { messages: ChatMessage[]; assistantPrefix?: string } {
  if (body.continue_final_message !== true) {
    if (body.add_generation_prompt === false) throw new BadRequestError('add_generation_prompt', 'false needs continue_final_message: true');
    return { messages };
  }
  if (body.add_generation_prompt !== false) throw new BadRequestError('continue_final_message', 'needs add_generation_prompt: false');
  const last = messages.at(-1)!;
  if (last.role !== 'assistant') throw new BadRequestError(`/messages/${messages.length - 1}/role`, 'continue_final_message needs the last message to be the assistant turn to continue');
  if (messages.length < 2) throw new BadRequestError('messages', 'continue_final_message needs a turn before the assistant one');
  return { messages: messages.slice(0, -1), assistantPrefix: last.content };
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
  // OpenAI's (and vLLM's) field for prompt tokens served from the prefix cache.
  prompt_tokens_details: { cached_tokens: u.cachedPromptTokens },
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
    const json = await c.req.json<unknown>().catch(() => {
      throw new BadRequestError('body', 'must be JSON');
    });
    const body = checkRequest(chatRequestSchema, json);
    const model = body.model || engine.modelName;
    if (!deps.modelMatches(model)) throw new NotFoundError('model', model);
    const tools = planTools(body as Record<string, unknown>);
    const format = responseFormatOutput(body.response_format);
    if (format && tools.mode !== 'text') throw new BadRequestError('response_format', 'cannot be combined with tools yet');
    const grammarParam = tools.mode !== 'text' ? 'tools' : 'response_format';
    grammarParams.set(c.req.raw, grammarParam);
    const output = tools.output ?? format;
    if (output && !engine.supportsOutput) throw new NotAvailableError(grammarParam, `model ${engine.modelName} cannot constrain its output`);
    const { messages, assistantPrefix } = continuation(body, withToolSystem(messagesOf(body), tools.system));
    const sampling = samplingOf(body);
    const stream = body.stream === true;
    const includeUsage = body.stream_options?.include_usage === true;
    const id = `chatcmpl-${Date.now().toString(36)}${(counter++).toString(36)}`;
    const callId = `call_${id.slice(8)}`;
    const created = Math.floor(Date.now() / 1000);
    const release = store.acquireSlot();
    metrics.chatCompletion(stream);
    const gen$: Observable<GenerateEvent> = engine.generate({ messages, sampling, owner: id, ...(assistantPrefix ? { assistantPrefix } : {}), ...(output ? { output } : {}) });

    if (!stream) {
      try {
        // A client that hangs up stops the generation it was waiting for.
        const gone$ = fromEvent(c.req.raw.signal, 'abort');
        const done = await firstValueFrom(gen$.pipe(takeUntil(gone$), last(null, null)));
        // The client left before the end: no answer to give, and not a server fault to log.
        if (c.req.raw.signal.aborted) {
          metrics.chatCompletionCancelled();
          throw new CancelledError('chat completion (the client went away)');
        }
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
            if (e.type === 'stage') return;
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
            ended = true;
          },
          error: (err: unknown) => {
            // Headers are sent: the error travels in the stream, as OpenAI's API does it.
            const { error } = openAiError(err, grammarParam).body;
            out.push(() => sse.writeSSE({ data: JSON.stringify({ error }) }));
            void out.drained().then(resolve);
          },
          complete: () => void out.drained().then(resolve),
        });
        let ended = false;
        sse.onAbort(() => {
          if (!ended) metrics.chatCompletionCancelled();
          sub.unsubscribe();
          run.cancel();
          resolve();
        });
      }).finally(release);
    });
  });

  return app;
}
