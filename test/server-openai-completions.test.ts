// The rest of the OpenAI surface through the official `openai` client on skein-mini:
// legacy text completions (text or token-id prompts, several prompts × n, streaming,
// logprobs), GET /v1/models/{id}, and /v1/embeddings from the model's pooled hidden states.
import OpenAI from 'openai';
import { lastValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { startServer, type RunningServer } from '../runtime/server/index.js';

let server: RunningServer;
let engine: EngineFront;
let client: OpenAI;
let base: string;

beforeAll(async () => {
  engine = await createEngine({ model: 'skein-mini', thread: 'main' });
  server = await startServer({ engine, graphs: [], port: 0, build: false, print: () => {} });
  base = new URL('/v1', server.url).href;
  client = new OpenAI({ baseURL: base, apiKey: 'none', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.close();
});

const direct = async (prompt: string, maxTokens: number) => {
  const done = await lastValueFrom(engine.generate({ prompt, sampling: { maxTokens } }));
  if (done.type !== 'done') throw new Error('no done');
  return done;
};

describe('POST /v1/completions', () => {
  it('continues a text prompt (16 tokens by default), as the engine does', async () => {
    const res = await client.completions.create({ model: 'skein-mini', prompt: 'Once upon a time' });
    expect(res.object).toBe('text_completion');
    const expected = await direct('Once upon a time', 16);
    expect(res.choices).toEqual([{ index: 0, text: expected.text, logprobs: null, finish_reason: expected.reason === 'length' ? 'length' : 'stop' }]);
    expect(res.usage).toEqual({
      prompt_tokens: expected.usage.promptTokens,
      completion_tokens: expected.usage.completionTokens,
      total_tokens: expected.usage.promptTokens + expected.usage.completionTokens,
      // The direct call ran second, so its prompt came from the prefix cache; the server's did not.
      prompt_tokens_details: { cached_tokens: 0 },
    });
  });

  it('takes several prompts, text or token ids, each with n choices in order', async () => {
    const prompts = ['The cat', 'A dog'];
    const res = await client.completions.create({ model: 'skein-mini', prompt: prompts, n: 2, max_tokens: 5, temperature: 1, seed: 3 });
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    const alone = await client.completions.create({ model: 'skein-mini', prompt: 'A dog', max_tokens: 5, temperature: 1, seed: 4 });
    expect(res.choices[3]!.text).toBe(alone.choices[0]!.text);
    const ids = engine.tokenize('The cat');
    const byIds = await client.completions.create({ model: 'skein-mini', prompt: ids, max_tokens: 5, temperature: 1, seed: 3 });
    expect(byIds.choices[0]!.text).toBe(res.choices[0]!.text);
    // Each prompt counted once, every choice's completion.
    expect(res.usage!.completion_tokens).toBe(20);
  });

  it('streams text chunks with legacy logprobs that add up to the answer', async () => {
    const once = await client.completions.create({ model: 'skein-mini', prompt: 'Once upon a time', max_tokens: 8, logprobs: 2 });
    const lp = once.choices[0]!.logprobs!;
    expect(lp.tokens!.join('')).toBe(once.choices[0]!.text);
    expect(lp.token_logprobs!.every((x) => x <= 0)).toBe(true);
    lp.top_logprobs!.forEach((top, i) => expect(Object.keys(top)).toContain(lp.tokens![i]));
    expect(lp.text_offset![0]).toBe(0);
    const stream = await client.completions.create({ model: 'skein-mini', prompt: 'Once upon a time', max_tokens: 8, logprobs: 2, stream: true });
    let text = '';
    const tokens: string[] = [];
    const finishes: string[] = [];
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text += c.text;
        tokens.push(...(c.logprobs?.tokens ?? []));
        if (c.finish_reason) finishes.push(c.finish_reason);
      }
    }
    expect(text).toBe(once.choices[0]!.text);
    expect(tokens).toEqual(lp.tokens);
    expect(finishes).toEqual([once.choices[0]!.finish_reason]);
  });

  it('refuses what it does not serve with a 400 naming the field, and context overflow with context_length_exceeded', async () => {
    const post = (body: Record<string, unknown>) =>
      fetch(`${base}/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'skein-mini', prompt: 'Hi', ...body }) });
    for (const [body, param, code] of [
      [{ echo: true }, 'echo', 'bad_request'],
      [{ suffix: 'end' }, 'suffix', 'bad_request'],
      [{ best_of: 3 }, 'best_of', 'bad_request'],
      [{ prompt: [] }, 'prompt', 'bad_request'],
      [{ max_tokens: 2048, stream: true }, 'max_tokens', 'context_length_exceeded'],
      [{ model: 'gpt-4' }, null, 'not_found'],
    ] as const) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(code === 'not_found' ? 404 : 400);
      expect((await res.json()).error, JSON.stringify(body)).toMatchObject({ param, code });
    }
  });
});

describe('models and embeddings', () => {
  it('GET /v1/models/{id} answers for the served model and 404s in OpenAI shape otherwise', async () => {
    const model = await client.models.retrieve('skein-mini');
    expect(model).toMatchObject({ id: 'skein-mini', object: 'model', owned_by: 'skein' });
    await expect(client.models.retrieve('gpt-4')).rejects.toMatchObject({ status: 404, error: { type: 'not_found_error', code: 'not_found' } });
  });

  it('POST /v1/embeddings: the engine\'s vectors, as floats or base64, for text and token ids, with usage', async () => {
    const texts = ['The cat sat on the mat.', 'Stock prices fell sharply today.'];
    const ids = engine.tokenize('hello there');
    const direct = await lastValueFrom(engine.embed({ input: [...texts, ids] }));
    // The openai client asks for base64 by default and decodes it into numbers.
    const res = await client.embeddings.create({ model: 'skein-mini', input: texts });
    expect(res).toMatchObject({ object: 'list', model: 'skein-mini', usage: { prompt_tokens: direct.tokens[0]! + direct.tokens[1]!, total_tokens: direct.tokens[0]! + direct.tokens[1]! } });
    expect(res.data.map((d) => d.index)).toEqual([0, 1]);
    expect(res.data.map((d) => Float32Array.from(d.embedding))).toEqual(direct.vectors.slice(0, 2));
    const floats = await fetch(`${base}/embeddings`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ input: ids, encoding_format: 'float', dimensions: direct.vectors[0]!.length }),
    }).then((r) => r.json());
    expect(floats.data).toHaveLength(1);
    expect(Float32Array.from(floats.data[0].embedding)).toEqual(direct.vectors[2]);
    expect(floats.usage.prompt_tokens).toBe(ids.length);
    const lists = await client.embeddings.create({ model: 'skein-mini', input: [ids, ids.slice(0, 1)] });
    expect(lists.data).toHaveLength(2);
    expect(lists.usage.prompt_tokens).toBe(ids.length + 1);
  });

  it('POST /v1/embeddings refuses what it cannot serve with a 400 naming the field', async () => {
    const post = (body: Record<string, unknown>) =>
      fetch(`${base}/embeddings`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'skein-mini', ...body }) });
    for (const [body, param] of [
      [{ input: 'x', dimensions: 64 }, 'dimensions'],
      [{ input: 'x', encoding_format: 'int8' }, 'encoding_format'],
      [{ input: [] }, 'input'],
      [{ input: ['a', ''] }, 'input[1]'],
      [{ input: Array.from({ length: 513 }, () => 'x') }, 'input'],
      [{ input: ['word '.repeat(3000)] }, 'input[0]'],
      [{ input: Array.from({ length: 20 }, () => 'word '.repeat(1000)) }, 'input'],
      [{ input: [[1, 99_999_999]] }, 'input[0]'],
      [{ input: 'x', truncate: true }, 'truncate'],
    ] as const) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      const { error } = await res.json();
      expect(error, JSON.stringify(body).slice(0, 80)).toMatchObject({ type: 'invalid_request_error', param });
    }
  });
});
