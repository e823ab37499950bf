import * as tf from '@tensorflow/tfjs-core';
import { expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import './all.js';
import { getBench } from './index.js';

it('bench big: a shrunken Llama-3.2-1B shape written, loaded onto the kernels and run (Skein side only)', async () => {
  const lines: string[] = [];
  const out = (await getBench('big')!.run({
    log: (l) => lines.push(l),
    args: { layers: '1', vocab: '512', hidden: '128', inter: '256', steps: '2', reps: '1', smollm2: '0', llamacpp: '0', types: 'q4_0', dir: tempDir('skein-bench-big-') },
  })) as { figures: Record<string, Record<string, number | null>>; ratios: Record<string, number> };
  expect(out.figures.decode_b1_1b_q4_0!.skein).toBeGreaterThan(0);
  expect(out.figures.decode_b1_1b_q4_0!.llamacpp).toBeNull();
  expect(out.figures.prefill128_1b_q4_0!.skein).toBeGreaterThan(0);
  const mem = out.figures.memory_1b_q4_0!;
  expect(mem.skeinKernelsMiB).toBeGreaterThanOrEqual(0);
  expect(mem.skeinTfjsHeapMiB).toBeGreaterThan(0);
  expect(mem.llamacppRssAddedMiB).toBeNull();
  expect(out.ratios).toEqual({});
  expect(lines.some((l) => l.includes('Skein loaded'))).toBe(true);
  expect(tf.memory().numTensors).toBe(0);
}, 120_000);
