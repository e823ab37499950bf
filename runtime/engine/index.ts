/**
 * The shared model runtime behind the Engine interface. `createEngine` loads a model and
 * starts one scheduler (continuous batching over a paged, prefix-shared KV pool) that
 * every request of every run goes through. By default the model runs in a worker thread
 * so that the event loop serving RxJS pipelines and HTTP stays responsive; only token
 * ids, text and small figures cross the thread boundary, and a worker that exits is
 * restarted (runtime/engine/supervisor.ts).
 *
 * @example
 * const engine = await createEngine({ model: 'skein-mini' });
 * engine.generate({ prompt: 'Once', sampling: { maxTokens: 8 } }).subscribe((e) => {
 *   if (e.type === 'token') process.stdout.write(e.text);
 * });
 * await engine.close();
 */
import { initBackend } from '../backend.js';
import type { SchedulingPolicy } from '../scheduler/scheduler.js';
import { EngineFront } from './front.js';
import { LocalTransport } from './local.js';
import { loadEngineModel, loadSpecTokenizer, modelSpecName, type ModelSpec } from './model-spec.js';
import { tokenSampler } from './sampling.js';
import { SupervisedTransport } from './supervisor.js';
import { startWorker } from './worker-client.js';

export type { ModelSpec } from './model-spec.js';
export { EngineFront } from './front.js';

export interface CreateEngineOptions {
  /** A model folder, a name under models/, or a random model's shape and seed. */
  model: ModelSpec;
  /** KV memory budget in bytes (default 256 MiB). */
  kvBudgetBytes?: number;
  /** KV budget in blocks; overrides kvBudgetBytes. */
  kvBudgetBlocks?: number;
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** Where the model runs (default 'worker'). */
  thread?: 'worker' | 'main';
  /** Most sequences in one batch (default 32). */
  maxBatch?: number;
  /** Most new tokens in one forward (default 256). */
  maxStepTokens?: number;
  /** Most prompt tokens of one sequence per step (default 128). */
  prefillChunk?: number;
  /** Reuse KV across requests with a common prefix (default true; off for comparisons). */
  prefixSharing?: boolean;
  /** 'fcfs' (default) or 'fair' across owners. */
  policy?: SchedulingPolicy;
  /** First delay before restarting a worker that exited (default 100 ms, doubling to 10 s). */
  restartBackoffMs?: number;
}

export async function createEngine(options: CreateEngineOptions): Promise<EngineFront> {
  const { model: spec, thread = 'worker', restartBackoffMs, ...tuning } = options;
  const modelName = modelSpecName(spec);
  if (thread === 'worker') {
    const tokenizer = loadSpecTokenizer(spec);
    // A worker that exits is restarted with the same model and settings (runtime/engine/supervisor.ts).
    const { transport, backend } = await SupervisedTransport.start((onDeath) => startWorker({ model: spec, ...tuning }, onDeath), {
      ...(restartBackoffMs !== undefined ? { backoffMs: restartBackoffMs } : {}),
    });
    return new EngineFront({ modelName, backend, tokenizer, transport });
  }
  const backend = await initBackend();
  const { model, tokenizer } = await loadEngineModel(spec);
  const transport = new LocalTransport({ model, tokenizer, sampler: tokenSampler, ...tuning });
  return new EngineFront({ modelName, backend, tokenizer, transport });
}
