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
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import type { LoadedModel } from '../model/types.js';
import type { EngineTuning, ForwardFn } from '../scheduler/scheduler.js';
import { EngineFront } from './front.js';
import { LocalTransport } from './local.js';
import { loadEngineModel, loadSpecTokenizer, modelSpecName, type ModelSpec } from './model-spec.js';
import { tokenSampler } from './sampling.js';
import { SupervisedTransport } from './supervisor.js';
import { modelFacts } from '../stages/registry.js';
import { startWorker } from './worker-client.js';

export type { ModelSpec } from './model-spec.js';
export type { EngineTuning } from '../scheduler/scheduler.js';
export { EngineFront } from './front.js';

export interface CreateEngineOptions extends EngineTuning {
  /** A model folder, a name under models/, or a random model's shape and seed. */
  model: ModelSpec;
  /** Where the model runs (default 'worker'). */
  thread?: 'worker' | 'main';
  /** First delay before restarting a worker that exited (default 100 ms, doubling to 10 s). */
  restartBackoffMs?: number;
}

/**
 * The engine on this thread over a model the caller has loaded and keeps owning (closing
 * the engine leaves it loaded): training's evaluation runs its greedy answers here, with
 * `forward` shaping every call (a layer subset to measure layer dropout).
 */
export function engineOnModel(
  model: LoadedModel,
  tokenizer: ModelTokenizer | null,
  options: EngineTuning & { forward?: ForwardFn; modelName?: string } = {},
): EngineFront {
  const { modelName = 'in-memory', ...rest } = options;
  const transport = new LocalTransport({ model, tokenizer, sampler: tokenSampler, ...rest, keepModel: true });
  return new EngineFront({ modelName, backend: 'in-process', tokenizer, transport });
}

export async function createEngine(options: CreateEngineOptions): Promise<EngineFront> {
  const { model: spec, thread = 'worker', restartBackoffMs, ...tuning } = options;
  const modelName = modelSpecName(spec);
  const facts = modelFacts(spec);
  if (thread === 'worker') {
    const tokenizer = loadSpecTokenizer(spec);
    // A worker that exits is restarted with the same model and settings (runtime/engine/supervisor.ts).
    const { transport, backend } = await SupervisedTransport.start((onDeath) => startWorker({ model: spec, ...tuning }, onDeath), {
      ...(restartBackoffMs !== undefined ? { backoffMs: restartBackoffMs } : {}),
    });
    return new EngineFront({ modelName, backend, tokenizer, transport, facts });
  }
  const backend = await initBackend();
  const { model, tokenizer } = await loadEngineModel(spec);
  const transport = new LocalTransport({ model, tokenizer, sampler: tokenSampler, ...tuning });
  return new EngineFront({ modelName, backend, tokenizer, transport, facts });
}
