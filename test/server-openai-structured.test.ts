// Tools, tool_choice and response_format through the official `openai` client against
// the server on loopback, on skein-mini (the offline model: its answers are nonsense, but
// constrained decoding makes their FORM right, which is what is tested). Errors come back
// in OpenAI's shape, before any stream starts.
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { startServer, type RunningServer } from '../runtime/server/index.js';

let server: RunningServer;
let engine: EngineFront;
let client: OpenAI;
let base: string;

const weather = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Current weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['celsius', 'fahrenheit'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};
const add = {
  type: 'function' as const,
  function: {
    name: 'add',
    parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'], additionalProperties: false },
  },
};
const messages = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];

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

describe('tools and structured output over the OpenAI API', () => {
  it('tool_choice required: a tool call whose arguments fit the tool schema', async () => {
    const res = await client.chat.completions.create({ model: 'skein-mini', messages, tools: [weather, add], tool_choice: 'required', max_tokens: 160 });
    const choice = res.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const call = choice.message.tool_calls![0]!;
    expect(call.type).toBe('function');
    if (call.type !== 'function') throw new Error('not a function call');
    expect(call.id).toMatch(/^call_[0-9a-z]+$/);
    const tool = [weather, add].find((t) => t.function.name === call.function.name)!;
    expect(tool).toBeDefined();
    expect(new Ajv().validate(tool.function.parameters, JSON.parse(call.function.arguments))).toBe(true);
  });

  it('a named function, streamed: deltas in OpenAI shape that add up to valid arguments', async () => {
    const stream = await client.chat.completions.create({
      model: 'skein-mini',
      messages,
      tools: [weather, add],
      tool_choice: { type: 'function', function: { name: 'add' } },
      // skein-mini writes 15-digit integers: room for two of them.
      max_tokens: 120,
      stream: true,
    });
    let name = '';
    let args = '';
    let id = '';
    const finishes: (string | null)[] = [];
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        finishes.push(c.finish_reason);
        for (const d of c.delta.tool_calls ?? []) {
          expect(d.index).toBe(0);
          if (d.id) id = d.id;
          name += d.function?.name ?? '';
          args += d.function?.arguments ?? '';
        }
      }
    }
    expect(id).toMatch(/^call_/);
    expect(name).toBe('add');
    expect(finishes.filter(Boolean)).toEqual(['tool_calls']);
    expect(new Ajv().validate(add.function.parameters, JSON.parse(args))).toBe(true);
  });

  it('tool_choice auto: either text or a well-formed call', async () => {
    const res = await client.chat.completions.create({ model: 'skein-mini', messages, tools: [weather], max_tokens: 40 });
    const choice = res.choices[0]!;
    if (choice.finish_reason === 'tool_calls') {
      const call = choice.message.tool_calls![0]!;
      if (call.type !== 'function') throw new Error('not a function call');
      expect(call.function.name).toBe('get_weather');
      JSON.parse(call.function.arguments);
    } else {
      expect(choice.message.content!.startsWith('{')).toBe(false);
      expect(choice.message.content!.length).toBeGreaterThan(0);
    }
  });

  it('response_format json_schema (strict) and json_object give parseable JSON that fits', async () => {
    const schema = { type: 'object', properties: { answer: { type: 'string', maxLength: 16 }, sure: { type: 'boolean' } }, required: ['answer', 'sure'], additionalProperties: false };
    const res = await client.chat.completions.create({
      model: 'skein-mini',
      messages,
      response_format: { type: 'json_schema', json_schema: { name: 'reply', strict: true, schema } },
      max_tokens: 40,
    });
    expect(new Ajv().validate(schema, JSON.parse(res.choices[0]!.message.content!))).toBe(true);
    const obj = await client.chat.completions.create({ model: 'skein-mini', messages, response_format: { type: 'json_object' }, max_tokens: 60, temperature: 0.7, seed: 4 });
    if (obj.choices[0]!.finish_reason === 'stop') expect(typeof JSON.parse(obj.choices[0]!.message.content!)).toBe('object');
  });

  it('logit_bias +100 makes greedy pick that token; penalties are accepted and change nothing at 0', async () => {
    const id = engine.tokenize(' sea')[0]!;
    const res = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 3, logit_bias: { [id]: 100 } });
    expect(res.choices[0]!.message.content).toBe(' sea sea sea');
    const plain = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 6 });
    const zero = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 6, frequency_penalty: 0, presence_penalty: 0 });
    expect(zero.choices[0]!.message.content).toBe(plain.choices[0]!.message.content);
    const penalised = await client.chat.completions.create({ model: 'skein-mini', messages, max_tokens: 3, logit_bias: { [id]: 100 }, frequency_penalty: 2 });
    // The bias still wins (100 against 2 per repeat), so the penalty must not break generation either.
    expect(penalised.choices[0]!.message.content).toBe(' sea sea sea');
  });

  it("logprobs with tools: one per emitted token, the call's JSON included, the same streamed and not", async () => {
    const request = { model: 'skein-mini', messages, tools: [weather, add], tool_choice: 'required' as const, max_tokens: 160, logprobs: true, top_logprobs: 2 };
    const res = await client.chat.completions.create(request);
    const choice = res.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    const call = choice.message.tool_calls![0]!;
    if (call.type !== 'function') throw new Error('not a function call');
    const content = choice.logprobs!.content!;
    // Every token of the call (an end-of-sequence token adds no text and gets none).
    expect(content.length).toBeGreaterThanOrEqual(res.usage!.completion_tokens - 1);
    expect(content.length).toBeLessThanOrEqual(res.usage!.completion_tokens);
    const text = new TextDecoder().decode(new Uint8Array(content.flatMap((t) => t.bytes!)));
    expect(JSON.parse(text)).toEqual({ name: call.function.name, arguments: JSON.parse(call.function.arguments) });
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      // Up to 2 alternatives: where the grammar allows a single token, it is the only one.
      expect(t.top_logprobs.length).toBeGreaterThanOrEqual(1);
      expect(t.top_logprobs.length).toBeLessThanOrEqual(2);
      // Greedy: the emitted token is the most likely one after the grammar's mask.
      expect(t.top_logprobs[0]).toMatchObject({ token: t.token, logprob: t.logprob });
    }

    const stream = await client.chat.completions.create({ ...request, stream: true });
    const streamed: typeof content = [];
    let args = '';
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        streamed.push(...(c.logprobs?.content ?? []));
        for (const d of c.delta.tool_calls ?? []) args += d.function?.arguments ?? '';
      }
    }
    expect(JSON.parse(args)).toEqual(JSON.parse(call.function.arguments));
    expect(streamed).toEqual(content);
  });

  it('refuses what it does not support with a 400 in OpenAI shape naming the parameter', async () => {
    const post = (body: Record<string, unknown>) =>
      fetch(`${base}/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'skein-mini', messages, ...body }) });
    for (const [body, param] of [
      [{ top_logprobs: 2 }, 'top_logprobs'],
      [{ n: 9 }, 'n'],
      [{ logit_bias: { x: 1 } }, 'logit_bias.x'],
      [{ frequency_penalty: 3 }, 'frequency_penalty'],
      [{ functions: [] }, 'functions'],
      [{ stop: [''] }, 'stop'],
      [{ parallel_tool_calls: true, tools: [weather] }, 'parallel_tool_calls'],
      [{ tools: [weather], tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice'],
    ] as const) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const { error } = await res.json();
      expect(error).toMatchObject({ type: 'invalid_request_error', param, code: 'bad_request' });
      expect(typeof error.message).toBe('string');
    }
    // A schema the grammar cannot enforce, streamed: a 400 before any stream starts.
    const res = await post({ stream: true, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', uniqueItems: true } } } });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect((await res.json()).error).toMatchObject({ param: 'response_format', type: 'invalid_request_error' });
    // A prompt past the model's context, streamed: a 400 too, not an error inside a 200 stream.
    const long = await post({ stream: true, messages: [{ role: 'user', content: 'word '.repeat(3000) }] });
    expect(long.status).toBe(400);
  });
});
