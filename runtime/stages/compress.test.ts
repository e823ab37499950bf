import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { loadWarmTempModel, type WarmModel } from '../../test/fixtures/warm-model.js';
import type { LoadedCheckpoint } from '../checkpoint/load.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { forward } from '../model/forward.js';
import { budget, compressPrompt, negLogProb, PromptCompressor, selfInformation, unitScore } from './compress.js';

const PASSAGE =
  'The river runs past the old mill and the town square. In the spring the water is high, ' +
  "and the children don't swim there. The code word for the blue lantern is gentlefolk. " +
  'Farmers bring their grain to the mill in 1801-1865 and the miller keeps the price at 3.14 coins. ' +
  'The secret number of the green door is 85448. Nobody remembers who built the bridge, ' +
  'but everyone agrees it was built with care, stone by stone, over many long and cold winters.';
const QUESTION = 'Question: What is the secret number of the green door?';

let model: LoadedCheckpoint;
let tok: ModelTokenizer;
let baseline: number;
let warm: WarmModel;

beforeAll(async () => {
  warm = await loadWarmTempModel({ maxPositionEmbeddings: 4096, seed: 3 });
  ({ model, tok, baseline } = warm);
});
afterAll(() => warm.dispose());

function chatIds(): number[] {
  return tok.encode(tok.renderChat([{ role: 'user', content: `${PASSAGE}\n\n${QUESTION}` }]));
}

/** Bare words of a text (punctuation around them stripped). */
function words(text: string): string[] {
  return text
    .split(/\s+/)
    .map((w) => w.replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, ''))
    .filter((w) => w.length > 0);
}

