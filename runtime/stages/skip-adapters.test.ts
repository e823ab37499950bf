/**
 * Skip adapters in the real engine (runtime/stages/skip-adapters.ts): a checkpoint with
 * `adapters/skip-r2.*` beside it decodes skipLayers on the adapted kept layers (the report
 * says so) unless the request sets `adapter: false`; self-speculative decoding with the
 * adapter still gives the plain output; an adapter for another base file fails the
 * request with a CheckpointError; everything is freed when the engine closes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import type { GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { makeTempCheckpoint } from '../../test/fixtures/checkpoints.js';
import { checkpointSha256, LORA_PROJECTIONS, projectionShape, writeSkipAdapter, type SkipAdapter } from '../adapters/skip-adapter.js';
import { initBackend } from '../backend.js';
import { readModelConfig } from '../checkpoint/load.js';
import { createEngine } from '../engine/index.js';
import type { EngineFront } from '../engine/front.js';
import { mulberry32 } from '../model/random.js';
import type { ModelConfig } from '../model/types.js';
import { unifiedLayers } from './layer-selection.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;
const request = (stages: GenerateRequest['stages']): GenerateRequest => ({ prompt: 'the river runs past the old mill and', sampling: { maxTokens: 8 }, stages });

let ckpt: ReturnType<typeof makeTempCheckpoint>;
let engine: EngineFront;
let baseline = 0;

function adapter(c: ModelConfig, sha256: string): SkipAdapter {
  const rng = mulberry32(11);
  const layers = unifiedLayers(c.numLayers, 2);
  return {
    meta: { format: 'skein-skip-adapter', base: { file: 'model.safetensors', sha256 }, targetSpeedup: 2, numLayers: c.numLayers, layers, rank: 2, scale: 2, projections: [...LORA_PROJECTIONS] },
    lora: layers.map(() => {
      const pairs = {} as SkipAdapter['lora'][number];
      for (const p of LORA_PROJECTIONS) {
        const [i, o] = projectionShape(c, p);
        pairs[p] = { a: Float32Array.from({ length: i * 2 }, () => rng() - 0.5), b: Float32Array.from({ length: 2 * o }, () => rng() - 0.5) };
      }
      return pairs;
    }),
  };
}

async function done(r: GenerateRequest): Promise<Done> {
  return (await lastValueFrom(engine.generate(r).pipe(toArray()))).at(-1) as Done;
}

beforeAll(async () => {
  await initBackend();
  ckpt = makeTempCheckpoint({ seed: 4, numLayers: 4 });
  const { config } = readModelConfig(ckpt.dir);
  writeSkipAdapter(path.join(ckpt.dir, 'adapters'), adapter(config, checkpointSha256(ckpt.dir)));
  baseline = tf.memory().numTensors;
  engine = await createEngine({ model: ckpt.dir, thread: 'main' });
});

afterAll(async () => {
  await engine?.close();
  expect(tf.memory().numTensors).toBe(baseline);
  ckpt.cleanup();
});

describe('skip adapters in the engine', () => {
  it('decodes on the adapted layers unless the request turns the adapter off', async () => {
    const adapted = await done(request({ skipLayers: { targetSpeedup: 2 } }));
    const plain = await done(request({ skipLayers: { targetSpeedup: 2, adapter: false } }));
    expect(adapted.metrics.stages!.skipLayers).toMatchObject({ adapted: true, mode: 'lossy' });
    expect(plain.metrics.stages!.skipLayers).toMatchObject({ adapted: false });
    expect(adapted.ids).not.toEqual(plain.ids);
  });

  it('drafts with the adapter in self-speculative mode and gives the plain output', async () => {
    const full = await done(request(undefined));
    const spec = await done(request({ skipLayers: { targetSpeedup: 2, mode: 'self-speculative' } }));
    expect(spec.metrics.stages!.skipLayers).toMatchObject({ adapted: true, mode: 'self-speculative' });
    expect(spec.metrics.stages!.skipLayers!.draftsProposed).toBeGreaterThan(0);
    expect(spec.ids).toEqual(full.ids);
  });

  it('fails a request whose adapter was made for another base file', async () => {
    const file = path.join(ckpt.dir, 'adapters', 'skip-r4.json');
    const { config } = readModelConfig(ckpt.dir);
    const a = adapter(config, 'ff'.repeat(32));
    a.meta.targetSpeedup = 4;
    a.meta.layers = unifiedLayers(config.numLayers, 4);
    a.lora = a.lora.slice(0, a.meta.layers.length);
    writeSkipAdapter(path.dirname(file), a);
    expect(fs.existsSync(file)).toBe(true);
    await expect(firstValueFrom(engine.generate(request({ skipLayers: { targetSpeedup: 4 } })))).rejects.toBeInstanceOf(CheckpointError);
  });
});
