// The remote engine against a scripted OpenAI-compatible server on a real loopback socket:
// what it sends, how it streams, and each fault (429 then 200, 5xx, 4xx, garbage, a hang
// past the timeout, the connection cut mid-stream, a cancel) ending as documented with
// every request closed on the server's side.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { ProviderError, ProviderKeyMissingError, StageUnavailableError } from '../../core/errors.js';
import { backoffMs, OpenAiEngine } from './openai-engine.js';

type Handler = (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => void;

let server: Server;
let baseUrl: string;
let handlers: Handler[] = [];
let seen: { body: Record<string, unknown>; headers: IncomingMessage['headers'] }[] = [];
let open = 0;
let maxOpen = 0;
/** Answers that streamed to their end (a cancelled one must not). */
let ended = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      const body = JSON.parse(raw) as Record<string, unknown>;
      seen.push({ body, headers: req.headers });
      open++;
      maxOpen = Math.max(maxOpen, open);
      res.on('close', () => open--);
      const handler = handlers.length > 1 ? handlers.shift()! : handlers[0]!;
      handler(req, res, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));
afterEach(() => {
  handlers = [];
  seen = [];
  maxOpen = 0;
  ended = 0;
});

const chunk = (delta: object, finish: string | null = null) => `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
const usage = (p: number, c: number) => `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: p, completion_tokens: c, prompt_tokens_details: { cached_tokens: 3 } } })}\n\n`;

/** A well-behaved streaming answer of `pieces`, one write each. */
const answer =
  (pieces: string[], delayMs = 0): Handler =>
  (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    res.write(chunk({ role: 'assistant', content: '' }));
    let i = 0;
    const next = () => {
      if (res.destroyed) return;
      if (i < pieces.length) {
        res.write(chunk({ content: pieces[i++] }));
        return void setTimeout(next, delayMs);
      }
      ended++;
      res.write(chunk({}, 'stop'));
      res.write(usage(11, pieces.length));
      res.end('data: [DONE]\n\n');
    };
    next();
  };
const status =
  (code: number, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    res.writeHead(code, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify({ error: { message: `scripted ${code}` } }));
  };

const engine = (extra: Record<string, unknown> = {}, env: Record<string, string> = {}) =>
  new OpenAiEngine({ name: 'far', spec: { type: 'openai', baseUrl, model: 'remote-m', retries: 2, ...extra }, env, random: () => 0 });
const ask: GenerateRequest = { messages: [{ role: 'user', content: 'Hi' }], sampling: { maxTokens: 8 }, node: 'g' };
const run = (e: OpenAiEngine, request: GenerateRequest = ask) => lastValueFrom(e.generate(request).pipe(toArray()));
const failure = async (e: OpenAiEngine, request: GenerateRequest = ask) => {
  const err = await run(e, request).then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(err).toBeInstanceOf(ProviderError);
  return err as ProviderError;
};
const settled = async () => {
  for (let i = 0; i < 100 && open > 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(open).toBe(0);
};

describe('OpenAiEngine', () => {
  it('streams the answer as token events and ends with the server usage', async () => {
    handlers = [answer(['Hel', 'lo', '!'])];
    const events = await run(engine({ apiKeyEnv: 'FAR_KEY' }, { FAR_KEY: 'sk-test' }), { ...ask, sampling: { maxTokens: 8, seed: 5, topK: 4, stop: ['\n'] } });
    expect(events.filter((e) => e.type === 'token').map((e) => (e as { text: string }).text)).toEqual(['Hel', 'lo', '!']);
    const done = events.at(-1) as Extract<GenerateEvent, { type: 'done' }>;
    expect(done).toMatchObject({ type: 'done', reason: 'stop', text: 'Hello!', usage: { promptTokens: 11, completionTokens: 3, cachedPromptTokens: 3 } });
    const { body, headers } = seen[0]!;
    expect(headers.authorization).toBe('Bearer sk-test');
    expect(body).toEqual({
      model: 'remote-m',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 8,
      temperature: 0,
      top_p: 1,
      seed: 5,
      stop: ['\n'],
      top_k: 4,
    });
    await settled();
  });

  it('sends an assistant prefix as the final message to continue (vLLM/SGLang continuation)', async () => {
    handlers = [answer([' more'])];
    await run(engine(), { ...ask, assistantPrefix: 'Start:' });
    expect(seen[0]!.body).toMatchObject({
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Start:' },
      ],
      continue_final_message: true,
      add_generation_prompt: false,
    });
  });

  it('retries a 429 (honouring Retry-After) and a 503, then streams', async () => {
    handlers = [status(429, { 'Retry-After': '0' }), status(503), answer(['ok'])];
    const events = await run(engine());
    expect(events.at(-1)).toMatchObject({ type: 'done', text: 'ok' });
    expect(seen).toHaveLength(3);
    await settled();
  });

  it('gives up after its retries with a ProviderError naming provider, node and status', async () => {
    handlers = [status(500)];
    const err = await failure(engine({ retries: 1 }));
    expect(seen).toHaveLength(2);
    expect(err).toMatchObject({ provider: 'far', node: 'g', status: 500, reason: 'scripted 500' });
    expect(err.message).toBe('Provider far (node g) failed with HTTP 500: scripted 500');
  });

  it('never retries another 4xx', async () => {
    handlers = [status(400)];
    expect(await failure(engine())).toMatchObject({ status: 400 });
    expect(seen).toHaveLength(1);
  });

  it('refuses garbage: a body that is not an event stream, or events that are not JSON chunks', async () => {
    handlers = [
      (_req, res) => (res.writeHead(200, { 'Content-Type': 'text/html' }), res.end('<html>hello</html>')),
      (_req, res) => (res.writeHead(200, { 'Content-Type': 'text/event-stream' }), res.end('data: {not json\n\n')),
    ];
    expect((await failure(engine())).reason).toMatch(/text\/html instead of an event stream/);
    expect((await failure(engine())).reason).toMatch(/not JSON/);
    expect(seen).toHaveLength(2);
    await settled();
  });

  it('times out a server that hangs, retries, and closes every attempt', async () => {
    handlers = [() => {}];
    const t0 = performance.now();
    const err = await failure(engine({ timeoutMs: 100, retries: 1 }));
    expect(err.reason).toMatch(/no answer for 100 ms/);
    expect(seen).toHaveLength(2);
    expect(performance.now() - t0).toBeLessThan(2000);
    await settled();
  });

  it('fails without a retry when the connection is cut after tokens were streamed', async () => {
    handlers = [
      (_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.write(chunk({ content: 'par' }));
        res.write(chunk({ content: 'tial' }));
        setTimeout(() => res.socket?.destroy(), 30);
      },
    ];
    const tokens: string[] = [];
    const err = await new Promise<unknown>((resolve) =>
      engine()
        .generate(ask)
        .subscribe({ next: (e) => e.type === 'token' && tokens.push(e.text), error: resolve, complete: () => resolve(undefined) }),
    );
    expect(tokens).toEqual(['par', 'tial']);
    expect(err).toBeInstanceOf(ProviderError);
    expect((err as ProviderError).reason).toMatch(/connection lost after 2 streamed chunk/);
    expect(seen).toHaveLength(1);
  });

  it('aborts the HTTP request when the subscriber unsubscribes', async () => {
    handlers = [answer(Array.from({ length: 200 }, (_, i) => `t${i} `), 10)];
    const e = engine();
    const first = await firstValueFrom(e.generate(ask));
    expect(first).toMatchObject({ type: 'token', text: 't0 ' });
    await settled();
    expect(seen).toHaveLength(1);
    expect(ended).toBe(0);
    expect(e.stats()).toMatchObject({ runningSequences: 0, queueDepth: 0 });
  });

  it('keeps at most maxConcurrency requests in flight', async () => {
    handlers = [answer(['a', 'b', 'c'], 20)];
    const e = engine({ maxConcurrency: 2 });
    const all = await Promise.all(Array.from({ length: 5 }, () => run(e)));
    expect(all.every((events) => events.at(-1)?.type === 'done')).toBe(true);
    expect(seen).toHaveLength(5);
    expect(maxOpen).toBe(2);
  });

  it('reads the key only from the environment variable named, and says which is missing', () => {
    expect(() => engine({ apiKeyEnv: 'NOT_SET_ANYWHERE' })).toThrow(ProviderKeyMissingError);
    expect(() => engine({ apiKeyEnv: 'NOT_SET_ANYWHERE' })).toThrow(/NOT_SET_ANYWHERE/);
  });

  it('refuses forward-shaping stages, structured output and raw prompts before sending anything', async () => {
    const e = engine();
    await expect(run(e, { ...ask, stages: { skipLayers: { targetSpeedup: 2 } } })).rejects.toBeInstanceOf(StageUnavailableError);
    await expect(run(e, { ...ask, output: { choices: ['a'] } })).rejects.toThrow(/structured output/);
    await expect(run(e, { prompt: 'raw' })).rejects.toThrow(/raw-text prompts/);
    await expect(run(engine({ continueFinalMessage: false }), { ...ask, assistantPrefix: 'Start:' })).rejects.toThrow(/continueFinalMessage: false/);
    expect(seen).toHaveLength(0);
  });

  it('backs off exponentially with full jitter, capped, or as Retry-After says', () => {
    expect(backoffMs(0, undefined, () => 0.999)).toBe(199);
    expect(backoffMs(3, undefined, () => 0.5)).toBe(800);
    expect(backoffMs(10, undefined, () => 0.999)).toBe(4995);
    expect(backoffMs(0, 1500, () => 0)).toBe(1500);
  });
});
