/**
 * An Engine over a remote OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, TGI,
 * another Skein): a node whose graph names a provider sends its chat messages to
 * `POST {baseUrl}/chat/completions` with `stream: true` and streams the answer back as
 * the same token, stage and done events a local generation gives. Unsubscribing aborts the
 * HTTP request (the server sees the client go away and stops generating).
 *
 * What crosses the boundary, and how:
 * - Usage comes from the server's `usage` block (asked for with
 *   `stream_options.include_usage`); cached prompt tokens from
 *   `usage.prompt_tokens_details.cached_tokens` where the server reports them.
 * - `assistantPrefix` (SoT's pre-filled points) is sent as a final assistant message with
 *   `continue_final_message: true, add_generation_prompt: false`, the continuation
 *   parameters of vLLM and SGLang, which Skein's own server also takes. A server that
 *   ignores them answers a new turn instead (llama-cpp-python's does: tested); a provider
 *   declared `continueFinalMessage: false` refuses such requests (NotAvailableError; graph
 *   validation refuses the nodes earlier) rather than answer a different question.
 * - Sampling: max_tokens, temperature and top_p always (OpenAI's fields, resolved from
 *   Skein's defaults so a node behaves as it does locally); seed, stop, penalties and
 *   logit_bias when set; top_k and repetition_penalty, which are vLLM/SGLang extensions,
 *   only when the node sets them.
 * - compress runs HERE, on the local engine (`compressor`), before the request leaves:
 *   the user turn is shortened and its stage event reports tokens before and after.
 *   Stages that shape the forward pass cannot cross an HTTP API and are refused
 *   (StageUnavailableError; graph validation refuses them earlier).
 * - Failures are ProviderError naming the provider, the node and the HTTP status. A 429,
 *   a 5xx, a refused or lost connection and a timeout are retried with exponential
 *   backoff and full jitter (Retry-After honoured) while nothing has been streamed yet;
 *   other 4xx are not retried; once a token has reached the node a failure is final (a
 *   retry would stream the answer twice).
 * - At most `maxConcurrency` requests are in flight per provider (over every run of the
 *   process); a cancelled request waiting for a slot leaves the queue.
 *
 * @example
 * const remote = new OpenAiEngine({ name: 'big', spec: { type: 'openai', baseUrl: 'http://127.0.0.1:8000/v1', model: 'm' } });
 * remote.generate({ messages: [{ role: 'user', content: 'Hi' }] }).subscribe(console.log);
 */
import { createParser } from 'eventsource-parser';
import { Observable } from 'rxjs';
import { UNKNOWN_TOKEN_ID, type ChatMessage, type CompressedText, type Engine, type EngineStats, type FinishReason, type GenerateEvent, type GenerateRequest, type GenerationUsage } from '../../core/engine.js';
import { BadRequestError, CancelledError, NotAvailableError, ProviderError, ProviderKeyMissingError, StageUnavailableError } from '../../core/errors.js';
import type { ProviderSpec } from '../../core/graph-schema.js';
import { resolveSampling, type SamplingParams } from '../../core/sampling.js';
import { forwardStages, type StageName, type Stages } from '../../core/stages.js';
import { Limiter } from './limiter.js';

/** Provider settings a graph may leave out, each with why. */
export const providerDefaults = {
  timeoutMs: 60_000, // a minute without a byte: a busy server still sends its first chunk well within it
  maxConcurrency: 16, // enough for an SoT fan-out; servers batch what arrives together
  retries: 2, // three attempts: rides out a restart or a burst of 429s without hiding an outage
} as const;

/** Backoff before retry n (0-based): full jitter over min(cap, base·2ⁿ) (AWS's "exponential backoff and jitter"). */
const BACKOFF_BASE_MS = 200;
const BACKOFF_CAP_MS = 5_000;
/** Largest error body read to explain a failure. */
const MAX_ERROR_BODY = 4096;

export function backoffMs(attempt: number, retryAfterMs?: number, random: () => number = Math.random): number {
  if (retryAfterMs !== undefined && retryAfterMs >= 0) return Math.min(retryAfterMs, BACKOFF_CAP_MS * 6);
  return Math.floor(random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt));
}

export interface OpenAiEngineOptions {
  /** The provider's name in the graph (named in every error). */
  name: string;
  spec: ProviderSpec;
  /** The local engine that runs compress before a request leaves; without it compress is refused. */
  compressor?: Engine;
  /** Where the key is read from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Backoff randomness (tests pin it). */
  random?: () => number;
}

/** One attempt's failure, with whether it may be retried. */
class AttemptError extends Error {
  constructor(
    readonly error: ProviderError,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(error.message);
  }
}

interface StreamState {
  text: string;
  deltas: number;
  finish?: string;
  usage?: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } };
  tFirst: number;
}

