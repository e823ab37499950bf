// logprobs / top_logprobs, n > 1 and the context-length rule on chat completions, through
// the official `openai` client against the server on skein-mini. The engine is wrapped to
// record each generation's events, so KV sharing between choices is checked where it
// happens (the scheduler's kvShare stage), not inferred from timings.
import OpenAI from 'openai';
import { tap } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, GenerateEvent } from '../core/engine.js';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { startServer, type RunningServer } from '../runtime/server/index.js';

let server: RunningServer;
let engine: EngineFront;
let client: OpenAI;
let base: string;
/** Every generation's events, in submission order. */
const generations: GenerateEvent[][] = [];

const messages = [{ role: 'user' as const, content: 'Tell me a short story about a lighthouse keeper who finds a bottle on the beach one morning.' }];

beforeAll(async () => {
  engine = await createEngine({ model: 'skein-mini', thread: 'main' });
  const recording = new Proxy(engine, {
    get(target, key, receiver) {
      if (key !== 'generate') return Reflect.get(target, key, receiver);
      return (request: Parameters<Engine['generate']>[0]) => {
        const events: GenerateEvent[] = [];
        generations.push(events);
        return target.generate(request).pipe(tap((e) => events.push(e)));
      };
    },
  });
  server = await startServer({ engine: recording, graphs: [], port: 0, build: false, print: () => {} });
  base = new URL('/v1', server.url).href;
  client = new OpenAI({ baseURL: base, apiKey: 'none', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
  await engine?.close();
});

const utf8 = (s: string) => [...new TextEncoder().encode(s)];

describe('chat completions: logprobs, n, context length', () => {
  it('logprobs: one entry per content token, greedy picks the top alternative, bytes add up to the text', async () => {
    const res = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 8, logprobs: true, top_logprobs: 3 });
    const choice = res.choices[0]!;
    const content = choice.logprobs!.content!;
    expect(content.length).toBe(res.usage!.completion_tokens - (choice.finish_reason === 'stop' ? 1 : 0));
    for (const entry of content) {
      expect(entry.top_logprobs).toHaveLength(3);
      expect(entry.top_logprobs[0]!.token).toBe(entry.token);
      expect(entry.top_logprobs[0]!.logprob).toBe(entry.logprob);
      expect(entry.logprob).toBeLessThanOrEqual(0);
    }
    expect(content.flatMap((e) => e.bytes!)).toEqual(utf8(choice.message.content!));

    // Streamed: the same entries, one chunk per token. The prompt's KV now comes from the
    // prefix cache, computed in other chunks, so the figures agree to float32 rounding.
    const stream = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 8, logprobs: true, top_logprobs: 3, stream: true });
    const streamed: OpenAI.ChatCompletionTokenLogprob[] = [];
    for await (const chunk of stream) for (const c of chunk.choices) streamed.push(...(c.logprobs?.content ?? []));
    expect(streamed.map((e) => [e.token, e.bytes, e.top_logprobs.map((t) => t.token)])).toEqual(content.map((e) => [e.token, e.bytes, e.top_logprobs.map((t) => t.token)]));
    streamed.forEach((e, i) => expect(e.logprob).toBeCloseTo(content[i]!.logprob, 4));

    // Not asked for: none.
    const plain = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 4 });
    expect(plain.choices[0]!.logprobs).toBeNull();
  });

  it('n > 1: choice i is the seed + i answer, the prompt is counted once and its KV is shared', async () => {
    const sampling = { temperature: 1, top_p: 0.95, max_tokens: 10, seed: 5 };
    const before = generations.length;
    const res = await client.chat.completions.create({ model: 'skein-mini', messages, n: 3, ...sampling });
    const batch = generations.slice(before);
    expect(res.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const singles = [];
    for (let i = 0; i < 3; i++) singles.push(await client.chat.completions.create({ model: 'skein-mini', messages, ...sampling, seed: 5 + i }));
    expect(res.choices.map((c) => c.message.content)).toEqual(singles.map((s) => s.choices[0]!.message.content));
    expect(new Set(res.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);
    expect(res.usage!.prompt_tokens).toBe(singles[0]!.usage!.prompt_tokens);
    expect(res.usage!.completion_tokens).toBe(singles.reduce((n, s) => n + s.usage!.completion_tokens, 0));
    // The three ran together; two of them adopted the prompt blocks the first computed.
    expect(batch).toHaveLength(3);
    const shared = batch.filter((events) => events.some((e) => e.type === 'stage' && e.stage === 'kvShare'));
    expect(shared.length).toBeGreaterThanOrEqual(2);
  });

  it('n > 1 streamed: each choice has its own deltas and finish reason', async () => {
    const stream = await client.chat.completions.create({ model: 'skein-mini', messages, n: 2, max_tokens: 6, temperature: 1, seed: 9, stream: true, stream_options: { include_usage: true } });
    const text = ['', ''];
    const finishes: string[][] = [[], []];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text[c.index] += c.delta.content ?? '';
        if (c.finish_reason) finishes[c.index]!.push(c.finish_reason);
      }
    }
    const once = await client.chat.completions.create({ model: 'skein-mini', messages, n: 2, max_tokens: 6, temperature: 1, seed: 9 });
    expect(text).toEqual(once.choices.map((c) => c.message.content));
    expect(finishes.map((f) => f.length)).toEqual([1, 1]);
    expect(usage).toEqual(once.usage);
  });

  it('a prompt plus max_tokens past the context is a 400 context_length_exceeded before anything runs, streamed or not', async () => {
    const post = (body: Record<string, unknown>) =>
      fetch(`${base}/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'skein-mini', messages, ...body }) });
    const before = generations.length;
    for (const body of [{ max_tokens: 2040 }, { max_completion_tokens: 2040, stream: true }]) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/application\/json/);
      const { error } = await res.json();
      expect(error).toMatchObject({ type: 'invalid_request_error', code: 'context_length_exceeded', param: 'max_tokens' in body ? 'max_tokens' : 'max_completion_tokens' });
      expect(error.message).toMatch(/the model's context is 2048/);
    }
    const long = await post({ messages: [{ role: 'user', content: 'word '.repeat(3000) }], stream: true });
    expect(long.status).toBe(400);
    expect((await long.json()).error).toMatchObject({ code: 'context_length_exceeded', param: 'messages' });
    // None of them produced a token.
    expect(generations.slice(before).every((events) => events.every((e) => e.type !== 'token'))).toBe(true);
    // Without max_tokens the answer may run to the end of the context: no error.
    const ok = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 2 });
    expect(ok.choices[0]!.finish_reason).toBe('length');
  });
});
