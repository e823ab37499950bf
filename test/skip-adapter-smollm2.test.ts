/**
 * Skipped-layer decode with the committed skip adapter on the default model,
 * SmolLM2-135M-Instruct Q4_1 on the wasm block kernels (issue #12): self-speculative
 * decoding drafting on the adapted kept layers gives the plain greedy output on every test
 * prompt, alone and batched with plain requests, and the report says the adapter ran.
 * Skipped, saying so, when the model is not pulled or its adapter is not there.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateEvent, GenerateRequest } from '../core/engine.js';
import { findSkipAdapter } from '../runtime/adapters/skip-adapter.js';
import { initBackend } from '../runtime/backend.js';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;

const smolDir = fileURLToPath(new URL('../models/smollm2-135m-instruct', import.meta.url));
const haveSmol = existsSync(path.join(smolDir, 'SmolLM2-135M-Instruct.Q4_1.gguf'));
const haveAdapter = findSkipAdapter({ name: 'smollm2-135m-instruct', dir: smolDir }, 2) !== undefined;
if (!haveSmol) console.warn('SmolLM2 skip-adapter test skipped: models/smollm2-135m-instruct is not pulled (npx skein pull smollm2-135m-instruct)');
else if (!haveAdapter) console.warn('SmolLM2 skip-adapter test skipped: no skip-r2 adapter (npx skein train skip --model smollm2-135m-instruct --target 2)');

const questions = ['What is the capital of France?', 'Give two tips for keeping a small garden.'];
const request = (q: string, stages?: GenerateRequest['stages']): GenerateRequest => ({
  messages: [{ role: 'user', content: q }],
  sampling: { maxTokens: 16 },
  ...(stages ? { stages } : {}),
});

async function run(e: EngineFront, r: GenerateRequest): Promise<Done> {
  return (await lastValueFrom(e.generate(r).pipe(toArray()))).at(-1) as Done;
}

describe.skipIf(!haveSmol || !haveAdapter)('skip adapter on SmolLM2-135M Q4_1 (the default model)', () => {
  let engine: EngineFront;
  let baseline = 0;
  const stages: GenerateRequest['stages'] = { skipLayers: { targetSpeedup: 2, mode: 'self-speculative' } };

  beforeAll(async () => {
    await initBackend();
    baseline = tf.memory().numTensors;
    engine = await createEngine({ model: 'smollm2-135m-instruct', thread: 'main' });
  }, 120_000);

  afterAll(async () => {
    await engine?.close();
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('drafts on the adapted layers and gives the plain greedy output, alone and batched with plain requests', async () => {
    const plain: Done[] = [];
    for (const q of questions) plain.push(await run(engine, request(q)));
    for (let i = 0; i < questions.length; i++) {
      const d = await run(engine, request(questions[i]!, stages));
      expect(d.ids).toEqual(plain[i]!.ids);
      expect(d.metrics.stages!.skipLayers).toMatchObject({ adapted: true, mode: 'self-speculative' });
      expect(d.metrics.stages!.skipLayers!.draftsProposed).toBeGreaterThan(0);
    }
    const batched = await Promise.all(questions.flatMap((q) => [run(engine, request(q, stages)), run(engine, request(q))]));
    questions.forEach((_, i) => {
      expect(batched[2 * i]!.ids).toEqual(plain[i]!.ids);
      expect(batched[2 * i + 1]!.ids).toEqual(plain[i]!.ids);
    });
  }, 300_000);
});
