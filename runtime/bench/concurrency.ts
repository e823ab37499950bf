/**
 * `skein bench concurrency`: 16 independent requests submitted at once (continuous
 * batching: one forward per step for all of them) vs the same 16 served one at a time,
 * on the same engine, interleaved in the same run. Short prompts and 64-token answers:
 * the decode-bound shape of agent steps. Ratio concurrent16_vs_serial = concurrent
 * throughput / serial throughput (generated tokens per second, medians of 3).
 */
import { createEngine } from '../engine/index.js';
import { benchModel, benchPrompt, interleaved, median, percentile, round, timedGenerate, warmUp, type Timed } from '../engine/bench-support.js';
import type { EngineFront } from '../engine/front.js';
import { registerBench } from './index.js';

const N = 16;
const PROMPT = 32;
const TOKENS = 64;
const REPS = 3;

let batch = 0;
const requests = () => {
  const seed = ++batch * 100;
  return Array.from({ length: N }, (_, i) => ({ ids: benchPrompt(PROMPT, seed + i), sampling: { maxTokens: TOKENS } }));
};

async function concurrent(engine: EngineFront) {
  const t0 = performance.now();
  const runs = await Promise.all(requests().map((r) => timedGenerate(engine, r)));
  return { ms: performance.now() - t0, runs };
}

async function serial(engine: EngineFront) {
  const t0 = performance.now();
  const runs: Timed[] = [];
  for (const r of requests()) runs.push(await timedGenerate(engine, r));
  return { ms: performance.now() - t0, runs };
}

registerBench('concurrency', {
  description: '16 concurrent requests vs the same served one at a time (throughput)',
  async run({ log, args }) {
    const engine = await createEngine({ model: benchModel(args), thread: 'main' });
    try {
      await warmUp(engine);
      const [conc, ser] = await interleaved(REPS, [() => concurrent(engine), () => serial(engine)]);
      const tps = (x: { ms: number; runs: Timed[] }) => (x.runs.reduce((a, r) => a + r.completionTokens, 0) * 1000) / x.ms;
      const concTps = median(conc!.map(tps));
      const serTps = median(ser!.map(tps));
      const ttfts = (xs: { runs: Timed[] }[]) => xs.flatMap((x) => x.runs.map((r) => r.ttftMs));
      log(`concurrency: ${concTps.toFixed(1)} tok/s concurrent vs ${serTps.toFixed(1)} tok/s serial (${(concTps / serTps).toFixed(2)}×)`);
      return {
        ratios: { concurrent16_vs_serial: round(concTps / serTps) },
        model: engine.modelName,
        requests: N,
        promptTokens: PROMPT,
        completionTokens: TOKENS,
        concurrent: {
          wallMs: conc!.map((x) => round(x.ms, 1)),
          tokensPerSec: round(concTps, 1),
          ttftP50Ms: round(percentile(ttfts(conc!), 50), 1),
          ttftP99Ms: round(percentile(ttfts(conc!), 99), 1),
        },
        serial: { wallMs: ser!.map((x) => round(x.ms, 1)), tokensPerSec: round(serTps, 1), ttftP50Ms: round(percentile(ttfts(ser!), 50), 1) },
      };
    } finally {
      await engine.close();
    }
  },
});
