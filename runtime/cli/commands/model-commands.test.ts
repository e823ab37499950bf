import * as tf from '@tensorflow/tfjs-core';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeTempCheckpoint } from '../../../test/fixtures/checkpoints.js';
import { initBackend } from '../../backend.js';
import { loadModel } from '../../checkpoint/load.js';
import { referenceForward } from '../../model/reference.js';
import { register as registerGenerate } from './generate.js';
import { register as registerLogits } from './logits.js';
import { register as registerTokenize } from './tokenize.js';

/** Runs one command in-process and returns what it wrote to stdout. */
async function run(args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  registerLogits(program);
  registerGenerate(program);
  registerTokenize(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string, cb?: () => void) => {
    out += chunk;
    if (typeof cb === 'function') cb();
    return true;
  }) as typeof process.stdout.write);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((() => true) as typeof process.stderr.write);
  try {
    await program.parseAsync(['node', 'skein', ...args]);
  } finally {
    spy.mockRestore();
    err.mockRestore();
  }
  return out;
}

let ckpt: ReturnType<typeof makeTempCheckpoint>;
beforeAll(async () => {
  await initBackend();
  ckpt = makeTempCheckpoint({ numKvHeads: 2, seed: 4 });
});
afterAll(() => ckpt.cleanup());

describe('model commands', () => {
  it('logits prints one JSON object with a full row per position, equal to the reference', async () => {
    const out = await run(['logits', '--model', ckpt.dir, '--ids', '5,6,7']);
    expect(out.trim().split('\n')).toHaveLength(1);
    const { logits } = JSON.parse(out) as { logits: number[][] };
    const model = await loadModel(ckpt.dir);
    const ref = referenceForward(model, [5, 6, 7]);
    model.dispose();
    expect(logits).toHaveLength(3);
    for (let i = 0; i < 3; i++) {
      expect(logits[i]).toHaveLength(ref.logits[i]!.length);
      logits[i]!.forEach((v, j) => expect(Math.abs(v - ref.logits[i]![j]!)).toBeLessThan(1e-4));
    }
    expect(tf.memory().numTensors).toBe(0);
  });

  it('tokenize prints the ids; generate --json prints ids, text and metrics', async () => {
    const { ids } = JSON.parse(await run(['tokenize', '--model', ckpt.dir, '--prompt', 'Hello world'])) as { ids: number[] };
    expect(ids.length).toBeGreaterThan(0);
    const res = JSON.parse(await run(['generate', '--model', ckpt.dir, '--prompt', 'Hello world', '--max-tokens', '5', '--json'])) as {
      ids: number[];
      text: string;
      metrics: { prefillMs: number; decodeTokensPerSec: number };
    };
    expect(res.ids.length).toBeGreaterThan(0);
    expect(res.ids.length).toBeLessThanOrEqual(5);
    expect(typeof res.text).toBe('string');
    expect(res.metrics.prefillMs).toBeGreaterThan(0);
    const again = JSON.parse(await run(['generate', '--model', ckpt.dir, '--ids', ids.join(','), '--max-tokens', '5', '--json'])) as { ids: number[] };
    expect(again.ids).toEqual(res.ids);
    const streamed = await run(['generate', '--model', ckpt.dir, '--ids', ids.join(','), '--max-tokens', '5']);
    expect(streamed.trimEnd()).toBe(res.text.trimEnd());
  });
});
