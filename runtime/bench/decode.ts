/**
 * `skein bench decode`: Skein's forward against llama.cpp (node-llama-cpp) on the SAME
 * GGUF files, in one process: SmolLM2-135M-Instruct as pulled (Q4_1 projections, Q8_0
 * embeddings) and rewritten to Q8_0 and F32 (gguf-rewrite.ts; the rewrites are cached
 * under .skein/bench/). Per file and repetition the two sides run back to back
 * (interleaved pairs, each warmed up first); every figure is the median over repetitions
 * of a mean over all timed tokens — no best window:
 * - decode batch 1: mean tokens/s over `steps` generated tokens after a 128-token prompt;
 * - prefill of 128 tokens (and 512 on Q8_0): tokens/s of one evaluation;
 * - decode batch 1 through the engine (Q4_1): the same greedy decode as a request gets it
 *   (scheduler, paged KV, sampler), llama.cpp's figure the same as above; and after a
 *   1,024-token prompt (the prompt's KV in the engine's 16-row blocks), against llama.cpp's
 *   decode at the same context, interleaved; at least 64 tokens a run, the two contexts
 *   alternating; the median of each repetition's ratio is the growth a request sees
 *   (`engine_step1024_vs_step128_q4_1`);
 * - decode batch 16 (Q4_1): 16 sequences generating together;
 * - context growth (Q4_1, Skein): mean decode step at 1,024 tokens of context over the
 *   step at 128 (steps at the two contexts alternating one by one; each repetition's ratio of
 *   its medians, and the median of those ratios over repetitions).
 * The last line with --json holds `ratios` (Skein ÷ llama.cpp, >1 = Skein faster) and the
 * raw figures. Without the GGUF (or with --arg model=random) only Skein runs, on a random
 * model of the same shape quantized in memory (--arg layers/vocab shrink it, for tests),
 * and says so. --arg threads=2 runs both sides on two threads; --arg threads=best measures
 * every pair at one and two threads on both sides and keeps each side's best (the issue's
 * "each side at its best thread count"). --arg blocks=0 runs Skein's
 * f32 tfjs path on the same files instead of the block kernels (the figures before them).
 *
 * @example
 * npx skein bench decode --json --arg reps=3 --arg steps=16
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { lastValueFrom, tap } from 'rxjs';
import { initBackend } from '../backend.js';
import { createEngine, type EngineFront } from '../engine/index.js';
import { loadModel, MODELS_DIR, resolveModel } from '../checkpoint/load.js';
import type { BlockType } from '../kernels/blocks.js';
import { kvRowBytes, type MatmulKernels } from '../kernels/matmul.js';
import { quantizeModel } from '../model/block-weights.js';
import { forward, prepareModel } from '../model/forward.js';
import { kvTypeOf } from '../model/kv-mirror.js';
import { randomModel } from '../model/random.js';
import type { LayerKvChunks, LoadedModel, ModelConfig } from '../model/types.js';
import { rewriteGguf } from './gguf-rewrite.js';
import { registerBench } from './index.js';
import { openLlamaCpp, type LlamaCppSide } from './llamacpp.js';

export const smolLm2Shape: Partial<ModelConfig> = {
  vocabSize: 49152,
  hiddenSize: 576,
  intermediateSize: 1536,
  numLayers: 30,
  numHeads: 9,
  numKvHeads: 3,
  headDim: 64,
  ropeTheta: 100000,
  tieWordEmbeddings: true,
  maxPositionEmbeddings: 8192,
};

export const DEFAULT_GGUF = path.join(MODELS_DIR, 'smollm2-135m-instruct', 'SmolLM2-135M-Instruct.Q4_1.gguf');
export const CACHE_DIR = path.resolve(MODELS_DIR, '..', '.skein', 'bench');

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Bytes a batch-1 decode step reads at a context of n tokens: every weight once (the LM
 * head is the tied embedding table, so the kernels' weight bytes are all read) plus every
 * layer's K and V rows for the n tokens. When weights and K/V stream at one rate, a step's
 * time grows as these bytes do: the floor of `step1024_vs_step128` short of keeping K/V in
 * cache (Stop 40, probes/cache-residency.c: with 96 MB of weights streamed between two
 * reads, even a 2 MB buffer comes back from DRAM, whatever hint the weights are read with)
 * or storing fewer K/V bytes.
 */
