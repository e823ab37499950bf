/**
 * What the OpenAI-compatible routes (chat and legacy completions) share: `n` choices run
 * as `n` generations of one request, batched by the scheduler (the same prompt, so all
 * but the first adopt its KV through the prefix tree instead of recomputing it), with
 * their events merged and tagged by choice index; refusals at submit (a prompt past the
 * context, a schema the grammar refuses) surfacing before any stream starts; a streamed
 * answer written as SSE data lines ending with `[DONE]`, errors after the headers in
 * OpenAI's shape inside the stream; and usage added up as OpenAI does (the prompt once,
 * every choice's completion).
 *
 * @example
 * const events$ = choiceEvents(engine, [request, { ...request, sampling: { ...s, seed: 1 } }]);
 * const perChoice = await collectChoices(events$, 2, c.req.raw.signal);
 */
import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { filter, firstValueFrom, fromEvent, lastValueFrom, map, merge, ReplaySubject, scan, takeUntil, toArray, type Observable } from 'rxjs';
import { CancelledError } from '../../core/errors.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { Engine, FinishReason, GenerateEvent, GenerateRequest, TokenLogprob } from '../../core/engine.js';
import type { ServerMetrics } from './metrics.js';
import { openAiError, type ErrorParams } from './openai-errors.js';
import { orderedWrites } from './ordered.js';

export type Done = Extract<GenerateEvent, { type: 'done' }>;

/** A finished choice's tokens and time to first token, into the server's metrics. */
export function countDone(metrics: Pick<ServerMetrics, 'tokens' | 'ttft'>, done: Done): void {
  metrics.tokens(done.usage.completionTokens);
  metrics.ttft(done.metrics.ttftMs);
}
export type TokenEvent = Extract<GenerateEvent, { type: 'token' }>;

export interface IndexedEvent {
  index: number;
  event: GenerateEvent;
}

/** The sampling fields the OpenAI routes share, in OpenAI's names. */
export interface OpenAiSampling {
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string | string[];
  frequency_penalty?: number;
  presence_penalty?: number;
  logit_bias?: Record<string, number>;
  repetition_penalty?: number;
}

/** The sampling fields of a checked request, in Skein's names (limits from core/sampling.ts's schema). */
export function samplingOf(body: OpenAiSampling): Partial<SamplingParams> {
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
 * `n` generations per request, merged; each event carries its choice index (request r's
 * choice j is r·n + j). Choice j samples with seed + j, so choices differ when sampling
 * and repeat with the same seed.
 */
export function choiceEvents(engine: Engine, requests: GenerateRequest[], n: number): Observable<IndexedEvent> {
  return merge(
    ...requests.flatMap((request, r) => {
      const seed = request.sampling?.seed ?? 0;
      return Array.from({ length: n }, (_, j) =>
        engine.generate({ ...request, sampling: { ...request.sampling, seed: seed + j } }).pipe(map((event) => ({ index: r * n + j, event }))),
      );
    }),
  );
}

/** Every event of every choice, by index, once all are done; a client that leaves cancels them all. */
export async function collectChoices(events$: Observable<IndexedEvent>, n: number, signal: AbortSignal): Promise<GenerateEvent[][]> {
  const all = await lastValueFrom(events$.pipe(takeUntil(fromEvent(signal, 'abort')), toArray()));
  // The client left before the end: no answer to give, and not a server fault to log.
  if (signal.aborted) throw new CancelledError('completion (the client went away)');
  const out: GenerateEvent[][] = Array.from({ length: n }, () => []);
  for (const { index, event } of all) out[index]!.push(event);
  if (out.some((events) => events.at(-1)?.type !== 'done')) throw new Error('generation ended without done');
  return out;
}

/**
 * Starts the choices and waits until each has produced its first event, so that a request
 * refused at submit is an HTTP error before any stream starts. Later events are replayed
 * to the stream's subscriber. A refusal also releases the request's concurrency slot (`release`).
 */
export async function startChoices(events$: Observable<IndexedEvent>, n: number, release: () => void): Promise<{ events$: Observable<IndexedEvent>; cancel: () => void }> {
  const events = new ReplaySubject<IndexedEvent>();
  const sub = events$.subscribe(events);
  try {
    await firstValueFrom(
      events.pipe(
        scan((seen, e) => seen.add(e.index), new Set<number>()),
        filter((seen) => seen.size === n),
      ),
    );
  } catch (err) {
    sub.unsubscribe();
    release();
    throw err;
  }
  return { events$: events, cancel: () => sub.unsubscribe() };
}

export interface ChoiceStreamHandlers {
  /** The data objects an event becomes (none, one or several chunks). */
  onEvent(e: IndexedEvent): object[];
  /** After every choice is done: trailing chunks (usage), before `[DONE]`. */
  onEnd(): object[];
  /** The client hung up before the end (its generations are cancelled). */
  onCancel?(): void;
}

/**
 * Streams started choices as SSE `data:` lines, then `[DONE]`. An error after the headers
 * travels in the stream, as OpenAI's API does it; a client that hangs up cancels every
 * choice. `release` frees the request's concurrency slot once the stream ends.
 */
export function streamChoices(c: Context, run: { events$: Observable<IndexedEvent>; cancel: () => void }, handlers: ChoiceStreamHandlers, params: ErrorParams, release: () => void): Response {
  return streamSSE(c, async (sse) => {
    await new Promise<void>((resolve) => {
      const out = orderedWrites();
      const write = (data: object | string) => out.push(() => sse.writeSSE({ data: typeof data === 'string' ? data : JSON.stringify(data) }));
      let ended = false;
      const sub = run.events$.subscribe({
        next: (e) => handlers.onEvent(e).forEach(write),
        error: (err: unknown) => {
          ended = true;
          write({ error: openAiError(err, params).body.error });
          void out.drained().then(resolve);
        },
        complete: () => {
          ended = true;
          handlers.onEnd().forEach(write);
          write('[DONE]');
          void out.drained().then(resolve);
        },
      });
      sse.onAbort(() => {
        if (!ended) handlers.onCancel?.();
        sub.unsubscribe();
        run.cancel();
        resolve();
      });
    }).finally(release);
  });
}

/**
 * OpenAI's usage: each prompt once (its `n` choices share it), the completions of every
 * choice, and (OpenAI's and vLLM's field) the prompt tokens served from the prefix cache.
 */
export function usageOf(dones: Done[], n = dones.length) {
  const prompt = dones.reduce((sum, d, i) => (i % n === 0 ? sum + d.usage.promptTokens : sum), 0);
  const cached = dones.reduce((sum, d, i) => (i % n === 0 ? sum + (d.usage.cachedPromptTokens ?? 0) : sum), 0);
  const completion = dones.reduce((n, d) => n + d.usage.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

export const finishReason = (r: FinishReason): 'stop' | 'length' => (r === 'length' ? 'length' : 'stop');

/** A token in chat's logprobs shape (`bytes` as numbers, alternatives without their own list). */
export function chatLogprob(t: TokenLogprob & { top: TokenLogprob[] }): object {
  return { token: t.token, logprob: t.logprob, bytes: t.bytes, top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })) };
}
