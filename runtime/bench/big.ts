/**
 * `skein bench big`: a 1B-class model here — random-weight GGUFs of Llama-3.2-1B's shape
 * (random-gguf.ts; vocab 128,256, hidden 2048, 16 layers, 32/8 heads, MLP 8192, rope θ
 * 500,000 with Llama 3 scaling, tied embeddings) written as Q4_0 and Q8_0 and cached under
 * .skein/bench/ — loaded and run by Skein and by llama.cpp (node-llama-cpp) on the SAME
 * file, in one process. Per type: Skein's load time, the RSS the load added, tfjs's wasm
 * heap and the kernels' wasm memory; llama.cpp's load time and RSS added; then, in
 * interleaved pairs (each side warmed up, same thread count, median of `reps`), prefill of
 * 128 tokens (tokens/s of one evaluation) and decode at batch 1 (mean tokens/s over all
 * `steps` tokens after two warm-up steps). First, on SmolLM2-135M-Instruct's Q4_1 file
 * when pulled, issue #11's memory check: the RSS that loading it and running a 128-token
 * prefill and `steps` decode steps add, against 2 × the file plus the KV budget.
 *
 * The last line with --json holds `figures` and `ratios`: `decode_b1_1b_q4_0_vs_llamacpp`,
 * `prefill128_1b_q8_0_vs_llamacpp`, … (Skein ÷ llama.cpp, > 1 = Skein faster),
 * `rss_1b_q4_0_vs_llamacpp` (Skein's RSS added ÷ llama.cpp's) and `rss_smollm2_vs_limit`
 * (≤ 1 meets the bound). --arg layers/vocab/hidden/inter shrink the shape (tests);
 * --arg llamacpp=0 runs Skein alone; --arg dir=D caches the files in D instead.
 *
 * @example
 * nice -n 15 npx skein bench big --json --arg types=q4_0,q8_0 --arg steps=8
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../backend.js';
import { loadModel } from '../checkpoint/load.js';
import type { BlockType } from '../kernels/blocks.js';
import { DEFAULT_KV_BUDGET_BYTES } from '../kv/pool.js';
import { prepareModel } from '../model/forward.js';
import { CACHE_DIR, DEFAULT_GGUF, pair, promptIds, round2, skeinDecodeStepMs, skeinPrefill, type Pair } from './decode.js';
import { registerBench } from './index.js';
import { openLlamaCpp, type LlamaCppSide } from './llamacpp.js';
import { collectGarbage, memorySnapshot, MiB, rssLimit } from './memory.js';
import { LLAMA_3_2_1B, writeRandomGguf, type RandomGgufShape } from './random-gguf.js';

const PREFILL = 128;

/** The cached GGUF of `shape` as `type`, written on first use. */
function bigGguf(shape: RandomGgufShape, type: BlockType, dir: string, log: (l: string) => void): string {
  const tag = shape === LLAMA_3_2_1B ? 'llama-3.2-1b-shape' : `llama-${shape.numLayers}x${shape.hiddenSize}x${shape.intermediateSize}-v${shape.vocabSize}`;
  const file = path.join(dir, `${tag}.random.${type}.gguf`);
  if (!fs.existsSync(file)) {
    const t0 = performance.now();
    log(`big: writing ${file}`);
    writeRandomGguf(file, shape, type);
    log(`big: wrote ${(fs.statSync(file).size / 2 ** 20).toFixed(0)} MiB in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  return file;
}

/** Issue #11's memory check on SmolLM2-135M Q4_1: RSS added by load + prefill + decode vs 2 × file + KV budget. */
async function smolLm2Rss(steps: number, log: (l: string) => void): Promise<Record<string, number | null> | null> {
  if (!fs.existsSync(DEFAULT_GGUF)) {
    log(`big: ${DEFAULT_GGUF} is absent (npx skein pull smollm2-135m-instruct): no SmolLM2 memory check`);
    return null;
  }
  collectGarbage();
  const before = memorySnapshot(null);
  const model = await loadModel(DEFAULT_GGUF);
  try {
    prepareModel(model);
    skeinDecodeStepMs(model, promptIds(PREFILL, model.config.vocabSize), 1, steps);
    collectGarbage();
    const after = memorySnapshot(model);
    const added = after.rss - before.rss;
    const size = fs.statSync(DEFAULT_GGUF).size;
    const limit = rssLimit(size, DEFAULT_KV_BUDGET_BYTES);
    log(`smollm2 q4_1: RSS +${MiB(added)} MiB (process ${MiB(after.rss)} MiB) after load, ${PREFILL}-token prefill and ${steps} decode steps; limit 2 × ${MiB(size)} MiB + KV budget ${MiB(DEFAULT_KV_BUDGET_BYTES)} MiB = ${MiB(limit)} MiB; kernels' memory ${MiB(after.kernelsMemory)} MiB, tfjs heap ${MiB(after.tfjsHeap)} MiB`);
    return { rssAddedMiB: MiB(added), rssProcessMiB: MiB(after.rss), limitMiB: MiB(limit), ggufMiB: MiB(size), kernelsMiB: MiB(after.kernelsMemory), tfjsHeapMiB: MiB(after.tfjsHeap), ratio: round2(added / limit) };
  } finally {
    model.dispose();
  }
}

registerBench('big', {
  description: 'a Llama-3.2-1B-shaped model (random Q4_0/Q8_0 GGUFs): load, memory, prefill and decode vs llama.cpp; SmolLM2 RSS bound',
  async run({ log, args = {} }) {
    const backend = await initBackend();
    const types = (args.types ?? 'q4_0,q8_0').split(',') as BlockType[];
    const steps = Number(args.steps ?? 8);
    const reps = Number(args.reps ?? 3);
    const threads = Number(args.threads ?? 1);
    const num = (key: string, fallback: number) => (args[key] === undefined ? fallback : Number(args[key]));
    const shrunk = ['layers', 'vocab', 'hidden', 'inter'].some((k) => args[k] !== undefined);
    const shape: RandomGgufShape = shrunk
      ? { ...LLAMA_3_2_1B, numLayers: num('layers', 16), vocabSize: num('vocab', 128256), hiddenSize: num('hidden', 2048), intermediateSize: num('inter', 8192) }
      : LLAMA_3_2_1B;
    const figures: Record<string, unknown> = {};
    const ratios: Record<string, number> = {};
    const record = (key: string, p: Pair) => {
      figures[key] = { skein: round2(p.skein), llamacpp: p.llamacpp === null ? null : round2(p.llamacpp) };
      if (p.llamacpp) ratios[`${key}_vs_llamacpp`] = round2(p.skein / p.llamacpp);
      log(`${key}: Skein ${p.skein.toFixed(2)} tok/s, llama.cpp ${p.llamacpp?.toFixed(2) ?? '—'} tok/s${p.llamacpp ? `, ratio ${(p.skein / p.llamacpp).toFixed(2)}` : ''}`);
    };

    // Load llama.cpp's native binding now, so that its first model load is not charged for it.
    if (args.llamacpp !== '0') await (await import('node-llama-cpp')).getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });

    if (args.smollm2 !== '0') {
      const smol = await smolLm2Rss(steps, log);
      if (smol !== null) {
        figures.rss_smollm2 = smol;
        ratios.rss_smollm2_vs_limit = smol.ratio!;
      }
    }

    for (const type of types) {
      const file = bigGguf(shape, type, args.dir ?? CACHE_DIR, log);
      const key = `1b_${type}`;
      collectGarbage();
      const before = memorySnapshot(null);
      let t = performance.now();
      const model = await loadModel(file);
      let llama: LlamaCppSide | null = null;
      try {
        prepareModel(model);
        const skeinLoadMs = performance.now() - t;
        collectGarbage();
        const loaded = memorySnapshot(model);
        log(`big: ${type}: Skein loaded ${path.basename(file)} (${MiB(fs.statSync(file).size)} MiB) in ${(skeinLoadMs / 1000).toFixed(1)} s: RSS +${MiB(loaded.rss - before.rss)} MiB, kernels' memory ${MiB(loaded.kernelsMemory)} MiB, tfjs heap ${MiB(loaded.tfjsHeap)} MiB (${MiB(loaded.tensorBytes)} MiB of tensors), backend ${backend}`);
        let llamaLoadMs: number | null = null;
        let llamaRss: number | null = null;
        if (args.llamacpp !== '0') {
          t = performance.now();
          llama = await openLlamaCpp(file, { threads, sequences: 1, contextSize: PREFILL + steps + 16 });
          llamaLoadMs = performance.now() - t;
          llamaRss = process.memoryUsage().rss - loaded.rss;
          log(`big: ${type}: llama.cpp loaded it in ${(llamaLoadMs / 1000).toFixed(1)} s: RSS +${MiB(llamaRss)} MiB (mmapped pages it touched included), threads ${threads}`);
        }
        const ids = promptIds(PREFILL, model.config.vocabSize);
        const L = llama;
        record(`decode_b1_${key}`, await pair(reps, () => 1000 / skeinDecodeStepMs(model, ids, 1, steps), L && (async () => 1000 / (await L.decodeStepMs(ids, steps)))));
        record(`prefill128_${key}`, await pair(reps, () => skeinPrefill(model, ids), L && (() => L.prefill(ids))));
        const ran = memorySnapshot(model);
        figures[`memory_${key}`] = {
          ggufMiB: MiB(fs.statSync(file).size),
          skeinLoadMs: Math.round(skeinLoadMs),
          skeinRssAddedMiB: MiB(loaded.rss - before.rss),
          skeinKernelsMiB: MiB(ran.kernelsMemory),
          skeinTfjsHeapMiB: MiB(ran.tfjsHeap),
          skeinProcessRssAfterRunMiB: MiB(ran.rss),
          llamacppLoadMs: llamaLoadMs === null ? null : Math.round(llamaLoadMs),
          llamacppRssAddedMiB: MiB(llamaRss),
        };
        if (llamaRss !== null && llamaRss > 0) ratios[`rss_${key}_vs_llamacpp`] = round2((loaded.rss - before.rss) / llamaRss);
        log(`big: ${type}: after the runs: kernels' memory ${MiB(ran.kernelsMemory)} MiB, tfjs heap ${MiB(ran.tfjsHeap)} MiB, process RSS ${MiB(ran.rss)} MiB`);
      } finally {
        await llama?.close();
        model.dispose();
      }
    }
    return { backend, shape, reps, steps, threads, figures, ratios };
  },
});
