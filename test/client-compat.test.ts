// Agent-framework clients against `skein serve` on loopback: LangChain.js (ChatOpenAI's
// bindTools and withStructuredOutput, functionCalling and jsonSchema) and the Vercel AI
// SDK (@ai-sdk/openai-compatible: generateObject, tool calls with toolChoice 'required',
// and streamed tool calls), LangChain's OpenAIEmbeddings on /v1/embeddings. The clients build the requests, parse the responses and the
// SSE streams themselves, so these check wire compatibility, not only Skein's own view of
// it. On the default model SmolLM2-135M when it has been pulled, else skein-mini (said on
// stderr); constrained decoding holds the FORM of every answer, which is what is checked.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { generateObject, generateText, jsonSchema, streamText, tool } from 'ai';
import { Ajv } from 'ajv';
import { lastValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { startServer, type RunningServer } from '../runtime/server/index.js';

const smollm = fileURLToPath(new URL('../models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf', import.meta.url));
const modelName = existsSync(smollm) ? 'smollm2-135m-instruct' : 'skein-mini';
if (modelName === 'skein-mini') process.stderr.write('client compatibility: SmolLM2 is not pulled, testing on skein-mini (the embedding similarity test, which needs it, is skipped)\n');

let server: RunningServer;
let engine: EngineFront;
let baseURL: string;

const weatherParams = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 24 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
} as const;
const personSchema = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 20 }, age: { type: 'integer', minimum: 0, maximum: 120 } },
  required: ['name', 'age'],
  additionalProperties: false,
} as const;
const ajv = new Ajv();
const validWeather = ajv.compile(weatherParams);
const validPerson = ajv.compile(personSchema);

beforeAll(async () => {
  engine = await createEngine({ model: modelName, thread: 'main' });
  server = await startServer({ engine, graphs: [], port: 0, build: false, print: () => {} });
  baseURL = new URL('/v1', server.url).href;
}, 120_000);
afterAll(async () => {
  await server?.close();
  await engine?.close();
});

describe(`LangChain.js ChatOpenAI (${modelName})`, () => {
  const chat = () => new ChatOpenAI({ model: modelName, apiKey: 'none', configuration: { baseURL }, temperature: 0, maxTokens: 60, maxRetries: 0 });

  it('bindTools with tool_choice required gives a tool call with schema-valid args', async () => {
    const weather = { type: 'function' as const, function: { name: 'get_weather', description: 'Current weather in a city.', parameters: weatherParams } };
    const reply = await chat().bindTools([weather], { tool_choice: 'required' }).invoke('What is the weather in Paris, in celsius?');
    expect(reply.tool_calls).toHaveLength(1);
    const call = reply.tool_calls![0]!;
    expect(call.name).toBe('get_weather');
    expect(validWeather(call.args), JSON.stringify(call.args)).toBe(true);
  }, 60_000);

  it.each(['functionCalling', 'jsonSchema'] as const)('withStructuredOutput (%s) returns a schema-valid object', async (method) => {
    const structured = chat().withStructuredOutput({ title: 'person', description: 'A person.', ...personSchema }, { method, name: 'person' });
    const person = await structured.invoke('Invent a person: a name and an age.');
    expect(validPerson(person), JSON.stringify(person)).toBe(true);
  }, 60_000);
});

