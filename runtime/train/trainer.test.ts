import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packDataset } from './data/pack.js';
import { PRESETS, paramTable, type TrainModelConfig } from './config.js';
import { DEFAULT_TRAIN, adamwStep, dropLayers, dropSchedule, learningRate, readCheckpoint, train, type TrainOptions } from './trainer.js';
import { exportModel, importForResume } from './export.js';
import { Rng } from './rng.js';

// Bytes as tokens (0..255) plus <|endoftext|> = 256 at the end of a 260-id vocabulary.
const cfg: TrainModelConfig = { ...PRESETS.tiny, vocabSize: 260, bosTokenId: 256, eosTokenId: 256 };
let dir: string;

function opts(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return {
    ...DEFAULT_TRAIN,
    out,
    data: path.join(dir, 'data'),
    config: cfg,
    steps: 4,
    workers: 2,
    tokensPerWorker: 32,
    seqLens: [
      { seqLen: 16, weight: 1 },
      { seqLen: 32, weight: 1 },
    ],
    warmupSteps: 2,
    evalEvery: 0,
    evalSeqLen: 16,
    layerDrop: 0.5,
    ...over,
  };
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skein-trainer-'));
  const docs = Array.from({ length: 40 }, (_, i) => `document ${i}: the quick brown fox jumps over the lazy dog ${i * 7}.`);
  const enc = { vocabSize: 260, encode: (t: string, out: number[] = []) => (out.push(...Buffer.from(t, 'latin1')), out) };
  packDataset(path.join(dir, 'data'), [{ name: 'text', train: docs, val: docs.slice(0, 4) }], enc, {
    eot: 256,
    specialTokens: { '<|endoftext|>': 256 },
    mix: { text: 1 },
    tokenizer: 'none',
  });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('schedule, dropout and AdamW', () => {
  it('warms up linearly and decays by cosine to minLr', () => {
    const o = { lr: 1, minLr: 0.1, warmupSteps: 10, steps: 110 };
    expect(learningRate(o, 0)).toBeCloseTo(0.1);
    expect(learningRate(o, 9)).toBeCloseTo(1);
    expect(learningRate(o, 60)).toBeCloseTo(0.55);
    expect(learningRate(o, 110)).toBeCloseTo(0.1);
  });

  it('never drops layer 0 and drops later layers more often', () => {
    dropSchedule(4, 0.3).forEach((p, l) => expect(p).toBeCloseTo(0.1 * l));
    const rng = Rng.fromSeed(2);
    const kept = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) for (const l of dropLayers(4, 0.6, rng)) kept[l]++;
    expect(kept[0]).toBe(4000);
    expect(kept[1]).toBeGreaterThan(kept[3]);
    expect(kept[3] / 4000).toBeCloseTo(0.4, 1);
  });

  it('applies one AdamW step as written (bias correction, decoupled decay, clipping)', () => {
    const t = paramTable({ ...cfg, numLayers: 0 });
    const p = new Float32Array(t.total).fill(0.5);
    const g = new Float32Array(t.total).fill(0);
    g[0] = 3;
    g[1] = 4; // global norm 5, clipped to 1 → (0.6, 0.8)
    const m = new Float32Array(t.total);
    const v = new Float32Array(t.total);
    const norm = adamwStep(t, p, g, m, v, 0, 0.01, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1 });
    expect(norm).toBeCloseTo(5);
    // First step: m̂/√v̂ = sign(g); embed is a matrix, so it decays.
    expect(p[0]).toBeCloseTo(0.5 * (1 - 0.001) - 0.01, 6);
    expect(p[2]).toBeCloseTo(0.5 * (1 - 0.001), 6);
  });
});

describe('train', () => {
  it('is deterministic for a seed and resumes exactly from a checkpoint', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    await train(opts(a));
    await train(opts(b, { steps: 2 }));
    await train(opts(b, { resume: true }));
    const ra = readCheckpoint(a);
    const rb = readCheckpoint(b);
    expect(ra.state.step).toBe(4);
    expect(rb.state.step).toBe(4);
    expect(rb.state.tokensSeen).toBe(ra.state.tokensSeen);
    expect(Buffer.from(rb.params.buffer).equals(Buffer.from(ra.params.buffer))).toBe(true);
    expect(Buffer.from(rb.m.buffer).equals(Buffer.from(ra.m.buffer))).toBe(true);
  });

  it('lowers the loss and reports held-out perplexity per part', async () => {
    const out = path.join(dir, 'c');
    const losses: number[] = [];
    const st = await train(opts(out, { steps: 30, lr: 1e-2, warmupSteps: 3, evalEvery: 30, workers: 1, onStep: (s) => losses.push(s.loss) }));
    expect(losses.slice(-5).reduce((x, y) => x + y) / 5).toBeLessThan(losses[0] - 1);
    expect(Object.keys(st.evals[0].perplexity)).toEqual(['text']);
    expect(st.evals[0].perplexity.text).toBeLessThan(260);
  });

  it('resumes from an exported model folder (f16 weights, bf16 moments)', async () => {
    const out = path.join(dir, 'd');
    await train(opts(out, { steps: 2 }));
    const r = readCheckpoint(out);
    const modelDir = path.join(dir, 'model');
    exportModel({ modelDir, config: cfg, params: r.params, resume: { state: r.state, m: r.m, v: r.v } });
    for (const f of ['config.json', 'model.safetensors', 'generation_config.json', 'resume/state.json', 'resume/optimizer.safetensors']) {
      expect(fs.existsSync(path.join(modelDir, f))).toBe(true);
    }
    const again = path.join(dir, 'e');
    const st = importForResume(modelDir, again);
    expect(st.step).toBe(2);
    const back = readCheckpoint(again);
    let maxErr = 0;
    for (let i = 0; i < back.params.length; i++) maxErr = Math.max(maxErr, Math.abs(back.params[i] - r.params[i]));
    expect(maxErr).toBeLessThan(2e-3);
    const fin = await train(opts(again, { resume: true }));
    expect(fin.step).toBe(4);
  });
});
