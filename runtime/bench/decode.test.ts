import * as tf from '@tensorflow/tfjs-core';
import { expect, it } from 'vitest';
import './all.js';
import { getBench, listBenches } from './index.js';

it('registers decode and reports its figures (1-layer model)', async () => {
  expect(listBenches().map((b) => b.name)).toContain('decode');
  const lines: string[] = [];
  const figures = await getBench('decode')!.run({ log: (l) => lines.push(l), args: { layers: '1', steps: '4' } });
  expect(Object.keys(figures.decodeTokensPerSec as object)).toEqual(['1', '4', '16']);
  expect(figures.prefillTokensPerSec).toBeGreaterThan(0);
  expect(figures.decodeWeightsGBps).toBeGreaterThan(0);
  expect(lines.some((l) => l.startsWith('decode: batch 16'))).toBe(true);
  expect(tf.memory().numTensors).toBe(0);
});