export function stepBytes(c: Pick<ModelConfig, 'numLayers' | 'numKvHeads' | 'headDim'>, weightBytes: number, kv: Parameters<typeof kvRowBytes>[1]) {
  const perToken = c.numLayers * c.numKvHeads * 2 * kvRowBytes(c.headDim, kv);
  return (n: number) => weightBytes + n * perToken;
}

/** stepBytes at 128 and 1,024 tokens of context and their ratio, as the benches report growth's floor (`step_bytes`). */
export function stepBytesFigure(c: Pick<ModelConfig, 'numLayers' | 'numKvHeads' | 'headDim'>, weightBytes: number, kv: Parameters<typeof kvRowBytes>[1]) {
  const at = stepBytes(c, weightBytes, kv);
  return { at128: at(128), at1024: at(1024), ratio: Math.round((at(1024) / at(128)) * 1000) / 1000 };
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Each repetition's ratio over[r] / under[r]: a growth is the median of these, never a ratio of two medians (see growthAt). */
export const pairRatios = (over: readonly number[], under: readonly number[]) => over.map((x, r) => x / under[r]!);
export const round2 = (x: number) => Number(x.toFixed(2));
const freeKv = (r: { newKv: ({ k: tf.Tensor; v: tf.Tensor } | null)[] }) => tf.dispose(r.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));

/** The GGUF file a `--model` spec names (a file, a folder, a model name); the spec itself when it names none. */
export function ggufOf(spec: string): string {
  if (spec === 'random') return spec;
  try {
    const location = resolveModel(spec);
    return location.format === 'gguf' ? location.file : spec;
  } catch {
    return spec;
  }
}

/** Which build of the kernels runs: native (AVX2 addon), wasm with relaxed SIMD, or the baseline wasm. */
export const kernelBuild = (k: MatmulKernels) => (k.native ? 'native' : k.relaxed ? 'wasm-relaxed' : 'wasm');

/** A deterministic prompt of n in-vocabulary ids. */
export const promptIds = (n: number, vocab: number) => Array.from({ length: n }, (_, i) => (100 + i * 7919) % vocab);

/** Skein: tokens/s of one prefill. */
export function skeinPrefill(model: LoadedModel, ids: number[]): number {
  const t0 = performance.now();
  const [r] = forward(model, [{ ids }]);
  const ms = performance.now() - t0;
  freeKv(r!);
  return (ids.length * 1000) / ms;
}

/**
 * Skein: mean ms per decode step for `batch` sequences sharing one prefilled prompt,
 * over `steps` steps after `warm` untimed ones.
 */
export function skeinDecodeStepMs(model: LoadedModel, ids: number[], batch: number, steps: number, warm = 2): number {
  const [pre] = forward(model, [{ ids: ids.slice(0, -1), logits: 'none' }]);
  const prompt: LayerKvChunks[] = pre!.newKv.map((e) => ({ k: [e!.k], v: [e!.v] }));
  const own: LayerKvChunks[][] = Array.from({ length: batch }, () => prompt.map(() => ({ k: [], v: [] })));
  let next = Array.from({ length: batch }, () => ids.at(-1)!);
  let t0 = performance.now();
  for (let s = 0; s < steps + warm; s++) {
    if (s === warm) t0 = performance.now();
    const res = forward(
      model,
      next.map((id, b) => ({
        ids: [id],
        positions: [ids.length - 1 + s],
        past: prompt.map((p, l) => ({ k: [...p.k, ...own[b]![l]!.k], v: [...p.v, ...own[b]![l]!.v] })),
      })),
    );
    res.forEach((r, b) =>
      r.newKv.forEach((e, l) => {
        own[b]![l]!.k.push(e!.k);
        own[b]![l]!.v.push(e!.v);
      }),
    );
    next = res.map((r) => argmax(r.logits[0]!));
  }
  const ms = (performance.now() - t0) / steps;
  for (const l of [...prompt, ...own.flat()]) tf.dispose([...l.k, ...l.v]);
  return ms;
}

/**
 * Skein: median ms of a decode step at each of two contexts, steps alternating between them
 * (a 128- and a 1,024-token prompt) so that the machine's load falls on both alike; each
 * sequence appends its own tokens, `warm` untimed steps first.
 */
