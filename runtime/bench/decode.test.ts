import * as tf from '@tensorflow/tfjs-core';
import { expect, it } from 'vitest';
import './all.js';
import { median, pairRatios, smolLm2Shape, stepBytes } from './decode.js';
import { getBench, listBenches } from './index.js';

it('registers decode and reports its figures (random 1-layer model, Skein side only)', async () => {
  expect(listBenches().map((b) => b.name)).toContain('decode');
  const lines: string[] = [];
  const figures = (await getBench('decode')!.run({
    log: (l) => lines.push(l),
    args: { model: 'random', layers: '1', vocab: '2048', steps: '2', reps: '1', types: 'q4_1' },
  })) as { figures: Record<string, Record<string, number | null>>; ratios: Record<string, number> };
  expect(Object.keys(figures.figures)).toEqual(['decode_b1_q4_1', 'prefill128_q4_1', 'decode_b16', 'step_ms', 'step_bytes']);
  expect(figures.figures.step_bytes!.ratio).toBeGreaterThan(1);
  expect(figures.figures.decode_b1_q4_1!.skein).toBeGreaterThan(0);
  expect(figures.figures.decode_b1_q4_1!.llamacpp).toBeNull();
  expect(figures.ratios.step1024_vs_step128).toBeGreaterThan(0);
  expect(lines.some((l) => l.includes('Skein only'))).toBe(true);
  expect(lines.some((l) => l.includes('blocks true'))).toBe(true);
  expect(tf.memory().numTensors).toBe(0);
}, 120_000); // the 1,024-token prefill of the context-growth figure, on a loaded host

it('takes a growth as the median of each repetition\'s ratio, not the ratio of the medians', () => {
  // A quiet repetition's step at 128 paired with a busy one's at 1,024 would read ×1.4 here.
  const at128 = [5.0, 6.0, 5.1], at1024 = [6.0, 7.0, 6.2];
  expect(pairRatios(at1024, at128).map((x) => Math.round(x * 1000) / 1000)).toEqual([1.2, 1.167, 1.216]);
  expect(median(pairRatios(at1024, at128))).toBeCloseTo(1.2, 6);
  expect(median(at1024) / median(at128)).toBeCloseTo(1.216, 3);
});

it('counts a step\'s bytes as its weights plus every layer\'s K and V rows', () => {
  // SmolLM2-135M: 30 layers × 3 KV heads × (K + V) × 64 f16 values = 23,040 bytes a token.
  const shape = smolLm2Shape as Parameters<typeof stepBytes>[0];
  const at = stepBytes(shape, 98e6, 'f16');
  expect(at(1) - at(0)).toBe(23_040);
  expect(at(1024) / at(128)).toBeCloseTo((98e6 + 1024 * 23_040) / (98e6 + 128 * 23_040), 12);
  // q8 rows: 64 int8 values and a 4-byte scale, 68 bytes against f16's 128.
  expect(stepBytes(shape, 0, 'q8')(1)).toBe(30 * 3 * 2 * 68);
});
