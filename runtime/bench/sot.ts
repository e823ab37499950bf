/**
 * `skein bench sot`: Skeleton-of-Thought expansion on the shared runtime. K point
 * expansions share one question+skeleton prefix; batched, the prefix is computed once and
 * its KV blocks are shared by every branch (the scheduler holds the twins back until the
 * first has committed the prefix), and the K decodes run in one forward per step. Compared,
 * in the same run and interleaved, with the K expansions served one after another without
 * sharing. Ratios: sotK_batched_vs_serial = serial wall time / batched wall time (a
 * speedup, medians of 2); kv_bytes_shared_vs_unshared = peak KV bytes of the 8 branches
 * batched with sharing / batched without (below 1 is memory saved).
 */
import { createEngine } from '../engine/index.js';
import { benchModel, benchPrompt, interleaved, KvPeak, median, round, timedGenerate, warmUp } from '../engine/bench-support.js';
import type { EngineFront } from '../engine/front.js';
import { registerBench } from './index.js';

const PREFIX = 384; // question + skeleton
const POINT = 12; // "Point i: <title>" tokens after the prefix
const EXPAND = 32; // tokens generated per point
const REPS = 2;

// Every measurement gets its own question, so nothing is cached from an earlier one.
let question = 0;

function requests(k: number) {
  const seed = ++question;
  const prefix = benchPrompt(PREFIX, seed);
  return Array.from({ length: k }, (_, i) => ({ ids: [...prefix, ...benchPrompt(POINT, seed * 100 + i + 1)], sampling: { maxTokens: EXPAND } }));
}

async function batched(engine: EngineFront, k: number) {
  const peak = new KvPeak(engine);
  const t0 = performance.now();
  const runs = await Promise.all(requests(k).map((r) => timedGenerate(engine, r, peak)));
  return { ms: performance.now() - t0, kvBytes: peak.bytes, cached: runs.reduce((a, r) => a + r.cachedPromptTokens, 0) };
}

async function serial(engine: EngineFront, k: number) {
  const peak = new KvPeak(engine);
  const t0 = performance.now();
  for (const r of requests(k)) await timedGenerate(engine, r, peak);
  return { ms: performance.now() - t0, kvBytes: peak.bytes, cached: 0 };
}

registerBench('sot', {
  description: 'SoT expansion: 4 and 8 points batched over a shared prefix vs one after another',
  async run({ log, args }) {
    const model = benchModel(args);
    const shared = await createEngine({ model, thread: 'main' });
    const unshared = await createEngine({ model, thread: 'main', prefixSharing: false });
    try {
      await warmUp(shared);
      await warmUp(unshared);
      const figures: Record<string, unknown> = { model: shared.modelName, prefixTokens: PREFIX, pointTokens: POINT, expandTokens: EXPAND };
      const ratios: Record<string, number> = {};
      for (const k of [4, 8]) {
        const [b, s, bu] = await interleaved(REPS, [() => batched(shared, k), () => serial(unshared, k), () => batched(unshared, k)]);
        const ms = (xs: { ms: number }[]) => median(xs.map((x) => x.ms));
        const bytes = (xs: { kvBytes: number }[]) => Math.max(...xs.map((x) => x.kvBytes));
        ratios[`sot${k}_batched_vs_serial`] = round(ms(s!) / ms(b!));
        if (k === 8) ratios.kv_bytes_shared_vs_unshared = round(bytes(b!) / bytes(bu!), 3);
        figures[`sot${k}`] = {
          batchedMs: round(ms(b!), 1),
          serialMs: round(ms(s!), 1),
          batchedUnsharedMs: round(ms(bu!), 1),
          kvBytesBatchedShared: bytes(b!),
          kvBytesBatchedUnshared: bytes(bu!),
          kvBytesSerial: bytes(s!),
          cachedPromptTokens: b![0]!.cached,
        };
        log(
          `sot k=${k}: batched ${ms(b!).toFixed(0)} ms, serial ${ms(s!).toFixed(0)} ms (${(ms(s!) / ms(b!)).toFixed(2)}×); ` +
            `KV peak ${(bytes(b!) / 2 ** 20).toFixed(1)} MiB shared vs ${(bytes(bu!) / 2 ** 20).toFixed(1)} MiB unshared`,
        );
      }
      return { ratios, ...figures };
    } finally {
      await shared.close();
      await unshared.close();
    }
  },
});