describe(`Vercel AI SDK, @ai-sdk/openai-compatible (${modelName})`, () => {
  const model = () => createOpenAICompatible({ name: 'skein', baseURL, apiKey: 'none', supportsStructuredOutputs: true }).chatModel(modelName);
  const weather = tool({ description: 'Current weather in a city.', inputSchema: jsonSchema<{ city: string; unit: string }>(weatherParams) });

  it('generateObject returns a schema-valid object', async () => {
    const { object } = await generateObject({ model: model(), schema: jsonSchema<{ name: string; age: number }>(personSchema), prompt: 'Invent a person: a name and an age.', maxOutputTokens: 60, temperature: 0, maxRetries: 0 });
    expect(validPerson(object), JSON.stringify(object)).toBe(true);
  }, 60_000);

  it("generateText with toolChoice 'required' gives a typed tool call", async () => {
    const result = await generateText({ model: model(), tools: { get_weather: weather }, toolChoice: 'required', prompt: 'What is the weather in Paris?', maxOutputTokens: 60, temperature: 0, maxRetries: 0 });
    expect(result.toolCalls).toHaveLength(1);
    expect(result.toolCalls[0]!.toolName).toBe('get_weather');
    expect(validWeather(result.toolCalls[0]!.input), JSON.stringify(result.toolCalls[0]!.input)).toBe(true);
    expect(result.finishReason).toBe('tool-calls');
  }, 60_000);

  it('streamText assembles the streamed tool-call deltas into the same call', async () => {
    const args = { model: model(), tools: { get_weather: weather }, toolChoice: 'required' as const, prompt: 'What is the weather in Paris?', maxOutputTokens: 60, temperature: 0, maxRetries: 0 };
    const streamed = streamText(args);
    const calls = await streamed.toolCalls;
    const once = await generateText(args);
    expect(calls.map((c) => [c.toolName, c.input])).toEqual(once.toolCalls.map((c) => [c.toolName, c.input]));
  }, 60_000);
});

describe(`LangChain.js OpenAIEmbeddings (${modelName})`, () => {
  const embeddings = (dimensions?: number) =>
    new OpenAIEmbeddings({ model: modelName, apiKey: 'none', configuration: { baseURL }, maxRetries: 0, ...(dimensions ? { dimensions } : {}) });
  const cosine = (a: number[], b: number[]) => a.reduce((sum, x, i) => sum + x * b[i]!, 0);

  it('embedDocuments and embedQuery get the engine\'s unit vectors', async () => {
    const docs = ['The cat is sleeping on the sofa.', 'The stock market fell by three percent today.'];
    const direct = await lastValueFrom(engine.embed({ input: [...docs, 'A kitten naps on the couch.'] }));
    const size = direct.vectors[0]!.length;
    const vectors = await embeddings(size).embedDocuments(docs);
    expect(vectors.map((v) => Float32Array.from(v))).toEqual(direct.vectors.slice(0, 2));
    const query = await embeddings().embedQuery('A kitten naps on the couch.');
    expect(Float32Array.from(query)).toEqual(direct.vectors[2]);
    expect(cosine(query, query)).toBeCloseTo(1, 5);
  }, 60_000);

  // A chat model's mean-pooled states are no retrieval model's; the ordering of related and
  // unrelated texts is what they give (SmolLM2-135M: 0.87–0.95 against 0.71–0.75 here).
  it.skipIf(modelName !== 'smollm2-135m-instruct')('puts a paraphrase nearer than an unrelated text (SmolLM2)', async () => {
    const triples = [
      ['The cat is sleeping on the sofa.', 'A kitten naps on the couch.', 'The stock market fell by three percent today.'],
      ['How do I bake bread at home?', 'What is a simple recipe for homemade bread?', 'The train to Berlin leaves at nine.'],
      ['The weather is sunny and warm.', 'It is a bright, hot day outside.', 'Python is a programming language.'],
      ['He plays football every weekend.', 'On Saturdays he goes to play soccer.', 'The recipe needs two eggs and flour.'],
      ['My laptop will not turn on.', 'The computer does not start when I press the power button.', 'Roses are red and violets are blue.'],
    ];
    const vectors = await embeddings().embedDocuments(triples.flat());
    triples.forEach((_, i) => {
      const [anchor, paraphrase, unrelated] = vectors.slice(3 * i, 3 * i + 3) as [number[], number[], number[]];
      expect(cosine(anchor, paraphrase), triples[i]!.join(' / ')).toBeGreaterThan(cosine(anchor, unrelated) + 0.05);
    });
  }, 120_000);
});
