// The OpenAI-compatible endpoint, driven by the official `openai` client over a socket:
// non-streaming, streaming, usage, errors, and a client abort that cancels generation.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../runtime/server/index.js';
import type { FakeEngine } from './fakes/fake-engine.js';
import { createServerTestEngine } from './fakes/server-engine.js';

let server: RunningServer;
let engine: FakeEngine;
let client: OpenAI;
const logged: unknown[] = [];

beforeAll(async () => {
  engine = createServerTestEngine(3);
  server = await startServer({ engine, graphs: [], port: 0, token: 'sk-test', build: false, print: () => {}, log: (err) => void logged.push(err) });
  client = new OpenAI({ baseURL: new URL('/v1', server.url).href, apiKey: 'sk-test', maxRetries: 0 });
});
afterAll(async () => {
  await server?.close();
});

describe('OpenAI-compatible chat completions', () => {
  it('lists the served model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['fake-mini']);
  });

  it('answers without streaming', async () => {
    const res = await client.chat.completions.create({
      model: 'fake-mini',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Tell me about bread' },
      ],
      max_tokens: 3,
    });
    expect(res.object).toBe('chat.completion');
    expect(res.choices[0]!.message.role).toBe('assistant');
    expect(res.choices[0]!.message.content).toBe('echo: Tell me');
    expect(res.choices[0]!.finish_reason).toBe('length');
    expect(res.usage).toMatchObject({ completion_tokens: 3 });
    expect(res.usage!.total_tokens).toBe(res.usage!.prompt_tokens + 3);
    expect(engine.requests.at(-1)!.messages![0]).toEqual({ role: 'system', content: 'Be brief.' });
  });

  it('streams chunks, then the finish reason and usage', async () => {
    const stream = await client.chat.completions.create({
      model: 'fake-mini',
      messages: [{ role: 'user', content: 'a long answer about soup' }],
      max_completion_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    const finishes: Array<string | null> = [];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.delta.content ?? '';
        finishes.push(choice.finish_reason);
      }
    }
    expect(text).toBe('word0 word1 word2 word3 word4 word5');
    expect(finishes.filter(Boolean)).toEqual(['length']);
    expect(usage?.completion_tokens).toBe(6);
  });

  it('stops generating when the client aborts a stream', async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'fake-mini', messages: [{ role: 'user', content: 'a long answer' }], stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _ of stream) {
        if (++chunks === 3) controller.abort();
      }
    } catch {
      // Depending on timing the client ends the iteration or throws an abort error.
    }
    expect(chunks).toBe(3);
    const end = Date.now() + 2000;
    while (engine.live > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    expect(engine.live).toBe(0);
    expect(engine.cancelled).toBeGreaterThanOrEqual(1);
  });

  it('stops generating when a non-streaming client hangs up', async () => {
    const controller = new AbortController();
    const before = engine.cancelled;
    const pending = client.chat.completions.create({ model: 'fake-mini', messages: [{ role: 'user', content: 'a long answer' }] }, { signal: controller.signal });
    const end = Date.now() + 2000;
    while (engine.live === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    await expect(pending).rejects.toThrow();
    while (engine.live > 0 && Date.now() < end + 2000) await new Promise((r) => setTimeout(r, 5));
    expect(engine.live).toBe(0);
    expect(engine.cancelled).toBe(before + 1);
    // The abandoned request ends as a cancellation, not as a server fault in the log.
    await new Promise((r) => setTimeout(r, 50));
    expect(logged).toEqual([]);
  });

  it('maps bad requests and unknown models to typed errors', async () => {
    await expect(client.chat.completions.create({ model: 'gpt-9', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status: 404 });
    await expect(client.chat.completions.create({ model: 'fake-mini', messages: [] })).rejects.toMatchObject({ status: 400 });
    const bad = new OpenAI({ baseURL: new URL('/v1', server.url).href, apiKey: 'wrong', maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401 });
  });
});