export function skeinAlternatingStepMs(model: LoadedModel, prompts: [number[], number[]], steps: number, warm = 2): [number, number] {
  const seqs = prompts.map((ids) => {
    const [pre] = forward(model, [{ ids: ids.slice(0, -1), logits: 'none' }]);
    return { ids, past: pre!.newKv.map((e) => ({ k: [e!.k], v: [e!.v] })) as LayerKvChunks[], next: ids.at(-1)!, ms: [] as number[] };
  });
  for (let s = 0; s < steps + warm; s++) {
    for (const q of seqs) {
      const t0 = performance.now();
      const [r] = forward(model, [{ ids: [q.next], positions: [q.ids.length - 1 + s], past: q.past }]);
      const ms = performance.now() - t0;
      if (s >= warm) q.ms.push(ms);
      r!.newKv.forEach((e, l) => {
        q.past[l]!.k.push(e!.k);
        q.past[l]!.v.push(e!.v);
      });
      q.next = argmax(r!.logits[0]!);
    }
  }
  for (const q of seqs) for (const l of q.past) tf.dispose([...l.k, ...l.v]);
  return [median(seqs[0]!.ms), median(seqs[1]!.ms)];
}

/**
 * Skein through its engine (scheduler, paged KV blocks, sampler: what a request gets):
 * mean tokens/s over `steps` greedy tokens after the first, end-of-sequence forbidden so
 * every run is as long.
 */
async function engineDecodeTps(engine: EngineFront, ids: number[], steps: number, eos: readonly number[]): Promise<number> {
  const stamps: number[] = [];
  await lastValueFrom(
    engine.generate({ ids, sampling: { temperature: 0, maxTokens: steps + 1, logitBias: Object.fromEntries(eos.map((id) => [id, -100])) } }).pipe(
      tap((e) => {
        if (e.type === 'token') stamps.push(performance.now());
      }),
    ),
  );
  return ((stamps.length - 1) * 1000) / (stamps.at(-1)! - stamps[0]!);
}

export interface Pair {
  skein: number;
  llamacpp: number | null;
}

/** Runs `skein` and `llama` back to back `reps` times (after one warm-up each); medians. */
export async function pair(reps: number, skein: () => number, llama: (() => Promise<number>) | null): Promise<Pair> {
  skein();
  if (llama) await llama();
  const s: number[] = [];
  const l: number[] = [];
  for (let i = 0; i < reps; i++) {
    s.push(skein());
    if (llama) l.push(await llama());
  }
  return { skein: median(s), llamacpp: llama ? median(l) : null };
}

/** The GGUF of `type`: the pulled file for Q4_1, a cached rewrite of it otherwise. */
function ggufFor(source: string, type: BlockType, log: (l: string) => void): string {
  if (type === 'q4_1') return source;
  const st = fs.statSync(source);
  const out = path.join(CACHE_DIR, `${path.basename(source, '.gguf')}.${st.size}.${type}.gguf`);
  if (!fs.existsSync(out)) {
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    log(`decode: writing ${out} (${type} from ${path.basename(source)})`);
    rewriteGguf(source, out, type);
  }
  return out;
}