describe('compressPrompt', () => {
  it('keeps about `rate` of the tokens', () => {
    const ids = tok.encode(PASSAGE);
    for (const rate of [0.5, 0.33, 0.7]) {
      const out = compressPrompt(model, tok, ids, { rate, segmentTokens: 48 });
      expect(out.originalTokens).toBe(ids.length);
      expect(out.keptTokens).toBe(out.ids.length);
      expect(Math.abs(out.keptTokens / ids.length - rate)).toBeLessThan(0.03);
    }
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('drops whole words only', () => {
    const original = new Set(words(PASSAGE));
    const ids = tok.encode(PASSAGE);
    for (const rate of [0.5, 0.33]) {
      const text = tok.decode(compressPrompt(model, tok, ids, { rate, segmentTokens: 40 }).ids);
      const got = words(text);
      expect(got.length).toBeGreaterThan(5);
      for (const w of got) expect(original, `"${w}" in "${text}"`).toContain(w);
    }
  });

  it('keeps special tokens, chat headers, newlines, keep phrases and the protected suffix', () => {
    const ids = chatIds();
    const suffix = tok.encode(`\n\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`).length;
    const out = compressPrompt(model, tok, ids, { rate: 0.33, keep: ['gentlefolk', 'green door'], protectedSuffix: suffix, segmentTokens: 64 });
    const text = tok.decode(out.ids);
    expect(out.ids.slice(-suffix)).toEqual(ids.slice(-suffix));
    expect(text.endsWith(`\n\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`)).toBe(true);
    expect(text.startsWith('<|im_start|>system\n')).toBe(true);
    expect(text).toContain('<|im_end|>\n<|im_start|>user\n');
    expect(text).toContain('gentlefolk');
    expect(text.split('green door').length).toBeGreaterThanOrEqual(3); // passage + question
    expect(out.keptTokens).toBeLessThan(ids.length * 0.6);
  });

  it('rate 1 returns the prompt unchanged without running the model', () => {
    const ids = chatIds();
    const out = compressPrompt(model, tok, ids, { rate: 1 });
    expect(out.ids).toEqual(ids);
    expect(out.keptTokens).toBe(ids.length);
    expect(out.keptIndices).toEqual(ids.map((_, i) => i));
  });

  it('is deterministic', () => {
    const ids = chatIds();
    const a = compressPrompt(model, tok, ids, { rate: 0.5, segmentTokens: 50 });
    const b = compressPrompt(model, tok, ids, { rate: 0.5, segmentTokens: 50 });
    expect(a).toEqual(b);
  });

  it('leaves no tensors behind, also with a trimmed cache and when abandoned midway', () => {
    const ids = chatIds();
    const trimmed = compressPrompt(model, tok, ids, { rate: 0.5, segmentTokens: 32, maxCacheTokens: 40 });
    expect(Math.abs(trimmed.keptTokens / ids.length - 0.5)).toBeLessThan(0.03);
    expect(tf.memory().numTensors).toBe(baseline);
    const c = new PromptCompressor(model, tok, ids, { rate: 0.5, segmentTokens: 32 });
    expect(c.step()).toBe(false);
    expect(tf.memory().numTensors).toBeGreaterThan(baseline);
    c.dispose();
    c.dispose();
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('holds at most maxCacheTokens of KV between segments, however long the prompt', () => {
    const ids = tok.encode([PASSAGE, PASSAGE, PASSAGE, PASSAGE].join(' '));
    expect(ids.length).toBeGreaterThan(1200);
    const bytes0 = tf.memory().numBytes;
    const c = model.config;
    const cap = 64;
    const capBytes = cap * c.numLayers * c.numKvHeads * c.headDim * 2 * 4; // k and v, f32
    const comp = new PromptCompressor(model, tok, ids, { rate: 0.5, segmentTokens: 100, maxCacheTokens: cap });
    let steps = 0;
    while (!comp.step()) {
      steps++;
      expect(tf.memory().numBytes - bytes0).toBeLessThanOrEqual(capBytes);
    }
    expect(steps).toBeGreaterThan(10);
    expect(Math.abs(comp.result().keptTokens / ids.length - 0.5)).toBeLessThan(0.03);
    comp.dispose();
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('refuses a bad rate', () => {
    expect(() => compressPrompt(model, tok, [1, 2, 3], { rate: 0 })).toThrow(BadRequestError);
    expect(() => compressPrompt(model, tok, [1, 2, 3], { rate: 1.5 })).toThrow(BadRequestError);
  });
});

describe('selfInformation (the carried cache)', () => {
  it('scored segment by segment equals one forward over the whole prompt', () => {
    const ids = chatIds();
    const [whole] = forward(model, [{ ids, logits: 'all' }]);
    whole!.newKv.forEach((e) => e && tf.dispose([e.k, e.v]));
    const carried = selfInformation(model, ids, { segmentTokens: 37 });
    expect(carried[0]).toBe(Infinity);
    let maxDiff = 0;
    for (let i = 1; i < ids.length; i++) maxDiff = Math.max(maxDiff, Math.abs(carried[i]! - negLogProb(whole!.logits[i - 1]!, ids[i]!)));
    expect(maxDiff).toBeLessThan(1e-4);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('a later segment is scored over the compressed text before it', () => {
    const ids = tok.encode(PASSAGE);
    const c = new PromptCompressor(model, tok, ids, { rate: 0.4, segmentTokens: 60 });
    c.step();
    const keptBefore = c.keptIndices.slice();
    expect(keptBefore.length).toBeLessThan(c.lastSegment!.to);
    c.step();
    const { from, to, scores } = c.lastSegment!;
    c.dispose();
    const context = [...keptBefore.map((i) => ids[i]!), ...ids.slice(from, to)];
    const [ref] = forward(model, [{ ids: context, logits: 'all' }]);
    ref!.newKv.forEach((e) => e && tf.dispose([e.k, e.v]));
    for (let j = 0; j < to - from; j++) {
      expect(scores[j]).toBeCloseTo(negLogProb(ref!.logits[keptBefore.length + j - 1]!, ids[from + j]!), 4);
    }
    expect(tf.memory().numTensors).toBe(baseline);
  });
});

describe('unitScore', () => {
  it("is the unit's total self-information (chain rule), not its mean", () => {
    const info = [0, 6, 0.5, 0.5, 1];
    expect(unitScore(info, 1, 4)).toBe(7); // a rare word: surprising start, predictable rest
    expect(unitScore(info, 4, 5)).toBe(1);
  });
});

describe('budget', () => {
  it('counts forced tokens as kept', () => {
    expect(budget(0.5, 100, 0)).toBe(0.5);
    expect(budget(0.5, 100, 20)).toBeCloseTo(30 / 80);
    expect(budget(0.1, 100, 20)).toBe(0);
    expect(budget(0.5, 10, 10)).toBe(1);
  });
});
