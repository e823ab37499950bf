/**
 * Shared pieces of the runtime benchmarks (sot, concurrency, prefix, loop): which model
 * to run (models/skein-mini when present, else a random model of a moderate shape),
 * prompts as token ids, and a generate call timed on the caller's side, with the peak
 * KV memory seen while it ran.
 *
 * @example
 * const engine = await createEngine({ model: benchModel(opts.args), thread: 'main' });
 * const r = await timedGenerate(engine, { ids: benchPrompt(64, 1), sampling: { maxTokens: 16 } });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lastValueFrom, tap, toArray } from 'rxjs';
import { MODELS_DIR } from '../checkpoint/load.js';
import type { ModelConfig } from '../model/types.js';
import type { EngineFront } from './front.js';
import type { ModelSpec } from './model-spec.js';
import type { GenerateEvent, GenerateRequest } from '../../core/engine.js';

/** About 10M parameters: big enough that batching matters, small enough for 2 cores. */
export const benchShape: Partial<ModelConfig> = {
  vocabSize: 4096,
  hiddenSize: 256,
  intermediateSize: 768,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 64,
  maxPositionEmbeddings: 4096,
  // No end-of-sequence id, so every request runs its full token count in every mode.
  eosTokenIds: [],
};

/** `--model NAME|DIR`, else models/skein-mini when it exists, else the random bench shape. */
export function benchModel(args: Record<string, string> = {}): ModelSpec {
  if (args.model) return args.model;
  if (fs.existsSync(path.join(MODELS_DIR, 'skein-mini', 'config.json'))) return 'skein-mini';
  return { random: benchShape, seed: 1 };
}

/** Distinct-looking token ids below 256 (valid in any vocabulary the runtime loads). */
export function benchPrompt(length: number, seed: number): number[] {
  let x = (seed * 2654435761) >>> 0 || 1;
  return Array.from({ length }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return 32 + ((x >>> 0) % 200);
  });
}

export interface Timed {
  ttftMs: number;
  totalMs: number;
  completionTokens: number;
  cachedPromptTokens: number;
}

export class KvPeak {
  blocks = 0;
  constructor(private readonly engine: EngineFront) {}
  sample(): void {
    this.blocks = Math.max(this.blocks, this.engine.kvStats().kvBlocksUsed);
  }
  get bytes(): number {
    return this.blocks * this.engine.kvStats().kvBytesPerBlock;
  }
}

/** One generation timed on the caller's side: time to first token, total time, and its done event. */
export async function timedRun(
  engine: EngineFront,
  request: GenerateRequest,
  peak?: KvPeak,
): Promise<{ ttftMs: number; totalMs: number; done: Extract<GenerateEvent, { type: 'done' }> }> {
  const t0 = performance.now();
  let tFirst = 0;
  const events = await lastValueFrom(
    engine.generate(request).pipe(
      tap((e: GenerateEvent) => {
        if (e.type === 'token' && tFirst === 0) tFirst = performance.now();
        peak?.sample();
      }),
      toArray(),
    ),
  );
  const t1 = performance.now();
  const done = events.at(-1) as Extract<GenerateEvent, { type: 'done' }>;
  return { ttftMs: (tFirst || t1) - t0, totalMs: t1 - t0, done };
}

export async function timedGenerate(engine: EngineFront, request: GenerateRequest, peak?: KvPeak): Promise<Timed> {
  const { ttftMs, totalMs, done } = await timedRun(engine, request, peak);
  return {
    ttftMs,
    totalMs,
    completionTokens: done.usage.completionTokens,
    cachedPromptTokens: done.usage.cachedPromptTokens,
  };
}

export const round = (x: number, digits = 2): number => Number(x.toFixed(digits));

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Runs each contender `reps` times, interleaved (A B A B ...), so that a machine whose
 * load drifts during the run biases neither side; returns every contender's results.
 */
export async function interleaved<T>(reps: number, contenders: ((rep: number) => Promise<T>)[]): Promise<T[][]> {
  const out: T[][] = contenders.map(() => []);
  for (let rep = 0; rep < reps; rep++) {
    for (let c = 0; c < contenders.length; c++) out[c]!.push(await contenders[c]!(rep));
  }
  return out;
}

/** A few small batched requests, so that kernels for batched shapes are warm before timing. */
export async function warmUp(engine: EngineFront): Promise<void> {
  await Promise.all([1, 2, 3, 4].map((i) => timedGenerate(engine, { ids: benchPrompt(48, 900 + i), sampling: { maxTokens: 8 } })));
}
