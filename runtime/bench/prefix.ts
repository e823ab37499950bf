/**
 * `skein bench prefix`: a request whose first 1,000 tokens equal those of a request that
 * already finished reuses their KV from the prefix tree and only computes its own tail.
 * Compared with the same-sized request on a cold prefix, in the same run. Ratio
 * prefix_warm_vs_cold_ttft = cold time to first token / warm time to first token.
 */
import { createEngine } from '../engine/index.js';
import { benchModel, benchPrompt, round, timedGenerate, warmUp } from '../engine/bench-support.js';
import { registerBench } from './index.js';

const PREFIX = 1000;
const TAIL = 16;
const TOKENS = 8;
const ROUNDS = 3;

registerBench('prefix', {
  description: 'TTFT of a request sharing a 1,000-token prefix with a finished one vs cold',
  async run({ log, args }) {
    const engine = await createEngine({ model: benchModel(args), thread: 'main' });
    try {
      await warmUp(engine);
      const cold: number[] = [];
      const warm: number[] = [];
      let cached = 0;
      for (let r = 0; r < ROUNDS; r++) {
        const prefix = benchPrompt(PREFIX, r + 1);
        const first = await timedGenerate(engine, { ids: [...prefix, ...benchPrompt(TAIL, 50 + r)], sampling: { maxTokens: TOKENS } });
        const second = await timedGenerate(engine, { ids: [...prefix, ...benchPrompt(TAIL, 80 + r)], sampling: { maxTokens: TOKENS } });
        cold.push(first.ttftMs);
        warm.push(second.ttftMs);
        cached = second.cachedPromptTokens;
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const ratio = mean(cold) / mean(warm);
      log(`prefix: TTFT cold ${mean(cold).toFixed(1)} ms, warm ${mean(warm).toFixed(1)} ms (${ratio.toFixed(1)}×), ${cached} prompt tokens from cache`);
      return {
        ratios: { prefix_warm_vs_cold_ttft: round(ratio) },
        model: engine.modelName,
        prefixTokens: PREFIX,
        tailTokens: TAIL,
        coldTtftMs: cold.map((x) => round(x, 1)),
        warmTtftMs: warm.map((x) => round(x, 1)),
        cachedPromptTokens: cached,
      };
    } finally {
      await engine.close();
    }
  },
});
