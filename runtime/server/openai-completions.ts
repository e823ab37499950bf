/**
 * OpenAI's legacy `POST /v1/completions` on the shared engine: a text prompt (or token
 * ids), one or several of them, each continued `n` times with the chat route's sampling
 * fields, streaming (`text_completion` chunks ending with `[DONE]`) or not. `logprobs: k`
 * gives the legacy shape (tokens, token_logprobs, top_logprobs as token → logprob maps,
 * text_offset). Refused with a 400 naming the field: `echo`, `suffix`, `best_of` ≠ `n`.
 *
 * @example
 * app.route('/v1', completionsRoute({ engine, store, metrics, modelMatches }));
 * // then: new OpenAI({ baseURL }).completions.create({ model, prompt: 'Once upon a time' })
 */
import { Hono } from 'hono';
import { BadRequestError } from '../../core/errors.js';
import { completionRequestSchema } from '../../core/requests.js';
import type { GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { countDone, choiceEvents, collectChoices, finishReason, samplingOf, startChoices, streamChoices, usageOf, type Done, type TokenEvent } from './openai-choices.js';
import { readOpenAiBody } from './openai-request.js';
import { openAiErrorResponse, type ErrorParams } from './openai-errors.js';
import type { ChatDeps } from './openai.js';

/** OpenAI's default for this endpoint (chat's is "until the context ends"). */
const DEFAULT_MAX_TOKENS = 16;

/** The prompts of a checked request: texts or token-id lists, one per entry. */
function promptsOf(prompt: unknown): Array<{ prompt: string } | { ids: number[] }> {
  if (typeof prompt === 'string') return [{ prompt }];
  const list = prompt as unknown[];
  if (list.every((p) => typeof p === 'number')) return [{ ids: list as number[] }];
  return list.map((p) => (typeof p === 'string' ? { prompt: p } : { ids: p as number[] }));
}

/** Legacy logprobs of some tokens; `offset` is where the first one starts in its choice's text. */
function legacyLogprobs(tokens: TokenEvent[], offset: number): object {
  const scored = tokens.filter((t) => t.logprobs);
  const offsets: number[] = [];
  let at = offset;
  for (const t of scored) {
    offsets.push(at);
    at += t.text.length;
  }
  return {
    tokens: scored.map((t) => t.logprobs!.token),
    token_logprobs: scored.map((t) => t.logprobs!.logprob),
    top_logprobs: scored.map((t) => Object.fromEntries(t.logprobs!.top.map((a) => [a.token, a.logprob]))),
    text_offset: offsets,
  };
}

export function completionsRoute(deps: ChatDeps): Hono {
  const { engine, store, metrics } = deps;
  const app = new Hono();
  let counter = 0;
  const params: ErrorParams = { prompt: 'prompt', maxTokens: 'max_tokens' };
  app.onError((err, c) => openAiErrorResponse(c, err, params));

  app.post('/completions', async (c) => {
    const { body, model } = await readOpenAiBody(c, completionRequestSchema, deps);
    const n = body.n ?? 1;
    if (body.best_of !== undefined && body.best_of !== n) throw new BadRequestError('best_of', 'choices are not ranked server-side: best_of must equal n');
    const sampling = { ...samplingOf(body), maxTokens: body.max_tokens ?? DEFAULT_MAX_TOKENS };
    const requests: GenerateRequest[] = promptsOf(body.prompt).map((p) => ({
      ...p,
      sampling,
      ...(body.logprobs !== undefined ? { logprobs: body.logprobs } : {}),
      ...(body.max_tokens !== undefined ? { maxTokensMustFit: true } : {}),
    }));
    const count = requests.length * n;
    const stream = body.stream === true;
    const id = `cmpl-${Date.now().toString(36)}${(counter++).toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const release = store.acquireSlot();
    metrics.textCompletion(stream);
    const events$ = choiceEvents(engine, requests.map((r) => ({ ...r, owner: id })), n);

    if (!stream) {
      try {
        const perChoice = await collectChoices(events$, count, c.req.raw.signal);
        const dones = perChoice.map((events) => events.at(-1) as Done);
        for (const done of dones) countDone(metrics, done);
        return c.json({
          id,
          object: 'text_completion',
          created,
          model: engine.modelName,
          choices: perChoice.map((events, index) => ({
            index,
            text: dones[index]!.text,
            logprobs: body.logprobs !== undefined ? legacyLogprobs(events.filter((e): e is TokenEvent => e.type === 'token'), 0) : null,
            finish_reason: finishReason(dones[index]!.reason),
          })),
          usage: usageOf(dones, n),
        });
      } finally {
        release();
      }
    }

    const run = await startChoices(events$, count, release);
    const chunk = (index: number, text: string, finish: string | null, logprobs: object | null) => ({
      id,
      object: 'text_completion',
      created,
      model: engine.modelName,
      choices: [{ index, text, logprobs, finish_reason: finish }],
    });
    const written = new Array<number>(count).fill(0);
    const dones: Done[] = [];
    return streamChoices(
      c,
      run,
      {
        onEvent: ({ index, event }: { index: number; event: GenerateEvent }) => {
          if (event.type === 'token') {
            if (!event.text && !event.logprobs) return [];
            const logprobs = body.logprobs !== undefined ? legacyLogprobs([event], written[index]!) : null;
            written[index]! += event.text.length;
            return [chunk(index, event.text, null, logprobs)];
          }
          if (event.type !== 'done') return [];
          countDone(metrics, event);
          dones[index] = event;
          return [chunk(index, '', finishReason(event.reason), null)];
        },
        onEnd: () =>
          body.stream_options?.include_usage === true ? [{ id, object: 'text_completion', created, model: engine.modelName, choices: [], usage: usageOf(dones, n) }] : [],
      },
      params,
      release,
    );
  });

  return app;
}