export class OpenAiEngine implements Engine {
  readonly modelName: string;
  readonly supportsOutput = false;
  readonly provider: string;
  private readonly url: string;
  private readonly key?: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly continuesFinalMessage: boolean;
  private readonly limiter: Limiter;
  private readonly compressor?: Engine;
  private readonly random: () => number;
  private closed = false;
  private readonly inFlight = new Set<AbortController>();

  constructor(options: OpenAiEngineOptions) {
    const { name, spec } = options;
    if (spec.type !== 'openai') throw new BadRequestError(`providers.${name}.type`, `unknown provider type ${JSON.stringify(spec.type)} (known: openai)`);
    this.provider = name;
    this.modelName = spec.model;
    this.url = `${spec.baseUrl.replace(/\/+$/, '')}/chat/completions`;
    if (spec.apiKeyEnv !== undefined) {
      const key = (options.env ?? process.env)[spec.apiKeyEnv];
      if (!key) throw new ProviderKeyMissingError(name, spec.apiKeyEnv);
      this.key = key;
    }
    this.timeoutMs = spec.timeoutMs ?? providerDefaults.timeoutMs;
    this.retries = spec.retries ?? providerDefaults.retries;
    this.continuesFinalMessage = spec.continueFinalMessage ?? true;
    this.limiter = new Limiter(spec.maxConcurrency ?? providerDefaults.maxConcurrency);
    this.compressor = options.compressor;
    this.random = options.random ?? Math.random;
  }

  checkStage(name: StageName): StageUnavailableError | undefined {
    if (forwardStages.includes(name)) {
      return new StageUnavailableError(name, `${this.modelName} on provider ${this.provider}`, 'it changes the forward pass, which the remote server runs behind an API that cannot shape it', 'run the node locally');
    }
    if (name === 'compress' && !this.compressor?.compressText) {
      return new StageUnavailableError(name, `${this.modelName} on provider ${this.provider}`, 'no local model to compress with', 'run it where a local engine is loaded');
    }
    return undefined;
  }

  generate(request: GenerateRequest): Observable<GenerateEvent> {
    return new Observable<GenerateEvent>((subscriber) => {
      const abort = new AbortController();
      this.inFlight.add(abort);
      const emit = (e: GenerateEvent) => subscriber.next(e);
      this.run(request, abort.signal, emit).then(
        () => subscriber.complete(),
        (err: unknown) => {
          if (!abort.signal.aborted) subscriber.error(err);
        },
      );
      return () => {
        this.inFlight.delete(abort);
        abort.abort();
      };
    });
  }

  tokenize(): number[] {
    throw new NotAvailableError('tokenize', `provider ${this.provider} streams text; its tokenizer is on the server`);
  }

  detokenize(): string {
    throw new NotAvailableError('detokenize', `provider ${this.provider} streams text; its tokenizer is on the server`);
  }

  renderChat(): string {
    throw new NotAvailableError('renderChat', `provider ${this.provider} renders its chat template on the server`);
  }

  stats(): EngineStats {
    return {
      backend: `remote:${this.provider}`,
      model: this.modelName,
      kvBlocksTotal: 0,
      kvBlocksUsed: 0,
      kvBlocksShared: 0,
      kvBlocksCached: 0,
      kvTensors: 0,
      queueDepth: this.limiter.waiting,
      runningSequences: this.limiter.running,
    };
  }

  /** Aborts every request in flight; the local compressor is not this engine's to close. */
  async close(): Promise<void> {
    this.closed = true;
    for (const abort of this.inFlight) abort.abort();
    this.inFlight.clear();
  }

  private fail(request: GenerateRequest, reason: string, status?: number): ProviderError {
    return new ProviderError({ provider: this.provider, node: request.node, status, reason });
  }

