import * as tf from '@tensorflow/tfjs-core';
import { expect, it } from 'vitest';
import './all.js';
import { getBench } from './index.js';

it('kv measures the q8 cache against f16 side by side (random 1-layer model, no text figures)', async () => {
  const lines: string[] = [];
  const out = (await getBench('kv')!.run({
    log: (l) => lines.push(l),
    args: { model: 'random', layers: '1', vocab: '2048', steps: '2', reps: '1', long: '0' },
  })) as { figures: { step_ms: Record<string, number>; step_bytes: Record<string, { at128: number; at1024: number; ratio: number }>; memory_mib: Record<string, { tensors: number; copies: number }>; text?: unknown }; ratios: Record<string, number> };
  expect(Object.keys(out.figures.step_ms).sort()).toEqual(['f16_1024', 'f16_128', 'q8_1024', 'q8_128']);
  for (const x of Object.values(out.figures.step_ms)) expect(x).toBeGreaterThan(0);
  expect(Object.keys(out.ratios).sort()).toEqual(['decode_ctx1024_q8_vs_f16', 'decode_ctx128_q8_vs_f16', 'step1024_vs_step128_f16', 'step1024_vs_step128_q8']);
  // q8 rows are 68 bytes a KV head against f16's 128: fewer bytes a step, a smaller floor.
  expect(out.figures.step_bytes.q8!.at1024 - out.figures.step_bytes.q8!.at128).toBeLessThan(out.figures.step_bytes.f16!.at1024 - out.figures.step_bytes.f16!.at128);
  expect(out.figures.step_bytes.q8!.ratio).toBeLessThan(out.figures.step_bytes.f16!.ratio);
  expect(out.figures.memory_mib.q8!.copies).toBeLessThan(out.figures.memory_mib.f16!.copies);
  expect(out.figures.memory_mib.q8!.tensors).toBe(out.figures.memory_mib.f16!.tensors);
  expect(out.figures.text).toBeUndefined();
  expect(lines.some((l) => l.includes('random SmolLM2-shaped model'))).toBe(true);
  expect(tf.memory().numTensors).toBe(0);
}, 120_000);
