/**
 * Log-probabilities through the engine on skein-mini: opt-in per request, scored on the
 * row the sampler drew from (the reference forward's log-softmax for a plain request; the
 * grammar's mask and logit_bias included when present), their bytes add up to the text,
 * and a request that does not ask carries none.
 */
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateEvent, GenerateRequest } from '../core/engine.js';
import { loadModel, type LoadedCheckpoint } from '../runtime/checkpoint/load.js';
import { createEngine, engineOnModel } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { logSumExp } from '../runtime/generate/logprobs.js';
import { referenceForward } from '../runtime/model/reference.js';

type Token = Extract<GenerateEvent, { type: 'token' }>;
type Done = Extract<GenerateEvent, { type: 'done' }>;

let model: LoadedCheckpoint;
let engine: EngineFront;

async function run(request: GenerateRequest): Promise<{ tokens: Token[]; done: Done }> {
  const events = await lastValueFrom(engine.generate(request).pipe(toArray()));
  return { tokens: events.filter((e): e is Token => e.type === 'token'), done: events.at(-1) as Done };
}

beforeAll(async () => {
  model = await loadModel('skein-mini');
  engine = engineOnModel(model, model.tokenizer(), { modelName: 'skein-mini' });
});
afterAll(async () => {
  await engine?.close();
  model?.dispose();
});

describe('log-probabilities', () => {
  it('are the reference forward log-softmax of the first token, and greedy picks the top one each step', async () => {
    const prompt = 'Once upon a time';
    const { tokens, done } = await run({ prompt, sampling: { maxTokens: 8 }, logprobs: 5 });
    const ids = engine.tokenize(prompt);
    const ref = tf.tidy(() => referenceForward(model, ids)).logits.at(-1)!;
    const z = logSumExp(ref);
    const first = tokens[0]!.logprobs!;
    expect(first.id).toBe(done.ids[0]);
    expect(first.logprob).toBeCloseTo(ref[first.id]! - z, 3);
    first.top.forEach((t) => expect(t.logprob).toBeCloseTo(ref[t.id]! - z, 3));
    for (const t of tokens.filter((t) => t.logprobs)) {
      const lp = t.logprobs!;
      expect(lp.top).toHaveLength(5);
      expect(lp.top[0]!.id).toBe(t.id);
      expect(lp.top[0]!.logprob).toBe(lp.logprob);
      for (let i = 1; i < 5; i++) expect(lp.top[i]!.logprob).toBeLessThanOrEqual(lp.top[i - 1]!.logprob);
      expect(lp.logprob).toBeLessThanOrEqual(0);
    }
    // The tokens' bytes are the text's bytes (no stop string, end-of-sequence adds none).
    const bytes = tokens.flatMap((t) => t.logprobs?.bytes ?? []);
    expect(new TextDecoder().decode(Uint8Array.from(bytes))).toBe(done.text);
  });

  it('are scored after the grammar mask: only allowed tokens, their probabilities summing to one', async () => {
    const choices = ['red', 'green', 'blue'];
    const { tokens, done } = await run({ prompt: 'A colour:', output: { choices }, sampling: { maxTokens: 8 }, logprobs: 20 });
    expect(choices).toContain(done.text);
    const first = tokens[0]!.logprobs!;
    const texts = first.top.map((t) => t.token);
    expect(texts.length).toBeGreaterThan(0);
    for (const text of texts) expect(choices.some((c) => c.startsWith(text))).toBe(true);
    // Fewer than 20 tokens can start a colour, so the list is the whole masked distribution.
    expect(first.top.reduce((s, t) => s + Math.exp(t.logprob), 0)).toBeCloseTo(1, 5);
  });

  it('include logit_bias, and a seeded sampled run gives the same log-probabilities twice', async () => {
    const favoured = engine.tokenize(' banana')[0]!;
    const request: GenerateRequest = { prompt: 'I like', sampling: { maxTokens: 3, temperature: 0.9, seed: 4, logitBias: { [favoured]: 100 } }, logprobs: 2 };
    const a = await run(request);
    expect(a.done.ids[0]).toBe(favoured);
    expect(a.tokens[0]!.logprobs!.logprob).toBeGreaterThan(-1e-3);
    const b = await run(request);
    expect(b.tokens.map((t) => t.logprobs)).toEqual(a.tokens.map((t) => t.logprobs));
  });

  it('cross the worker boundary unchanged', async () => {
    const worker = await createEngine({ model: 'skein-mini' });
    try {
      const request: GenerateRequest = { prompt: 'The sea', sampling: { maxTokens: 4 }, logprobs: 3 };
      const there = await lastValueFrom(worker.generate(request).pipe(toArray()));
      const here = await run(request);
      expect(there.filter((e): e is Token => e.type === 'token')).toEqual(here.tokens);
    } finally {
      await worker.close();
    }
  }, 60_000);

  it('are not computed unless asked for, and a bad count is a typed error', async () => {
    const { tokens } = await run({ prompt: 'Hello', sampling: { maxTokens: 3 } });
    expect(tokens.every((t) => t.logprobs === undefined)).toBe(true);
    await expect(run({ prompt: 'Hello', logprobs: 21 })).rejects.toMatchObject({ name: 'BadRequestError', field: 'logprobs' });
  });
});