  private async run(request: GenerateRequest, signal: AbortSignal, emit: (e: GenerateEvent) => void): Promise<void> {
    if (this.closed) throw new NotAvailableError('engine', `provider ${this.provider} is closed`);
    for (const [stage, options] of Object.entries(request.stages ?? {})) {
      const refused = options === undefined ? undefined : this.checkStage(stage as StageName);
      if (refused) throw refused;
    }
    if (request.output !== undefined) throw new NotAvailableError('structured output', `provider ${this.provider} does not run Skein's constrained decoding`);
    if (request.ids !== undefined) throw new NotAvailableError('token-id prompts', `provider ${this.provider} takes text`);
    if (request.assistantPrefix && !this.continuesFinalMessage) {
      throw new NotAvailableError('assistantPrefix', `provider ${this.provider} declares continueFinalMessage: false; its server would answer a new turn instead of continuing the prefix`);
    }
    if (request.messages === undefined) {
      throw new NotAvailableError('raw-text prompts', `provider ${this.provider} is called through chat completions; send chat messages (chat: true)`);
    }
    const t0 = performance.now();
    let messages = request.messages;
    let compressed: { result: CompressedText; messages: ChatMessage[] } | undefined;
    if (request.stages?.compress) {
      compressed = await this.compressLocally(messages, request.stages.compress, request.owner, signal);
      messages = compressed.messages;
      emit({
        type: 'stage',
        stage: 'compress',
        decided: { ...compressed.result.decided, where: 'local', provider: this.provider },
        figures: { tokensIn: compressed.result.from, tokensOut: compressed.result.to, wallMs: compressed.result.wallMs },
      });
    }
    const body = JSON.stringify(this.body(messages, request));
    const release = await this.limiter.acquire(signal);
    try {
      const state: StreamState = { text: '', deltas: 0, tFirst: 0 };
      for (let attempt = 0; ; attempt++) {
        try {
          await this.attempt(request, body, signal, state, emit);
          break;
        } catch (err) {
          if (signal.aborted) throw new CancelledError(`request to provider ${this.provider}`);
          if (!(err instanceof AttemptError)) throw err;
          if (!err.retryable || attempt >= this.retries || state.deltas > 0) throw err.error;
          await sleep(backoffMs(attempt, err.retryAfterMs, this.random), signal);
        }
      }
      emit(this.done(state, t0, compressed?.result));
    } finally {
      release();
    }
  }

  /** The last user turn compressed by the local engine (other turns are sent as they are). */
  private async compressLocally(messages: ChatMessage[], options: NonNullable<Stages['compress']>, owner: string | undefined, signal: AbortSignal) {
    const at = messages.map((m) => m.role).lastIndexOf('user');
    if (at < 0) throw new BadRequestError('stages.compress', 'needs a user message to compress');
    const result = await new Promise<CompressedText>((resolve, reject) => {
      const onAbort = () => (sub.unsubscribe(), reject(new CancelledError('compress')));
      const sub = this.compressor!.compressText!(messages[at]!.content, options, owner).subscribe({
        next: (r) => (signal.removeEventListener('abort', onAbort), resolve(r)),
        error: (err: unknown) => (signal.removeEventListener('abort', onAbort), reject(err)),
      });
      signal.addEventListener('abort', onAbort, { once: true });
    });
    return { result, messages: messages.map((m, i) => (i === at ? { ...m, content: result.text } : m)) };
  }

  private body(messages: ChatMessage[], request: GenerateRequest): Record<string, unknown> {
    const given = request.sampling ?? {};
    const s: SamplingParams = resolveSampling(given);
    const prefix = request.assistantPrefix;
    return {
      model: this.modelName,
      messages: prefix ? [...messages, { role: 'assistant', content: prefix }] : messages,
      ...(prefix ? { continue_final_message: true, add_generation_prompt: false } : {}),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: s.maxTokens,
      temperature: s.temperature,
      top_p: s.topP,
      ...(given.seed !== undefined ? { seed: s.seed } : {}),
      ...(s.stop.length ? { stop: s.stop } : {}),
      ...(s.frequencyPenalty !== 0 ? { frequency_penalty: s.frequencyPenalty } : {}),
      ...(s.presencePenalty !== 0 ? { presence_penalty: s.presencePenalty } : {}),
      ...(Object.keys(s.logitBias).length ? { logit_bias: s.logitBias } : {}),
      ...(given.topK !== undefined ? { top_k: s.topK } : {}),
      ...(given.repetitionPenalty !== undefined ? { repetition_penalty: s.repetitionPenalty } : {}),
    };
  }

