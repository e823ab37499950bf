/**
 * A second, independent oracle: test/oracle-numpy.py implements the Hugging Face model in
 * numpy (float64) straight from the safetensors file, so a convention shared by mistake
 * between reference.ts and forward.ts (rotary layout, llama3 frequencies, GQA grouping)
 * would show here. Skipped when python3 with numpy is not installed.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../runtime/backend.js';
import { loadModel } from '../runtime/checkpoint/load.js';
import { forward } from '../runtime/model/forward.js';
import { makeTempCheckpoint, type CheckpointSpec } from './fixtures/checkpoints.js';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'oracle-numpy.py');
const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;

const cases: [string, CheckpointSpec, number][] = [
  ['GQA, attention bias, llama3 rope', { numKvHeads: 2, attentionBias: true, ropeScaling: true, ropeTheta: 500000, numLayers: 3 }, 20],
  // head_dim 64 puts frequencies in llama3's smoothed middle band; 70 tokens take the prefill ops.
  [
    'MQA, tied, head_dim 64, llama3 middle band',
    { hiddenSize: 128, numHeads: 2, numKvHeads: 1, intermediateSize: 96, tieWordEmbeddings: true, maxPositionEmbeddings: 256,
      ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } },
    70,
  ],
];

beforeAll(async () => {
  await initBackend();
});

describe.skipIf(!hasNumpy)('forward vs an independent numpy implementation', () => {
  it.each(cases)('%s', async (_name, spec, n) => {
    const ckpt = makeTempCheckpoint({ ...spec, seed: 9 });
    const model = await loadModel(ckpt.dir);
    try {
      const ids = Array.from({ length: n }, (_, i) => (i * 37 + 5) % 280);
      const [r] = forward(model, [{ ids, logits: 'all' }]);
      tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
      const out = path.join(ckpt.dir, 'logits.json');
      fs.writeFileSync(out, JSON.stringify({ logits: r!.logits.map((row) => Array.from(row)) }));
      const res = spawnSync('python3', [script, ckpt.dir, ids.join(','), out], { encoding: 'utf8' });
      expect(res.status, res.stderr).toBe(0);
      const { maxRelErr, argmaxAgree } = JSON.parse(res.stdout) as { maxRelErr: number; argmaxAgree: boolean };
      expect(maxRelErr).toBeLessThan(1e-4);
      expect(argmaxAgree).toBe(true);
    } finally {
      model.dispose();
      ckpt.cleanup();
    }
  });
});
