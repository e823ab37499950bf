/**
 * OpenAI's `POST /v1/embeddings` on the served model (Engine.embed): each input's vector
 * is the mean of the model's final hidden states over its tokens (after the final norm),
 * L2-normalised. SmolLM2-135M-Instruct and skein-mini are chat models, not embedding
 * models: the vectors put related texts nearer than unrelated ones, but retrieval quality
 * is nowhere near a model trained for it. Served so that clients that need the route get
 * real vectors from the model they talk to; the figures are what they are.
 *
 * `input`: a string, strings, token ids or lists of them. `encoding_format`: float (JSON
 * numbers) or base64 (little-endian float32 bytes, the `openai` client's default).
 * `dimensions` only equal to the model's hidden size. The request takes one of the
 * server's concurrency slots, as completions do.
 *
 * @example
 * app.route('/v1', embeddingsRoute({ engine, store, modelMatches }));
 * // then: new OpenAI({ baseURL }).embeddings.create({ model, input: ['a', 'b'] })
 */
import { Hono } from 'hono';
import { fromEvent, lastValueFrom, takeUntil } from 'rxjs';
import { CancelledError, NotAvailableError } from '../../core/errors.js';
import { embeddingRequestSchema } from '../../core/requests.js';
import type { Engine } from '../../core/engine.js';
import { readOpenAiBody } from './openai-request.js';
import { openAiErrorResponse } from './openai-errors.js';
import type { RunStore } from './runs.js';

export interface EmbeddingsDeps {
  engine: Engine;
  store: RunStore;
  modelMatches: (name: string) => boolean;
}

/** The inputs of a checked request, one entry per vector. */
function inputsOf(input: unknown): Array<string | number[]> {
  if (typeof input === 'string') return [input];
  const list = input as unknown[];
  if (list.every((x) => typeof x === 'number')) return [list as number[]];
  return list as Array<string | number[]>;
}

/** A vector as base64 of its little-endian float32 bytes (OpenAI's encoding). */
function base64(vector: Float32Array): string {
  const bytes = new DataView(new ArrayBuffer(vector.length * 4));
  vector.forEach((x, i) => bytes.setFloat32(i * 4, x, true));
  return Buffer.from(bytes.buffer).toString('base64');
}

export function embeddingsRoute(deps: EmbeddingsDeps): Hono {
  const { engine, store } = deps;
  const app = new Hono();
  app.onError((err, c) => openAiErrorResponse(c, err));

  app.post('/embeddings', async (c) => {
    const { body, model } = await readOpenAiBody(c, embeddingRequestSchema, deps);
    if (!engine.embed) throw new NotAvailableError('embeddings', `the engine serving ${engine.modelName} cannot embed`);
    const input = inputsOf(body.input);
    const release = store.acquireSlot();
    try {
      const request = { input, owner: `embd-${Date.now().toString(36)}`, ...(body.dimensions !== undefined ? { dimensions: body.dimensions } : {}) };
      // A client that goes away drops the work: the engine stops embedding and frees what it held.
      const signal = c.req.raw.signal;
      const result = await lastValueFrom(engine.embed(request).pipe(takeUntil(fromEvent(signal, 'abort'))), { defaultValue: undefined });
      if (!result) throw new CancelledError('embeddings (the client went away)');
      const { vectors, tokens } = result;
      const encode = body.encoding_format === 'base64' ? base64 : (v: Float32Array) => Array.from(v);
      const promptTokens = tokens.reduce((n, t) => n + t, 0);
      return c.json({
        object: 'list',
        data: vectors.map((v, index) => ({ object: 'embedding', index, embedding: encode(v) })),
        model: engine.modelName,
        usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
      });
    } finally {
      release();
    }
  });
  return app;
}
