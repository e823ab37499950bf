import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../backend.js';
import { rowBytes } from '../kernels/blocks.js';
import { quantizeModel } from '../model/block-weights.js';
import { randomModel } from '../model/random.js';
import { decodeWeightBytes } from './decode-bytes.js';

const config = { hiddenSize: 32, numHeads: 4, numKvHeads: 2, numLayers: 4, vocabSize: 64, intermediateSize: 64 };

describe('decodeWeightBytes', () => {
  beforeAll(async () => {
    await initBackend();
  });

  it('counts the running layers\' seven projections and the LM head, f32 and in blocks', () => {
    const model = randomModel(config, 3);
    // per layer: q, o 32×32; k, v 32×16 (2 kv heads of 8); gate, up, down 32×64
    const perLayer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64;
    expect(decodeWeightBytes(model, [0, 1, 2, 3])).toBe(4 * (64 * 32 + 4 * perLayer));
    expect(decodeWeightBytes(model, [0, 3])).toBe(4 * (64 * 32 + 2 * perLayer));
    const q = quantizeModel(model, 'q4_1');
    const head = q.blockWeights!.lmHead;
    expect(decodeWeightBytes(q, [])).toBe(head.rows * rowBytes(head.type, head.cols));
    expect(decodeWeightBytes(q, [1])).toBe(decodeWeightBytes(q, []) + (perLayer / 32) * 20); // q4_1: 20 bytes per 32 weights
    model.dispose();
    q.dispose();
  });
});