  /** One HTTP request: its response streamed into `state` and `emit`; an AttemptError says whether to retry. */
  private async attempt(request: GenerateRequest, body: string, signal: AbortSignal, state: StreamState, emit: (e: GenerateEvent) => void): Promise<void> {
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    // The timeout counts silence, not length: it restarts on every chunk, so a long answer streams on.
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => ((timedOut = true), attempt.abort()), this.timeoutMs);
    };
    const lost = (what: string, retryable: boolean) =>
      new AttemptError(this.fail(request, timedOut ? `no answer for ${this.timeoutMs} ms ${what}` : `connection lost ${what}`), retryable);
    arm();
    try {
      let res: Response;
      try {
        res = await fetch(this.url, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream', ...(this.key ? { Authorization: `Bearer ${this.key}` } : {}) },
          body,
          signal: attempt.signal,
        });
      } catch (err) {
        if (signal.aborted) throw err;
        if (timedOut) throw lost('(waiting for the response)', true);
        const cause = (err as { cause?: { code?: string; message?: string } }).cause;
        throw new AttemptError(this.fail(request, `cannot reach ${this.url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`), true);
      }
      if (!res.ok) {
        const detail = await errorDetail(res);
        const retryable = res.status === 429 || res.status >= 500;
        throw new AttemptError(this.fail(request, detail, res.status), retryable, retryAfterMs(res.headers.get('retry-after')));
      }
      const type = res.headers.get('content-type') ?? '';
      if (!type.startsWith('text/event-stream')) {
        await res.body?.cancel();
        throw new AttemptError(this.fail(request, `answered ${type || 'no content type'} instead of an event stream`, res.status), false);
      }
      let ended = false;
      let bad: ProviderError | undefined;
      const parser = createParser({
        onEvent: (message) => {
          if (ended || bad) return;
          if (message.data === '[DONE]') return void (ended = true);
          let chunk: ChatChunk;
          try {
            chunk = JSON.parse(message.data) as ChatChunk;
          } catch {
            bad = this.fail(request, `sent an event that is not JSON: ${message.data.slice(0, 80)}`, res.status);
            return;
          }
          if (chunk.error) {
            bad = this.fail(request, `error in the stream: ${chunk.error.message ?? JSON.stringify(chunk.error).slice(0, 200)}`, res.status);
            return;
          }
          if (chunk.usage) state.usage = chunk.usage;
          const choice = chunk.choices?.[0];
          if (!chunk.usage && !Array.isArray(chunk.choices)) {
            bad = this.fail(request, `sent a chunk that is not a chat.completion.chunk: ${message.data.slice(0, 80)}`, res.status);
            return;
          }
          const text = choice?.delta?.content;
          if (typeof text === 'string' && text.length > 0) {
            if (state.tFirst === 0) state.tFirst = performance.now();
            state.deltas++;
            state.text += text;
            emit({ type: 'token', id: UNKNOWN_TOKEN_ID, text });
          }
          if (choice?.finish_reason) state.finish = choice.finish_reason;
        },
      });
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          arm();
          parser.feed(value);
          if (bad) throw new AttemptError(bad, false);
          if (ended) break;
        }
      } catch (err) {
        if (err instanceof AttemptError || signal.aborted) throw err;
        throw lost(`after ${state.deltas} streamed chunk(s)`, true);
      } finally {
        reader.cancel().catch(() => {});
      }
      // A stream that stops without [DONE] or a finish reason was cut, not finished.
      if (!ended && state.finish === undefined) throw lost(`after ${state.deltas} streamed chunk(s), before the end of the stream`, true);
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    }
  }

  private done(state: StreamState, t0: number, compressed?: CompressedText): GenerateEvent {
    const t1 = performance.now();
    const u = state.usage;
    // Without a usage block (a server that ignores include_usage) the streamed chunks are the best count.
    const usage: GenerationUsage = {
      promptTokens: u?.prompt_tokens ?? 0,
      completionTokens: u?.completion_tokens ?? state.deltas,
      cachedPromptTokens: u?.prompt_tokens_details?.cached_tokens ?? 0,
    };
    const ttftMs = (state.tFirst || t1) - t0;
    const decodeMs = t1 - (state.tFirst || t1);
    const reason: FinishReason = state.finish === 'length' ? 'length' : 'stop';
    return {
      type: 'done',
      reason,
      ids: [],
      text: state.text,
      usage,
      metrics: {
        ttftMs,
        totalMs: t1 - t0,
        decodeTokensPerSec: decodeMs > 0 ? ((usage.completionTokens - 1) * 1000) / decodeMs : 0,
        ...(compressed ? { compressedFrom: compressed.from, compressedTo: compressed.to, stages: { compress: { from: compressed.from, to: compressed.to } } } : {}),
      },
    };
  }
}

interface ChatChunk {
  choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: StreamState['usage'];
  error?: { message?: string };
}

/** The server's own words for a failed request: OpenAI's `{error: {message}}`, or the start of the body. */
async function errorDetail(res: Response): Promise<string> {
  let text = '';
  try {
    text = (await res.text()).slice(0, MAX_ERROR_BODY);
  } catch {
    return res.statusText || 'no body';
  }
  try {
    const json = JSON.parse(text) as { error?: { message?: string } | string; message?: string };
    const message = typeof json.error === 'string' ? json.error : (json.error?.message ?? json.message);
    if (message) return message;
  } catch {
    // Not JSON: the text itself says it.
  }
  return text.trim().slice(0, 200) || res.statusText || 'no body';
}

/** Retry-After in seconds or as an HTTP date, in ms. */
function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new CancelledError('retry'));
    const timer = setTimeout(() => (signal.removeEventListener('abort', onAbort), resolve()), ms);
    const onAbort = () => (clearTimeout(timer), reject(new CancelledError('retry')));
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
