/**
 * Speculative heads on the default model, SmolLM2-135M-Instruct Q4_1 on the wasm block
 * kernels (issue #13): with its committed heads (models/heads/smollm2-135m-instruct, when
 * trained) or, failing those, random Medusa heads, greedy output through the engine is
 * identical to plain greedy on every test prompt, alone and batched with plain requests.
 * Skipped, saying so, when the model is not pulled.
 */
import { existsSync, symlinkSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateEvent, GenerateRequest } from '../core/engine.js';
import { initBackend } from '../runtime/backend.js';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { availableHeads, writeHeads } from '../runtime/heads/files.js';
import { tempDir } from './fixtures/temp-dir.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;

const smolDir = fileURLToPath(new URL('../models/smollm2-135m-instruct/', import.meta.url));
const haveSmol = existsSync(path.join(smolDir, 'SmolLM2-135M-Instruct.Q4_1.gguf'));
if (!haveSmol) console.warn('SmolLM2 speculative-heads test skipped: models/smollm2-135m-instruct is not pulled (npx skein pull smollm2-135m-instruct)');

const questions = ['What is the capital of France?', 'Give two tips for keeping a small garden.'];
const request = (q: string, stages?: GenerateRequest['stages']): GenerateRequest => ({
  messages: [{ role: 'user', content: q }],
  sampling: { maxTokens: 16 },
  ...(stages ? { stages } : {}),
});

async function run(e: EngineFront, r: GenerateRequest): Promise<Done> {
  return (await lastValueFrom(e.generate(r).pipe(toArray()))).at(-1) as Done;
}

/**
 * A model folder for when no trained heads are committed: the pulled GGUF linked into a
 * temporary folder with random Medusa heads of SmolLM2's sizes beside it.
 */
function modelWithRandomHeads(): string {
  const model = tempDir('skein-smol-');
  symlinkSync(path.join(smolDir, 'SmolLM2-135M-Instruct.Q4_1.gguf'), path.join(model, 'SmolLM2-135M-Instruct.Q4_1.gguf'));
  const d = 576;
  let s = 17;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.1;
  writeHeads(path.join(model, 'heads', 'medusa'), {
    meta: { kind: 'medusa', numHeads: 2, hiddenSize: d, vocabSize: 49152, tree: [[0], [0, 0], [1], [2]], gateThreshold: null },
    weights: [Float32Array.from({ length: d * d }, rand), Float32Array.from({ length: d * d }, rand)],
    biases: [new Float32Array(d), new Float32Array(d)],
  });
  return model;
}

describe.skipIf(!haveSmol)('speculative heads on SmolLM2-135M Q4_1 (the default model)', () => {
  let engine: EngineFront;
  // Gate off: the committed heads' calibrated gate sends most steps to plain decoding.
  const stages: GenerateRequest['stages'] = { speculate: { entropyGate: false } };
  let baseline = 0;

  beforeAll(async () => {
    await initBackend();
    baseline = tf.memory().numTensors;
    const trained = availableHeads({ name: 'smollm2-135m-instruct', dir: smolDir.replace(/\/$/, '') }).length > 0;
    engine = await createEngine({ model: trained ? 'smollm2-135m-instruct' : modelWithRandomHeads(), thread: 'main' });
  }, 120_000);

  afterAll(async () => {
    await engine?.close();
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('gives the plain greedy output alone and batched with plain requests', async () => {
    const plain: Done[] = [];
    for (const q of questions) plain.push(await run(engine, request(q)));
    for (let i = 0; i < questions.length; i++) {
      const d = await run(engine, request(questions[i]!, stages));
      expect(d.ids).toEqual(plain[i]!.ids);
      expect(d.metrics.stages!.speculate!.verifications).toBeGreaterThan(0);
    }
    const batched = await Promise.all(questions.flatMap((q, i) => [run(engine, request(q, stages)), run(engine, request(questions[(i + 1) % questions.length]!))]));
    questions.forEach((_, i) => {
      expect(batched[2 * i]!.ids).toEqual(plain[i]!.ids);
      expect(batched[2 * i + 1]!.ids).toEqual(plain[(i + 1) % questions.length]!.ids);
    });
    expect(engine.stats()).toMatchObject({ runningSequences: 0, kvBlocksUsed: 0 });
  }, 300_000);
});