registerBench('decode', {
  description: 'Skein vs llama.cpp on the same GGUF (SmolLM2-135M Q4_1/Q8_0/F32): decode b1/b16 (and through the engine at 128 and 1,024 tokens of context), prefill 128/512, context growth',
  async run({ log, args }) {
    const backend = await initBackend();
    let kernelsBuild: string | null = null;
    const reps = Number(args?.reps ?? 3);
    const steps = Number(args?.steps ?? 16);
    // --arg threads=best: each side at its best thread count on this machine (the issue's
    // terms): every pair measured with both sides on one thread and on two, interleaved, and
    // each side's better median kept (the counts are printed and in the figures).
    const best = args?.threads === 'best';
    const threads = best ? 2 : Number(args?.threads ?? 1);
    // Skein's kernels read SKEIN_THREADS when a model's kernels are made
    // (runtime/kernels/threads.ts); with best, made for two and switched per measurement.
    process.env.SKEIN_THREADS = String(threads);
    const types = (args?.types ?? 'q4_1,q8_0,f32').split(',') as BlockType[];
    const source = ggufOf(args?.model ?? DEFAULT_GGUF);
    const random = source === 'random' || !/\.gguf$/i.test(source) || !fs.existsSync(source);
    if (random) log(`decode: ${source === 'random' ? 'random model asked for' : `${source} is not a GGUF file here (npx skein pull smollm2-135m-instruct)`}: Skein only, on a random SmolLM2-shaped model; no llama.cpp figures`);
    const figures: Record<string, Record<string, number | null>> = {};
    const ratios: Record<string, number> = {};
    const record = (key: string, p: Pair, unit: string, threadCounts?: { skein: number; llamacpp: number }) => {
      figures[key] = { skein: round2(p.skein), llamacpp: p.llamacpp === null ? null : round2(p.llamacpp), ...(threadCounts ? { skeinThreads: threadCounts.skein, llamacppThreads: threadCounts.llamacpp } : {}) };
      const ratio = p.llamacpp ? p.skein / p.llamacpp : null;
      if (ratio !== null) ratios[`${key}_vs_llamacpp`] = round2(ratio);
      const counts = threadCounts ? ` (threads: Skein ${threadCounts.skein}, llama.cpp ${threadCounts.llamacpp})` : '';
      log(`${key}: Skein ${p.skein.toFixed(1)} ${unit}, llama.cpp ${p.llamacpp?.toFixed(1) ?? '—'} ${unit}${ratio !== null ? `, ratio ${ratio.toFixed(2)}` : ''}${counts}`);
    };

    for (const type of types) {
      const file = random ? null : ggufFor(source, type, log);
      const t = performance.now();
      const model: LoadedModel = file
        ? await loadModel(file)
        : quantizeModel(randomModel({ ...smolLm2Shape, numLayers: Number(args?.layers ?? smolLm2Shape.numLayers), vocabSize: Number(args?.vocab ?? smolLm2Shape.vocabSize) }, 1), type, type === 'q4_1' ? 'q8_0' : type);
      // --arg blocks=0: the f32 tfjs path on the same file (the figures before the kernels).
      if (args?.blocks === '0') delete model.blockWeights;
      prepareModel(model);
      const wantBatch = type === 'q4_1' && args?.batch !== '0';
      let llama: LlamaCppSide | null = null;
      let llama1: LlamaCppSide | null = null;
      /** The llama.cpp side that runs on n threads: with best, the one-thread instance for 1 and the other for 2; without, the only one (on `threads`). */
      const llamaAt = (n: number) => (best && n === 1 ? llama1 : llama);
      const kernels = prepareModel(model).kernels;
      // Before any forward stores KV: the weights a decode step streams (stepBytes).
      const weightBytes = kernels?.weightBytes ?? null;
      /**
       * A pair as `pair` measures it (tokens/s, higher is better) — with best, at one and at
       * two threads on both sides, each side's better median kept.
       */
      const measure = async (key: string, skein: () => number, side: ((L: LlamaCppSide) => Promise<number>) | null, unit: string) => {
        if (!best) {
          record(key, await pair(reps, skein, llama && side && (() => side(llama!))), unit);
          return;
        }
        const at = new Map<1 | 2, Pair>();
        for (const n of [1, 2] as const) {
          kernels.setThreads(n);
          const L = llamaAt(n);
          at.set(n, await pair(reps, skein, L && side && (() => side(L))));
        }
        kernels.setThreads(1);
        const s = at.get(2)!.skein > at.get(1)!.skein ? 2 : 1;
        const l = (at.get(2)!.llamacpp ?? 0) > (at.get(1)!.llamacpp ?? 0) ? 2 : 1;
        record(key, { skein: at.get(s)!.skein, llamacpp: at.get(l)!.llamacpp }, unit, { skein: s, llamacpp: l });
      };
      try {
        if (file) llama = await openLlamaCpp(file, { threads, sequences: wantBatch ? 16 : 1, contextSize: 1100 });
        if (file && best) llama1 = await openLlamaCpp(file, { threads: 1, sequences: wantBatch ? 16 : 1, contextSize: 1100 });
        if (best) kernels.setThreads(1);
        log(`decode: ${type}: loaded ${file ?? 'random model'} in ${((performance.now() - t) / 1000).toFixed(1)} s (backend ${backend}, blocks ${prepareModel(model).blocks !== null}, kernels ${(kernelsBuild = kernelBuild(kernels))}, huge pages ${kernels.hugePages ? 'on' : 'off'}, threads ${threads} on each side)`);
        const vocab = model.config.vocabSize;
        const p128 = promptIds(128, vocab);
        const L = llama;
        await measure(`decode_b1_${type}`, () => 1000 / skeinDecodeStepMs(model, p128, 1, steps), async (S) => 1000 / (await S.decodeStepMs(p128, steps)), 'tok/s');
        await measure(`prefill128_${type}`, () => skeinPrefill(model, p128), (S) => S.prefill(p128), 'tok/s');
        if (type === 'q4_1' && file && args?.engine !== '0') {
          // The same decode through Skein's engine: the forward plus everything a request adds,
          // after a 128-token prompt and, where attention over the paged blocks weighs most,
          // after a 1,024-token one. With best, an engine at one and at two kernel threads,
          // each figure at the faster one (and llama.cpp's at its faster count).
          const eos = model.config.eosTokenIds;
          const p1024 = promptIds(1024, vocab);
          const bare = figures[`decode_b1_${type}`]!;
          const at: { n: number; short: number; long: number; llamaLong: number | null; pairs: number[] }[] = [];
          for (const n of best ? [1, 2] : [threads]) {
            process.env.SKEIN_THREADS = String(n);
            const engine = await createEngine({ model: file, thread: 'main', prefixSharing: false });
            process.env.SKEIN_THREADS = String(threads);
            try {
              const G = llamaAt(n);
              const short: number[] = [];
              const long: number[] = [];
              const llamaLong: number[] = [];
              // The two contexts alternate within each repetition, so that the machine's load
              // falls on both alike: run one group after the other (three at 128 tokens, then
              // three at 1,024 beside llama.cpp's), one run read ×1.02 where the same box's
              // alternated runs read ×1.2–1.4 (Stop 36). At least 64 tokens a run: alternated
              // 16-token runs (~0.1 s each) read ×0.9–1.8 for one pair, a GC pause or the first
              // step after a long prefill being a large part of so few tokens.
              const engineSteps = Math.max(steps, 64);
              await engineDecodeTps(engine, p128, 4, eos);
              for (let i = 0; i < reps; i++) {
                short.push(await engineDecodeTps(engine, p128, engineSteps, eos));
                long.push(await engineDecodeTps(engine, p1024, engineSteps, eos));
                if (G) llamaLong.push(1000 / (await G.decodeStepMs(p1024, engineSteps)));
              }
              at.push({ n, short: median(short), long: median(long), llamaLong: G ? median(llamaLong) : null, pairs: pairRatios(short, long) });
            } finally {
              await engine.close();
            }
          }
          const fastest = (key: 'short' | 'long' | 'llamaLong') => at.reduce((a, b) => ((b[key] ?? 0) > (a[key] ?? 0) ? b : a));
          const counts = (s: number, l: number) => (best ? { skein: s, llamacpp: l } : undefined);
          record(`decode_b1_engine_${type}`, { skein: fastest('short').short, llamacpp: bare.llamacpp }, 'tok/s', counts(fastest('short').n, bare.llamacppThreads ?? threads));
          record(`decode_b1_engine_ctx1024_${type}`, { skein: fastest('long').long, llamacpp: fastest('llamaLong').llamaLong }, 'tok/s', counts(fastest('long').n, fastest('llamaLong').n));
          // The growth a request sees: the engine's token at 1,024 tokens of context over its
          // token at 128 (the context-growth figure below times the bare forward, whose
          // per-step tensors and lists cost a request's path does not pay), at each thread
          // count, the ratio kept at the count whose two tokens together cost least.
          for (const e of at) log(`engine growth (${e.n} thread${e.n > 1 ? 's' : ''}): ${(1000 / e.short).toFixed(2)} ms a token at 128 tokens of context → ${(1000 / e.long).toFixed(2)} ms at 1,024 (×${median(e.pairs).toFixed(2)}, the median of each repetition's pair ${e.pairs.map((p) => `×${p.toFixed(2)}`).join(', ')})`);
          const e = at.reduce((a, b) => (1 / b.short + 1 / b.long < 1 / a.short + 1 / a.long ? b : a));
          ratios[`engine_step1024_vs_step128_${type}`] = round2(median(e.pairs));
        }
        if (type === 'q8_0') {
          const p512 = promptIds(512, vocab);
          await measure(`prefill512_${type}`, () => skeinPrefill(model, p512), (S) => S.prefill(p512), 'tok/s');
        }
        if (wantBatch) {
          const b = 16;
          const bSteps = Math.max(4, steps / 2);
          await measure('decode_b16', () => (b * 1000) / skeinDecodeStepMs(model, p128, b, bSteps), (S) => S.decodeBatch(p128, b, bSteps), 'tok/s');
          const p1024 = promptIds(1024, vocab);
          // 64 steps at each context per repetition by default (Skein's, 2 × growthSteps): with
          // 16, one run's repetitions at two threads read ×1.16–1.33 and another's ×1.38–1.51.
          const growthSteps = Math.max(4, steps * 2);
          // Skein's steps at the two contexts alternate one by one (runs of 8 steps apart read
          // ×0.67–1.56 within one run on a busy box); the growth is the median of the
          // repetitions' ratios (below). llama.cpp's runs of steps alternate per repetition.
          // With best, at one and at two threads on each side; the ratio is taken at the count
          // each side decodes fastest at (decode_b1's), both counts' in figures.step_ms.
          const growthAt = async (n: number, G: LlamaCppSide | null) => {
            const at: Record<'skein128' | 'skein1024' | 'llama128' | 'llama1024', number[]> = { skein128: [], skein1024: [], llama128: [], llama1024: [] };
            kernels.setThreads(n);
            for (let r = 0; r < reps; r++) {
              const [a, b] = skeinAlternatingStepMs(model, [p128, p1024], 2 * growthSteps);
              at.skein128.push(a);
              at.skein1024.push(b);
              if (G) {
                at.llama128.push(await G.decodeStepMs(p128, growthSteps));
                at.llama1024.push(await G.decodeStepMs(p1024, growthSteps));
              }
            }
            // The growth is the median of the repetitions' ratios, each from one repetition's
            // pair: the ratio of the medians could pair a quiet repetition's step at 128 with a
            // busy one's at 1,024 (Stop 37: ×1.18 where the repetitions read ×1.25 / 1.22 / 1.18).
            const pairs = pairRatios(at.skein1024, at.skein128);
            const g = { at128: median(at.skein128), at1024: median(at.skein1024), growth: median(pairs), llama: G ? median(pairRatios(at.llama1024, at.llama128)) : null };
            log(`context growth (${n} thread${n > 1 ? 's' : ''}): Skein step ${g.at128.toFixed(1)} ms at 128 → ${g.at1024.toFixed(1)} ms at 1024 (medians; growth ×${g.growth.toFixed(2)}, the median of each repetition's ×${pairs.map((x) => x.toFixed(2)).join(', ')}, steps alternating); llama.cpp ×${g.llama?.toFixed(2) ?? '—'}`);
            return g;
          };
          // Without best: both sides on `threads`, as before.
          const counts = best ? [1, 2] : [threads];
          const grown = new Map<number, Awaited<ReturnType<typeof growthAt>>>();
          for (const n of counts) grown.set(n, await growthAt(n, llamaAt(n)));
          if (best) kernels.setThreads(1);
          const decodeB1 = figures[`decode_b1_${type}`];
          const skeinN = best ? (decodeB1?.skeinThreads ?? 1) : counts[0];
          const llamaN = best ? (decodeB1?.llamacppThreads ?? 1) : counts[0];
          const s = grown.get(skeinN)!;
          const l = grown.get(llamaN)!;
          ratios.step1024_vs_step128 = round2(s.growth);
          figures.step_ms = {
            skein128: round2(s.at128),
            skein1024: round2(s.at1024),
            llamacppGrowth: l.llama === null ? null : round2(l.llama),
            ...(best ? { skeinThreads: skeinN, llamacppThreads: llamaN } : {}),
            ...Object.fromEntries([...grown].flatMap(([n, g]) => [
              [`skeinGrowth${n}`, round2(g.growth)],
              [`llamacppGrowth${n}`, g.llama === null ? null : round2(g.llama)],
            ])),
          };
          if (best) log(`context growth at each side's best decode thread count: Skein ×${s.growth.toFixed(2)} (${skeinN}), llama.cpp ×${l.llama?.toFixed(2) ?? '—'} (${llamaN})`);
          if (weightBytes !== null) {
            const kv = kvTypeOf(model);
            const b = (figures.step_bytes = stepBytesFigure(model.config, weightBytes, kv));
            log(`context growth's floor: a step reads ${(b.at128 / 1e6).toFixed(1)} MB at 128 tokens of context → ${(b.at1024 / 1e6).toFixed(1)} MB at 1,024 (weights in the kernels' memory plus ${kv} K/V), ×${b.ratio.toFixed(3)}: the growth of a step that streams its K/V at the rate it streams its weights`);
          }
        }
      } finally {
        await llama?.close();
        await llama1?.close();
        model.dispose();
      }
    }
    return { backend, kernels: kernelsBuild, model: random ? 'random' : source, reps, steps, threads: best ? 'best' : threads, figures, ratios };
  },
});
