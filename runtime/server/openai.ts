/**
 * OpenAI-compatible `POST /v1/chat/completions` on the shared engine, streaming (SSE
 * `chat.completion.chunk`s ending with `[DONE]`) and not, with tools and response formats
 * (openai-tools.ts), logprobs, and `n` choices batched over the shared prompt
 * (openai-choices.ts). A client that goes away unsubscribes, which cancels the generation
 * and frees its KV. The request counts against the server's concurrency limit like a run
 * does (one slot, whatever its `n`).
 *
 * @example
 * app.route('/v1', chatCompletionsRoute({ engine, store, metrics }));
 * // then: new OpenAI({ baseURL: 'http://127.0.0.1:8787/v1' }).chat.completions.create(...)
 */
import { Hono } from 'hono';
import { BadRequestError, NotAvailableError } from '../../core/errors.js';
import { chatRequestSchema, type ChatRequest } from '../../core/requests.js';
import type { ChatMessage, Engine, GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { countDone, chatLogprob, choiceEvents, collectChoices, finishReason, samplingOf, startChoices, streamChoices, usageOf, type Done, type TokenEvent } from './openai-choices.js';
import { readOpenAiBody } from './openai-request.js';
import { openAiErrorResponse, type ErrorParams } from './openai-errors.js';
import { parseToolCall, planTools, responseFormatOutput, ToolCallStream, type ToolPlan } from './openai-tools.js';
import type { ServerMetrics } from './metrics.js';
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

/** The tool system message goes first, merged into the caller's system message when there is one. */
function withToolSystem(messages: ChatMessage[], system: string | undefined): ChatMessage[] {
  if (system === undefined) return messages;
  if (messages[0]?.role === 'system') return [{ role: 'system', content: `${messages[0].content}\n\n${system}` }, ...messages.slice(1)];
  return [{ role: 'system', content: system }, ...messages];
}

/** The logprobs a request asks for: undefined, or the number of alternatives per token. */
function logprobsOf(body: ChatRequest): number | undefined {
  if (body.top_logprobs !== undefined && body.logprobs !== true) throw new BadRequestError('top_logprobs', 'needs logprobs: true');
  if (body.logprobs !== true) return undefined;
  return body.top_logprobs ?? 0;
}

/**
 * One choice of a streamed chat completion: text deltas, or a tool call's deltas. In
 * 'either' mode text is held back until its first character says whether this is a call.
 * Log-probabilities (when asked for) cover every token emitted, a call's JSON included;
 * a token whose text produces no delta yet (a call's name still incomplete, half a
 * character) has its logprob ride on the next chunk that goes out, at the latest the
 * finishing one, so the stream's logprobs add up to the non-streamed answer's.
 */
class ChatChoiceStream {
  private call: ToolCallStream | null;
  private pending: string | null;
  private logprobs: object[] = [];

  constructor(
    private readonly index: number,
    private readonly mode: ToolPlan['mode'],
    private readonly callId: string,
    private readonly chunk: (index: number, delta: object, finish: string | null, logprobs?: object) => object,
  ) {
    this.call = mode === 'call' ? new ToolCallStream(callId) : null;
    this.pending = mode === 'either' ? '' : null;
  }

  first(): object {
    return this.chunk(this.index, { role: 'assistant', content: this.mode === 'call' ? null : '' }, null);
  }

  token(e: TokenEvent): object[] {
    if (e.logprobs) this.logprobs.push(chatLogprob(e.logprobs));
    if (this.pending === null) return this.chunks(this.deltas(e.text));
    this.pending += e.text;
    if (this.pending.length === 0) return [];
    if (this.pending.startsWith('{')) this.call = new ToolCallStream(this.callId);
    const first = this.pending;
    this.pending = null;
    return this.chunks(this.deltas(first));
  }

  done(e: Done): object[] {
    const deltas = this.pending ? this.deltas(this.pending) : [];
    if (this.call) deltas.push(...this.call.finish().map((d) => ({ tool_calls: [d] })));
    const out = this.chunks(deltas);
    out.push(this.chunk(this.index, {}, this.call && e.reason !== 'length' ? 'tool_calls' : finishReason(e.reason), this.takeLogprobs()));
    return out;
  }

  private deltas(piece: string): object[] {
    if (this.call) return this.call.push(piece).map((d) => ({ tool_calls: [d] }));
    return piece ? [{ content: piece }] : [];
  }

  /** Deltas as chunks, the log-probabilities not sent yet on the first. */
  private chunks(deltas: object[]): object[] {
    return deltas.map((delta, i) => this.chunk(this.index, delta, null, i === 0 ? this.takeLogprobs() : undefined));
  }

  private takeLogprobs(): object | undefined {
    if (this.logprobs.length === 0) return undefined;
    const content = this.logprobs;
    this.logprobs = [];
    return { content };
  }
}

/** A finished choice as chat.completion's choice: text or a tool call, with logprobs when asked for. */
function chatChoice(index: number, events: GenerateEvent[], mode: ToolPlan['mode'], callId: string, logprobs: boolean): object {
  const done = events.at(-1) as Done;
  const isCall = done.reason !== 'length' && (mode === 'call' || (mode === 'either' && done.text.startsWith('{')));
  const message = isCall ? { role: 'assistant', content: null, tool_calls: [parseToolCall(done.text, callId)] } : { role: 'assistant', content: done.text };
  const content = logprobs ? events.flatMap((e) => (e.type === 'token' && e.logprobs ? [chatLogprob(e.logprobs)] : [])) : null;
  return { index, message, finish_reason: isCall ? 'tool_calls' : finishReason(done.reason), logprobs: content ? { content, refusal: null } : null };
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

export function chatCompletionsRoute(deps: ChatDeps): Hono {
  const { engine, store, metrics } = deps;
  const app = new Hono();
  let counter = 0;
  // Errors from deeper down are named by the request field they came from (tools or response_format, messages, max_tokens).
  const errorParams = new WeakMap<Request, ErrorParams>();
  app.onError((err, c) => openAiErrorResponse(c, err, errorParams.get(c.req.raw) ?? {}));

  app.post('/chat/completions', async (c) => {
    const { body, model } = await readOpenAiBody(c, chatRequestSchema, deps);
    const tools = planTools(body as Record<string, unknown>);
    const format = responseFormatOutput(body.response_format);
    if (format && tools.mode !== 'text') throw new BadRequestError('response_format', 'cannot be combined with tools yet');
    const params: ErrorParams = {
      grammar: tools.mode !== 'text' ? 'tools' : 'response_format',
      prompt: 'messages',
      maxTokens: body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens',
    };
    errorParams.set(c.req.raw, params);
    const output = tools.output ?? format;
    if (output && !engine.supportsOutput) throw new NotAvailableError(params.grammar!, `model ${engine.modelName} cannot constrain its output`);
    const top = logprobsOf(body);
    const { messages, assistantPrefix } = continuation(body, withToolSystem(messagesOf(body), tools.system));
    const sampling = samplingOf(body);
    const n = body.n ?? 1;
    const stream = body.stream === true;
    const includeUsage = body.stream_options?.include_usage === true;
    const id = `chatcmpl-${Date.now().toString(36)}${(counter++).toString(36)}`;
    const callId = (index: number) => `call_${id.slice('chatcmpl-'.length)}${n > 1 ? `_${index}` : ''}`;
    const created = Math.floor(Date.now() / 1000);
    const release = store.acquireSlot();
    metrics.chatCompletion(stream);
    const request: GenerateRequest = {
      messages,
      sampling,
      owner: id,
      ...(assistantPrefix ? { assistantPrefix } : {}),
      ...(output ? { output } : {}),
      ...(top !== undefined ? { logprobs: top } : {}),
      // OpenAI's rule: max_tokens that do not fit after the prompt are a 400, not a shorter answer.
      ...(sampling.maxTokens !== undefined ? { maxTokensMustFit: true } : {}),
    };
    const events$ = choiceEvents(engine, [request], n);

    if (!stream) {
      try {
        const perChoice = await collectChoices(events$, n, c.req.raw.signal).catch((err: unknown) => {
          if (c.req.raw.signal.aborted) metrics.chatCompletionCancelled();
          throw err;
        });
        const dones = perChoice.map((events) => events.at(-1) as Done);
        for (const done of dones) countDone(metrics, done);
        return c.json({
          id,
          object: 'chat.completion',
          created,
          model: engine.modelName,
          choices: perChoice.map((events, index) => chatChoice(index, events, tools.mode, callId(index), top !== undefined)),
          usage: usageOf(dones),
        });
      } finally {
        release();
      }
    }

    const run = await startChoices(events$, n, release);
    const chunk = (index: number, delta: object, finish: string | null, logprobs?: object) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model: engine.modelName,
      choices: [{ index, delta, finish_reason: finish, logprobs: logprobs ?? null }],
    });
    const choices = Array.from({ length: n }, (_, index) => new ChatChoiceStream(index, tools.mode, callId(index), chunk));
    const dones: Done[] = [];
    const begun = new Set<number>();
    return streamChoices(
      c,
      run,
      {
        onEvent: ({ index, event }) => {
          const choice = choices[index]!;
          const out = begun.has(index) ? [] : (begun.add(index), [choice.first()]);
          if (event.type === 'token') out.push(...choice.token(event));
          else if (event.type === 'done') {
            countDone(metrics, event);
            dones[index] = event;
            out.push(...choice.done(event));
          }
          return out;
        },
        onEnd: () => (includeUsage ? [{ id, object: 'chat.completion.chunk', created, model: engine.modelName, choices: [], usage: usageOf(dones) }] : []),
        onCancel: () => metrics.chatCompletionCancelled(),
      },
      params,
      release,
    );
  });

  return app;
}
