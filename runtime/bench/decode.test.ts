import * as tf from '@tensorflow/tfjs-core';
import { expect, it } from 'vitest';
import './all.js';
import { median, pairRatios } from './decode.js';
import { getBench, listBenches } from './index.js';

it('registers decode and reports its figures (random 1-layer model, Skein side only)', async () => {
  expect(listBenches().map((b) => b.name)).toContain('decode');
  const lines: string[] = [];
  const figures = (await getBench('decode')!.run({
    log: (l) => lines.push(l),
    args: { model: 'random', layers: '1', vocab: '2048', steps: '2', reps: '1', types: 'q4_1' },
  })) as { figures: Record<string, { skein: number; llamacpp: number | null }>; ratios: Record<string, number> };
  expect(Object.keys(figures.figures)).toEqual(['decode_b1_q4_1', 'prefill128_q4_1', 'decode_b16', 'step_ms']);
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
