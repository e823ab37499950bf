/**
 * `skein bench kv`: the q8 KV cache (SKEIN_KV_CACHE=q8) against the default f16 one on
 * SmolLM2-135M-Instruct Q4_1, two copies of the model in one process, every repetition
 * measuring both back to back:
 * - the decode step at 128 and at 1,024 tokens of context (steps alternating one by one,
 *   medians; the growth the median of the repetitions' ratios, as `bench decode`'s) — the
 *   growth and the step at 1,024 for each cache, and at `--arg long=N` tokens (default
 *   4,096) too; beside each growth its bytes' ratio (`step_bytes`, decode.ts stepBytes),
 *   the growth of a step that streams its K/V at the rate it streams its weights;
 * - what each holds after a prefill of `long` tokens (at least 1,024): the kernels' copies
 *   beside the f32 tensors the block table keeps;
 * - what q8 costs in quality: over passage text (the project's generated passage-QA
 *   items, no model's training data), teacher-forced in 128-token chunks, the mean
 *   negative log-likelihood of each next token under each cache, its change, and how often
 *   the two caches' top-1 tokens agree.
 * Why q8 at all: a decode step reads every layer's K and V once, f16 at 2 bytes a value;
 * at 1,024 tokens that is 23.6 MB beside the weights' 98 MB, and the box's memory stream
 * bounds the step (runtime/kernels/native/kernels.c). q8 halves those bytes (an int8 row per
 * KV head and one f32 scale), lossy, as llama.cpp's --cache-type-k/v q8_0.
 * Without the GGUF (or with --arg model=random) both caches run on a random model of the
 * same shape quantized in memory (--arg layers/vocab shrink it, for tests), and the text
 * figures are left out: a random model has no tokenizer.
 *
 * @example
 * npx skein bench kv --json --arg reps=3
 */
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../backend.js';
import { loadModel, loadTokenizer } from '../checkpoint/load.js';
import { argmax } from '../generate/sampler.js';
import type { KvType } from '../kernels/matmul.js';
import { quantizeModel } from '../model/block-weights.js';
import { forward, prepareModel } from '../model/forward.js';
import { randomModel } from '../model/random.js';
import type { ForwardSequenceResult, LayerKvChunks, LoadedModel } from '../model/types.js';
import { DEFAULT_GGUF, ggufOf, median, pairRatios, promptIds, round2, skeinAlternatingStepMs, smolLm2Shape, stepBytesFigure } from './decode.js';
import { registerBench } from './index.js';
import { logSoftmaxAt, longPrompt, qaItems } from './stages.js';

const CACHES: readonly KvType[] = ['f16', 'q8'];

/**
 * Prefills `ids` into one sequence's chunk lists, 128 rows a forward, handing each result
 * to `each` (with its first row's position); `held` runs while that KV is held, and the KV
 * is freed after it.
 */
function chunkedPrefill<T>(model: LoadedModel, ids: number[], logits: 'all' | 'none', each: (r: ForwardSequenceResult, at: number) => void, held: () => T): T {
  const past: LayerKvChunks[] = Array.from({ length: model.config.numLayers }, () => ({ k: [], v: [] }));
  try {
    for (let at = 0; at < ids.length; at += 128) {
      const [r] = forward(model, [{ ids: ids.slice(at, at + 128), past, logits }]);
      r!.newKv.forEach((e, l) => {
        past[l]!.k.push(e!.k);
        past[l]!.v.push(e!.v);
      });
      each(r!, at);
    }
    return held();
  } finally {
    for (const l of past) tf.dispose([...l.k, ...l.v]);
  }
}

/** Mean next-token NLL of `ids` and each position's top-1 token, teacher-forced. */
function scoreText(model: LoadedModel, ids: number[]): { nll: number; top1: number[] } {
  const top1: number[] = [];
  let nll = 0;
  chunkedPrefill(
    model,
    ids.slice(0, -1),
    'all',
    (r, at) =>
      r.logits.forEach((row, i) => {
        nll -= logSoftmaxAt(row, ids[at + i + 1]!);
        top1.push(argmax(row));
      }),
    () => undefined,
  );
  return { nll: nll / top1.length, top1 };
}

