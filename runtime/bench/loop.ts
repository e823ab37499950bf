/**
 * `skein bench loop`: how responsive the main thread's event loop stays while 16
 * sequences decode, with the model in a worker thread (the default) and, for contrast,
 * on the main thread. Measured with perf_hooks.monitorEventLoopDelay over the decode.
 * Ratio loop_p99_main_vs_worker = p99 delay with the model on the main thread / in the worker.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createEngine } from '../engine/index.js';
import { benchModel, benchPrompt, round, timedGenerate, warmUp } from '../engine/bench-support.js';
import { registerBench } from './index.js';

const N = 16;
const PROMPT = 32;
const TOKENS = 48;

async function measure(thread: 'worker' | 'main', args: Record<string, string> | undefined) {
  const engine = await createEngine({ model: benchModel(args), thread });
  try {
    await warmUp(engine);
    const h = monitorEventLoopDelay({ resolution: 5 });
    h.enable();
    const t0 = performance.now();
    const runs = await Promise.all(
      Array.from({ length: N }, (_, i) => timedGenerate(engine, { ids: benchPrompt(PROMPT, i + 1), sampling: { maxTokens: TOKENS } })),
    );
    const ms = performance.now() - t0;
    h.disable();
    const tokens = runs.reduce((a, r) => a + r.completionTokens, 0);
    return {
      p50Ms: round(h.percentile(50) / 1e6, 2),
      p99Ms: round(h.percentile(99) / 1e6, 2),
      maxMs: round(h.max / 1e6, 2),
      tokensPerSec: round((tokens * 1000) / ms, 1),
      model: engine.modelName,
    };
  } finally {
    await engine.close();
  }
}

registerBench('loop', {
  description: 'main-thread event-loop delay (p99) while 16 sequences decode, worker vs main thread',
  async run({ log, args }) {
    const worker = await measure('worker', args);
    const main = await measure('main', args);
    log(`loop: event-loop delay p99 ${worker.p99Ms} ms with the model in a worker, ${main.p99Ms} ms on the main thread`);
    return {
      ratios: { loop_p99_main_vs_worker: round(main.p99Ms / Math.max(worker.p99Ms, 0.01)) },
      model: worker.model,
      sequences: N,
      worker: { p50Ms: worker.p50Ms, p99Ms: worker.p99Ms, maxMs: worker.maxMs, tokensPerSec: worker.tokensPerSec },
      main: { p50Ms: main.p50Ms, p99Ms: main.p99Ms, maxMs: main.maxMs, tokensPerSec: main.tokensPerSec },
    };
  },
});
