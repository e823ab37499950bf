import * as tf from '@tensorflow/tfjs-core';
import { expect, it } from 'vitest';
import './all.js';
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