/**
 * What a cache holds after a prefill of `ids`: bytes of the tfjs K/V tensors the caller
 * keeps and of the kernels' copies attention reads (the KV mirror's). Both are held today
 * (the block table keeps the tensors), so q8 saves bandwidth, not memory.
 */
function kvMemory(model: LoadedModel, ids: number[]): { tensors: number; copies: number } {
  const { kernels, mirror } = prepareModel(model);
  mirror.sweep();
  const before = { tensors: tf.memory().numBytes, copies: kernels.storedBytes };
  try {
    return chunkedPrefill(model, ids, 'none', () => undefined, () => {
      mirror.sweep();
      return { tensors: tf.memory().numBytes - before.tensors, copies: kernels.storedBytes - before.copies };
    });
  } finally {
    mirror.sweep();
  }
}

registerBench('kv', {
  description: 'the q8 KV cache vs f16 on SmolLM2-135M Q4_1: decode step at 128, 1,024 and 4,096 tokens of context, growth, and its NLL and top-1 change over passage text',
  async run({ log, args = {} }) {
    const backend = await initBackend();
    const reps = Number(args.reps ?? 3);
    const steps = Number(args.steps ?? 32);
    const threads = Number(args.threads ?? 2);
    const long = Number(args.long ?? 4096);
    const source = ggufOf(args.model ?? DEFAULT_GGUF);
    const random = source === 'random' || !fs.existsSync(source);
    if (random) log(`kv: ${source === 'random' ? 'random model asked for' : `${source} is not here (npx skein pull smollm2-135m-instruct)`}: a random SmolLM2-shaped model, no text figures`);
    const load = async (kv: KvType): Promise<LoadedModel> => {
      const model = random
        ? quantizeModel(randomModel({ ...smolLm2Shape, numLayers: Number(args.layers ?? smolLm2Shape.numLayers), vocabSize: Number(args.vocab ?? smolLm2Shape.vocabSize) }, 1), 'q4_1', 'q8_0')
        : await loadModel(source);
      model.kvCache = kv;
      const { kernels, mirror } = prepareModel(model);
      kernels.setThreads(threads);
      if (mirror.kv !== kv) throw new Error(`kv: the model's KV mirror is ${mirror.kv}, not ${kv}`);
      // Before any forward stores KV: the weights a decode step streams (decode.ts stepBytes).
      weightBytes.set(kv, kernels.weightBytes);
      return model;
    };
    const weightBytes = new Map<KvType, number>();
    const models = new Map<KvType, LoadedModel>();
    try {
      for (const kv of CACHES) models.set(kv, await load(kv));
      const vocab = models.get('f16')!.config.vocabSize;
      const contexts = [128, 1024, ...(long > 1024 ? [long] : [])];
      const ms = new Map<string, number[]>();
      const push = (key: string, x: number) => ms.set(key, [...(ms.get(key) ?? []), x]);
      for (let r = 0; r < reps; r++) {
        for (const kv of CACHES) {
          const model = models.get(kv)!;
          const [a, b] = skeinAlternatingStepMs(model, [promptIds(128, vocab), promptIds(1024, vocab)], steps);
          push(`${kv}128`, a);
          push(`${kv}1024`, b);
          if (long > 1024) {
            const [, c] = skeinAlternatingStepMs(model, [promptIds(8, vocab), promptIds(long, vocab)], Math.max(4, steps / 4));
            push(`${kv}${long}`, c);
          }
          log(`kv: repetition ${r + 1}, ${kv}: step ${contexts.map((n) => `${ms.get(`${kv}${n}`)!.at(-1)!.toFixed(2)} ms at ${n}`).join(', ')}`);
        }
      }
      const step = (kv: KvType, n: number) => median(ms.get(`${kv}${n}`)!);
      const figures: Record<string, unknown> = {
        step_ms: Object.fromEntries(CACHES.flatMap((kv) => contexts.map((n) => [`${kv}_${n}`, round2(step(kv, n))]))),
      };
      const ratios: Record<string, number> = {};
      const stepBytesOf: Record<string, { at128: number; at1024: number; ratio: number }> = {};
      figures.step_bytes = stepBytesOf;
      for (const kv of CACHES) {
        // The median of the repetitions' ratios, not the ratio of the medians (bench decode's growthAt says why).
        const pairs = pairRatios(ms.get(`${kv}1024`)!, ms.get(`${kv}128`)!);
        ratios[`step1024_vs_step128_${kv}`] = round2(median(pairs));
        const b = (stepBytesOf[kv] = stepBytesFigure(models.get(kv)!.config, weightBytes.get(kv)!, kv));
        log(`kv: ${kv} cache: growth ×${median(pairs).toFixed(3)}, the median of the repetitions' ×${pairs.map((x) => x.toFixed(2)).join(', ')} (steps ${step(kv, 128).toFixed(2)} → ${step(kv, 1024).toFixed(2)} ms, medians); its bytes ×${b.ratio.toFixed(3)} (${(b.at128 / 1e6).toFixed(1)} → ${(b.at1024 / 1e6).toFixed(1)} MB a step)`);
      }
      for (const n of contexts) {
        ratios[`decode_ctx${n}_q8_vs_f16`] = round2(step('f16', n) / step('q8', n));
        log(`kv: decode at ${n} tokens of context: q8 ${(step('f16', n) / step('q8', n)).toFixed(2)}× the f16 cache's speed (${step('q8', n).toFixed(2)} vs ${step('f16', n).toFixed(2)} ms a step)`);
      }
      const memoryAt = Math.max(1024, long);
      const mib = (b: number) => Number((b / 2 ** 20).toFixed(1));
      const memory = Object.fromEntries(CACHES.map((kv) => [kv, kvMemory(models.get(kv)!, promptIds(memoryAt, vocab))]));
      figures.memory_mib = { tokens: memoryAt, ...Object.fromEntries(CACHES.map((kv) => [kv, { tensors: mib(memory[kv]!.tensors), copies: mib(memory[kv]!.copies) }])) };
      log(`kv: held after a ${memoryAt}-token prefill: ${CACHES.map((kv) => `${kv} ${mib(memory[kv]!.copies)} MiB of kernel copies beside ${mib(memory[kv]!.tensors)} MiB of f32 tensors`).join('; ')} (both are kept: q8 halves the bytes a step reads, not what is held)`);
      if (!random && args.text !== '0') {
        const tokenizer = loadTokenizer(source);
        const n = Number(args.items ?? 4);
        const pool = await qaItems(Math.max(n, 8));
        const texts = pool.slice(0, n).map((item, i) => longPrompt(tokenizer, item, pool.slice(i + 1), Number(args.tokens ?? 1024)));
        let f16Nll = 0;
        let q8Nll = 0;
        let same = 0;
        let positions = 0;
        for (const ids of texts) {
          const a = scoreText(models.get('f16')!, ids);
          const b = scoreText(models.get('q8')!, ids);
          f16Nll += a.nll * a.top1.length;
          q8Nll += b.nll * b.top1.length;
          same += a.top1.filter((t, i) => t === b.top1[i]).length;
          positions += a.top1.length;
        }
        figures.text = { items: texts.length, positions, nll_f16: Number((f16Nll / positions).toFixed(4)), nll_q8: Number((q8Nll / positions).toFixed(4)), top1_agreement: Number((same / positions).toFixed(4)) };
        ratios.nll_q8_minus_f16 = Number(((q8Nll - f16Nll) / positions).toFixed(4));
        log(`kv: text (${texts.length} passage prompts, ${positions} positions, teacher-forced): NLL f16 ${(f16Nll / positions).toFixed(4)}, q8 ${(q8Nll / positions).toFixed(4)} (Δ ${((q8Nll - f16Nll) / positions).toFixed(4)} nats a token); top-1 tokens agree at ${((100 * same) / positions).toFixed(2)} %`);
      }
      return { backend, model: random ? 'random' : source, reps, steps, threads, figures, ratios };
    } finally {
      for (const m of models.values()) m.dispose();
    }
  },
});
