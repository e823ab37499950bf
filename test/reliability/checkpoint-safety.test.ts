// Checkpoints (#16 item 7): NaN/Inf weights used to load silently and make the model
// write NUL text; a tokenizer id far past the model's vocabulary (1e9) loaded in 46 s.
// Both are now CheckpointErrors naming the tensor or token, found while loading.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { initBackend } from '../../runtime/backend.js';
import { loadModel, loadTokenizer } from '../../runtime/checkpoint/load.js';
import { readSafetensors, writeSafetensors, type WriteDtype } from '../../runtime/checkpoint/safetensors.js';
import { writeRandomCheckpoint } from '../fixtures/checkpoints.js';
import { tempDir } from '../fixtures/temp-dir.js';

const dir = tempDir('skein-ckpt-safety-');
let n = 0;
beforeAll(async () => {
  await initBackend();
});

async function loadError(modelDir: string): Promise<CheckpointError> {
  const before = tf.memory().numTensors;
  const err = await loadModel(modelDir).then(
    (m) => {
      m.dispose();
      return null;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CheckpointError);
  expect(tf.memory().numTensors).toBe(before);
  return err as CheckpointError;
}

describe('checkpoint safety', () => {
  it.each<[WriteDtype, number, string]>([
    ['F32', NaN, 'NaN'],
    ['F16', Infinity, 'Infinity'],
    ['BF16', -Infinity, '-Infinity'],
  ])('a %s weight holding %s is a CheckpointError naming the tensor', async (dtype, bad, word) => {
    const ck = writeRandomCheckpoint(path.join(dir, `m${n++}`), { dtype });
    const file = ck.weightFiles[0]!;
    const tensors = readSafetensors(file);
    tensors['model.layers.1.self_attn.k_proj.weight']!.data[37] = bad;
    writeSafetensors(file, tensors, dtype);
    const err = await loadError(ck.dir);
    expect(err.tensor).toBe('model.layers.1.self_attn.k_proj.weight');
    expect(err.reason).toBe(`holds ${word} at element 37`);
  });

  it('a tokenizer id beyond the model vocabulary is refused at once, naming the token', () => {
    const ck = writeRandomCheckpoint(path.join(dir, `m${n++}`));
    const file = path.join(ck.dir, 'tokenizer.json');
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    json.added_tokens.push({ id: 1e9, content: '<|huge|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    fs.writeFileSync(file, JSON.stringify(json));
    const t0 = performance.now();
    const err = (() => {
      try {
        loadTokenizer(ck.dir);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).message).toBe(
      `Bad checkpoint: ${file}: token "<|huge|>" has id 1000000000, outside the model's vocabulary of ${ck.config.vocab_size}`,
    );
    expect(performance.now() - t0).toBeLessThan(5000);
    json.added_tokens.pop();
    json.model.vocab.he = Number(ck.config.vocab_size);
    fs.writeFileSync(file, JSON.stringify(json));
    expect(() => loadTokenizer(ck.dir)).toThrow(/token "he" has id \d+, outside the model's vocabulary/);
  });
});
