// Large prompts (#16 item 4): tokenizing used to run on the HTTP event loop before the
// context check, so one 1 MiB message blocked /healthz for 2.7 s only to end in a 400.
// Text prompts now go to the engine's core (the worker) as text, and the core refuses
// one whose length alone proves it longer than the context, without tokenizing it. The
// latency itself is measured by `npx skein bench healthz`, not here.
import { existsSync } from 'node:fs';
import { lastValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ContextLengthError } from '../../core/errors.js';
import { ModelTokenizer } from '../../runtime/checkpoint/tokenizer.js';
import { createEngine, type EngineFront } from '../../runtime/engine/index.js';
import { createApp } from '../../runtime/server/index.js';

const MODEL = 'models/skein-mini';
const present = existsSync(`${MODEL}/config.json`);
if (!present) console.warn(`skipping large-prompt tests: ${MODEL} is absent`);

let engine: EngineFront;
beforeAll(async () => {
  if (present) engine = await createEngine({ model: 'skein-mini', thread: 'main' });
});
afterAll(async () => {
  await engine?.close();
});

describe.skipIf(!present)('prompts longer than the context', () => {
  it('4 × 1 MiB chat prompts are refused with 400 before anything tokenizes them', async () => {
    const app = createApp({ engine, log: () => {} });
    const encode = vi.spyOn(ModelTokenizer.prototype, 'encode');
    const render = vi.spyOn(ModelTokenizer.prototype, 'renderChat');
    const content = 'word '.repeat(200_000);
    const body = JSON.stringify({ messages: [{ role: 'user', content }], max_tokens: 4 });
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => app.request('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body })),
    );
    for (const res of answers) {
      expect(res.status).toBe(400);
      expect((await res.json()).error.message).toMatch(/^Bad request: prompt: 1000000 characters are at least \d+ tokens, the model's context is 2048$/);
    }
    expect(encode).not.toHaveBeenCalled();
    expect(render).not.toHaveBeenCalled();
    expect((await app.request('/healthz')).status).toBe(200);
    encode.mockRestore();
    render.mockRestore();
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('a prompt near the context is still tokenized and judged exactly', async () => {
    const err = await lastValueFrom(engine.generate({ prompt: 'a b '.repeat(1100), sampling: { maxTokens: 2 } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ContextLengthError);
    expect((err as Error).message).toMatch(/the prompt has \d+ tokens, the model's context is 2048/);
    const ok = await lastValueFrom(engine.generate({ prompt: 'Hello there', sampling: { maxTokens: 2 } }));
    expect(ok.type).toBe('done');
  });
});
