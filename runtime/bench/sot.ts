/**
 * `skein bench sot`: Skeleton-of-Thought expansion on the shared runtime. K point
 * expansions share one question+skeleton prefix; batched, the prefix is computed once and
 * its KV blocks are shared by every branch (the prefix tree holds the twins back until
 * the first has committed it), and the K decodes run in one forward per step. Compared,
 * in the same run, with the K expansions served one after another without sharing.
 * Ratios: sotK_batched_vs_serial = serial wall time / batched wall time (a speedup);
 * kv_bytes_shared_vs_unshared = peak KV bytes batched with sharing / batched without
 * (K = 8; below 1 is memory saved).
 */
import { createEngine } from '../engine/index.js';
import { benchModel, benchPrompt, KvPeak, round, timedGenerate } from '../engine/bench-support.js';
import type { EngineFront } from '../engine/front.js';
import { registerBench } from './index.js';

const PREFIX = 384; // question + skeleton
const POINT = 12; // "Point i: <title>" tokens after the prefix
const EXPAND = 32; // tokens generated per point

function requests(k: number, seed: number) {
  const prefix = benchPrompt(PREFIX, seed);
  return Array.from({ length: k }, (_, i) => ({ ids: [...prefix, ...benchPrompt(POINT, seed * 100 + i + 1)], sampling: { maxTokens: EXPAND } }));
}

async function batched(engine: EngineFront, k: number, seed: number) {
  const peak = new KvPeak(engine);
  const t0 = performance.now();
  const runs = await Promise.all(requests(k, seed).map((r) => timedGenerate(engine, r, peak)));
  return { ms: performance.now() - t0, kvBytes: peak.bytes, cached: runs.reduce((a, r) => a + r.cachedPromptTokens, 0) };
}

async function serial(engine: EngineFront, k: number, seed: number) {
  const peak = new KvPeak(engine);
  const t0 = performance.now();
  for (const r of requests(k, seed)) await timedGenerate(engine, r, peak);
  return { ms: performance.now() - t0, kvBytes: peak.bytes };
}

registerBench('sot', {
  description: 'SoT expansion: 4 and 8 points batched over a shared prefix vs one after another',
  async run({ log, args }) {
    const model = benchModel(args);
    const shared = await createEngine({ model, thread: 'main' });
    const unshared = await createEngine({ model, thread: 'main', prefixSharing: false });
    try {
      await timedGenerate(shared, { ids: benchPrompt(64, 999), sampling: { maxTokens: 4 } }); // warm-up
      await timedGenerate(unshared, { ids: benchPrompt(64, 998), sampling: { maxTokens: 4 } });
      const figures: Record<string, unknown> = { model: shared.modelName, prefixTokens: PREFIX, pointTokens: POINT, expandTokens: EXPAND };
      const ratios: Record<string, number> = {};
      for (const k of [4, 8]) {
        const b = await batched(shared, k, k);
        const s = await serial(unshared, k, k + 10);
        const bu = await batched(unshared, k, k + 20);
        ratios[`sot${k}_batched_vs_serial`] = round(s.ms / b.ms);
        if (k === 8) ratios.kv_bytes_shared_vs_unshared = round(b.kvBytes / bu.kvBytes, 3);
        figures[`sot${k}`] = {
          batchedMs: round(b.ms, 1),
          serialMs: round(s.ms, 1),
          batchedUnsharedMs: round(bu.ms, 1),
          kvBytesBatchedShared: b.kvBytes,
          kvBytesBatchedUnshared: bu.kvBytes,
          kvBytesSerial: s.kvBytes,
          cachedPromptTokens: b.cached,
        };
        log(`sot k=${k}: batched ${b.ms.toFixed(0)} ms, serial ${s.ms.toFixed(0)} ms (${(s.ms / b.ms).toFixed(2)}×); KV peak ${(b.kvBytes / 2 ** 20).toFixed(1)} MiB shared vs ${(bu.kvBytes / 2 ** 20).toFixed(1)} MiB unshared`);
      }
      return { ratios, ...figures };
    } finally {
      await shared.close();
      await unshared.close();
    }
  },
});
