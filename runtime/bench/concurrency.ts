/**
 * `skein bench concurrency`: 16 independent requests submitted at once (continuous
 * batching: one forward per step for all of them) vs the same 16 served one at a time,
 * on the same engine in the same run. Ratio concurrent16_vs_serial = concurrent
 * throughput / serial throughput (generated tokens per second).
 */
import { createEngine } from '../engine/index.js';
import { benchModel, benchPrompt, percentile, round, timedGenerate } from '../engine/bench-support.js';
import { registerBench } from './index.js';

const N = 16;
const PROMPT = 32;
const TOKENS = 64;

registerBench('concurrency', {
  description: '16 concurrent requests vs the same served one at a time (throughput)',
  async run({ log, args }) {
    const engine = await createEngine({ model: benchModel(args), thread: 'main' });
    try {
      await timedGenerate(engine, { ids: benchPrompt(32, 999), sampling: { maxTokens: 4 } }); // warm-up
      const reqs = (seed: number) => Array.from({ length: N }, (_, i) => ({ ids: benchPrompt(PROMPT, seed + i), sampling: { maxTokens: TOKENS } }));
      let t0 = performance.now();
      const conc = await Promise.all(reqs(1).map((r) => timedGenerate(engine, r)));
      const concMs = performance.now() - t0;
      t0 = performance.now();
      const ser = [];
      for (const r of reqs(100)) ser.push(await timedGenerate(engine, r));
      const serMs = performance.now() - t0;
      const tokens = (rs: { completionTokens: number }[]) => rs.reduce((a, r) => a + r.completionTokens, 0);
      const concTps = (tokens(conc) * 1000) / concMs;
      const serTps = (tokens(ser) * 1000) / serMs;
      log(`concurrency: ${concTps.toFixed(1)} tok/s concurrent vs ${serTps.toFixed(1)} tok/s serial (${(concTps / serTps).toFixed(2)}×)`);
      return {
        ratios: { concurrent16_vs_serial: round(concTps / serTps) },
        model: engine.modelName,
        requests: N,
        promptTokens: PROMPT,
        completionTokens: TOKENS,
        concurrent: { wallMs: round(concMs, 1), tokensPerSec: round(concTps, 1), ttftP50Ms: round(percentile(conc.map((r) => r.ttftMs), 50), 1), ttftP99Ms: round(percentile(conc.map((r) => r.ttftMs), 99), 1) },
        serial: { wallMs: round(serMs, 1), tokensPerSec: round(serTps, 1), ttftP50Ms: round(percentile(ser.map((r) => r.ttftMs), 50), 1) },
      };
    } finally {
      await engine.close();
    }
  },
});
