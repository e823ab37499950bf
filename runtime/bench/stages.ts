/**
 * `skein bench stages`: skipped-layer decode (Unified Layer Skipping) and pruned prefill
 * (LazyLLM) on the default model — SmolLM2-135M-Instruct when models/ holds it, else
 * skein-mini (the figures say which) — each against the plain run and its baselines, in one
 * run, on the same items, through the batched scheduler the engine uses (greedy):
 *
 * - Decode (a short QA prompt, `decode-tokens` generated, runs interleaved `reps` times):
 *   tokens/s after the first token for full depth, ULS at r = 2 (lossy), the Early Exit
 *   baseline (first k layers), a contiguous middle block skipped (same k), and the
 *   self-speculative mode at r = 2 and at a milder `spec-target` (default 1.25), the latter
 *   also drafting with a middle block skipped (`selfspec_mid…`): each output is checked
 *   token for token against the full run (`…_identical`). Beside them, what
 *   self-speculation could reach on this machine (speculation-ceiling.ts): from the lossy
 *   step's measured cost and the forward measured by rows, the speedup with every draft
 *   accepted (`…_selfspec_ceiling_vs_full`) and at the acceptance measured
 *   (`…_selfspec_expected_vs_full`). The self-speculative variants draft by those costs
 *   as the engine's do (scheduler/self-spec-cost.ts; SKEIN_MEASURED_COSTS=0: the
 *   acceptance-only rule).
 * - Perplexity on held-out text (the project's generated passages, not any model's training
 *   data): the first `ppl-context` tokens prefilled at full depth, the next `ppl-tokens`
 *   scored teacher-forced through the kept layers (what lossy decoding computes).
 * - Agreement of each lossy variant's greedy output with the full model's: share of equal
 *   tokens and the first position where they part.
 * - Prefill, `parts=lazy` (`items` passage-QA prompts padded with other passages to each of
 *   `tokens` (a list: `tokens=2048,4096`), the scheduler's 128-token chunks): TTFT for full,
 *   LazyLLM with Aux-Cache revival (`revive` per layer and step, default the stage's) on the
 *   schedule under test (`lazy-layers` + `lazy-keep`, or `keep` at the paper's depths, else
 *   the stage's default), the same schedule without revival, static pruning (one stage at the
 *   first layer, same final share, no revival), random pruning (same schedule, random
 *   tokens) and any `alt` schedules (`alt=4,10,20:0.5,0.3,0.2;…`); `variants` picks some.
 *   Accuracy (the answer in the greedy output) and the answer's NLL, teacher-forced through
 *   the same scheduler path (so revival in decode counts), on the same items; the share of
 *   token-layers each schedule computes. Keys per length: `lazy_ttft_2k_vs_full`,
 *   `lazy_accuracy_2k_delta`, `lazy_answer_nll_2k_delta`, ….
 * - Stacking, `parts=stacked` (the same prompts): compress to 33 % (the engine's compress
 *   stage, its default scorer), then prunedPrefill and skipLayers r=2 (lossy) on what is
 *   left, vs the plain run and compress alone: TTFT (compression included), decode tok/s,
 *   accuracy and answer NLL; the answer's retention in the compressed prompt beside a
 *   random-score control (the compress re-measure on this model). `scorers=L:V,…` adds
 *   compress alone with other scorers (L layers, vocabulary V = full | context) beside it:
 *   `compress33_l<L>_<V>_ttft_vs_full`, `…_answer_retained`, `…_accuracy_delta`.
 * - SoT, `parts=sot` (stages-sot.ts): graphs/sot.json end to end, plain vs stages stacked on
 *   its model calls (`stacked_sot_vs_plain`, `selfspec_sot_vs_plain`).
 * - With the model's skip adapter for r = 2 (`skein train skip`, runtime/adapters): the same
 *   decode, agreement and perplexity figures for the adapted kept layers (`skip2_adapted…`,
 *   merged and re-quantized to each projection's own type as the runtime does; `…_q8` to
 *   q8_0), and self-speculative drafting with them (`skip2_selfspec_adapted…`);
 *   beside them the bandwidth bound (`…_bandwidth_bound`: weight bytes per decode step, full ÷
 *   kept, runtime/stages/decode-bytes.ts).
 *
 * `--arg parts=decode,ppl,lazy,stacked,sot` runs only some parts (decode,ppl,lazy by default;
 * `prefill` is lazy's old name). `--arg first=K --arg pool-items=P` runs items K.. of a
 * P-item set (the same prompts as one run of P items), to split a slow set over processes.
 *
 * @example
 * npx skein bench stages --json --arg parts=lazy --arg items=3 --arg tokens=2048,4096
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { NotAvailableError } from '../../core/errors.js';
import { resolveSampling } from '../../core/sampling.js';
import { MODELS_DIR } from '../checkpoint/load.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { benchModel, round } from '../engine/bench-support.js';
import { loadEngineModel } from '../engine/model-spec.js';
import { adaptedModel, type AdaptedModel } from '../adapters/adapted-model.js';
import { checkpointSha256, findSkipAdapter, readSkipAdapter } from '../adapters/skip-adapter.js';
import { headsFacts } from '../engine/core.js';
import { forward, prepareModel } from '../model/forward.js';
import { mulberry32 } from '../model/random.js';
import type { LayerKvChunks, LoadedModel } from '../model/types.js';
import { pruneSteps, Scheduler, type SequenceShape, type SequenceSummary, type TokenSampler } from '../scheduler/scheduler.js';
import { decodeWeightBytes } from '../stages/decode-bytes.js';
import { lazySchedule, randomKeep, tokenLayerShare, type LazySchedule } from '../stages/lazy-schedule.js';
import { compressIds, questionOf, randomScoreCompress } from './compress.js';
import { DEFAULT_SCORER_VOCAB, defaultScorerLayers } from '../stages/compress-stage.js';
import type { ScorerVocab } from '../stages/scorer-head.js';
import { earlyExitLayers, middleBlockLayers, unifiedLayers } from '../stages/layer-selection.js';
import { measureSelfSpecCost } from '../scheduler/self-spec-cost.js';
import { speculationCeiling } from '../scheduler/speculation-ceiling.js';
import { measureCosts } from '../train/heads-train.js';
import { scoreEvalItem, type EvalItem } from '../train/data/instruct.js';
import { registerBench } from './index.js';
import { measureSotStacked } from './stages-sot.js';
import { pairedDelta } from './paired.js';

const DEFAULT_MODEL = 'smollm2-135m-instruct';
const CHUNK = 128;

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

export function logSoftmaxAt(row: Float32Array, id: number): number {
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  return row[id]! - max - Math.log(sum);
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

interface Run {
  tokens: number[];
  ttftMs: number;
  /** CPU time of this process to the first token: unlike wall time, it does not count while the box's other jobs hold the cores or the process is paused. */
  ttftCpuMs: number;
  decodeTps: number;
  /** Tokens after the first per second of this process's CPU time (robust to the box's other work). */
  decodeCpuTps: number;
  summary: SequenceSummary;
}

/**
 * A scheduler that runs one request at a time with the sampler `use` sets before each submit
 * (the scheduler asks for a request's sampler at submit). `prefixSharing` keeps a finished
 * request's prompt KV for the next one: the full model's teacher-forced pass reuses its
 * greedy run's prefill, which saves a whole long prefill per item.
 */
function benchScheduler(model: LoadedModel, prefixSharing: boolean): { s: Scheduler; use: (x: TokenSampler) => void } {
  let sampler: TokenSampler = (row) => argmax(row);
  const s = new Scheduler({ model, sampler: () => sampler, prefillChunk: CHUNK, prefixSharing });
  return { s, use: (x) => (sampler = x) };
}

/** One request alone on a fresh scheduler (no prefix cache) or the given one, greedy unless a sampler is given, timed per token. */
function runOne(
  model: LoadedModel,
  ids: number[],
  maxTokens: number,
  shape?: SequenceShape,
  sampler: TokenSampler = (row) => argmax(row),
  reuse?: ReturnType<typeof benchScheduler>,
): Run {
  const bench = reuse ?? benchScheduler(model, false);
  bench.use(sampler);
  const s = bench.s;
  const tokens: number[] = [];
  let tFirst = 0;
  let cpuFirst = 0;
  let summary: SequenceSummary | undefined;
  let error: Error | undefined;
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const c0 = cpu();
  const t0 = performance.now();
  s.submit(
    { id: 'bench', ids, eosIds: [], sampling: resolveSampling({ maxTokens }), ...(shape ? { shape } : {}) },
    {
      token: (t) => {
        if (tFirst === 0) {
          tFirst = performance.now();
          cpuFirst = cpu();
        }
        tokens.push(t);
      },
      done: (d) => (summary = d),
      error: (e) => (error = e),
    },
  );
  while (s.hasWork()) s.step();
  const t1 = performance.now();
  const cpu1 = cpu();
  if (reuse === undefined) s.pool.clearCache();
  if (error) throw error;
  return { tokens, ttftMs: tFirst - t0, ttftCpuMs: cpuFirst - c0, decodeTps: ((tokens.length - 1) * 1000) / (t1 - tFirst), decodeCpuTps: ((tokens.length - 1) * 1000) / (cpu1 - cpuFirst), summary: summary! };
}

/**
 * Mean −log p of `answer` after `ids`, teacher-forced through the scheduler with `shape`: the
 * sampler records each row's −log p of the next answer token and returns that token, so
 * the rows are the ones a shaped run computes (pruned prefill, revival in decode).
 */
function forcedNll(model: LoadedModel, ids: number[], answer: number[], shape?: SequenceShape, reuse?: ReturnType<typeof benchScheduler>): { nll: number; run: Run } {
  const nll: number[] = [];
  const run = runOne(
    model,
    ids,
    answer.length,
    shape,
    (row) => {
      const next = answer[nll.length]!;
      nll.push(-logSoftmaxAt(row, next));
      return next;
    },
    reuse,
  );
  return { nll: mean(nll), run };
}

/**
 * Mean −log p of `target` after `context`, context prefilled at full depth (chunked, pruned
 * as `shape` says), target through `layers` of `decodeModel` (default the model itself).
 */
function teacherForcedNll(
  model: LoadedModel,
  context: number[],
  target: number[],
  opts: { layers?: number[]; prune?: SequenceShape['prune']; decodeModel?: LoadedModel } = {},
): number {
  // One sequence's KV as the forward's chunk lists (the scheduler's paged pool is not needed
  // for a single teacher-forced pass); a pruned or skipped layer's null entry adds nothing.
  const past: LayerKvChunks[] = Array.from({ length: model.config.numLayers }, () => ({ k: [], v: [] }));
  let last: Float32Array | undefined;
  for (let at = 0; at < context.length; at += CHUNK) {
    const part = context.slice(at, at + CHUNK);
    const prune = opts.prune && part.length > 1 ? pruneSteps(opts.prune, part.length) : undefined;
    const [r] = forward(model, [{ ids: part, past: at > 0 ? past : undefined, ...(prune ? { prune } : {}) }]);
    r!.newKv.forEach((e, l) => {
      if (e) past[l]!.k.push(e.k), past[l]!.v.push(e.v);
    });
    last = r!.logits[0];
  }
  const nll = [-logSoftmaxAt(last!, target[0]!)];
  if (target.length > 1) {
    const [r] = forward(opts.decodeModel ?? model, [{ ids: target.slice(0, -1), past: past, logits: 'all' }], opts.layers ? { layers: opts.layers } : {});
    r!.logits.forEach((row, i) => nll.push(-logSoftmaxAt(row, target[i + 1]!)));
    tf.dispose(r!.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
  }
  tf.dispose(past.flatMap((layer) => [...layer.k, ...layer.v]));
  return mean(nll);
}

/** Token agreement with the reference and the first position where they differ (its length when none). */
function agreement(a: number[], ref: number[]): { share: number; firstDivergence: number } {
  let same = 0;
  let first = -1;
  ref.forEach((t, i) => {
    if (a[i] === t) same++;
    else if (first < 0) first = i;
  });
  return { share: same / ref.length, firstDivergence: first < 0 ? ref.length : first };
}

/** Passage-QA items (generated from the project's corpus: no model was trained on them). */
export async function qaItems(n: number): Promise<EvalItem[]> {
  const { buildCorpus } = await import('../train/data/corpus.js');
  const { buildEvalItems } = await import('../train/data/instruct.js');
  return buildEvalItems(buildCorpus(), { seed: 1201, perKind: n * 4 }).filter((i) => i.kind === 'qa');
}

/** The passage text of an item without its instruction and question lines (a distractor document). */
function passageOf(item: EvalItem): string {
  return item.messages
    .at(-1)!
    .content.split('\n')
    .filter((line) => line.length > 0 && !/^(Question:|Answer|Read the|Text:)/.test(line))
    .join('\n');
}

/** The item's chat prompt with other passages before it until about `tokens` tokens. */
export function longPrompt(tokenizer: ModelTokenizer, item: EvalItem, others: EvalItem[], tokens: number): number[] {
  const own = tokenizer.encode(tokenizer.renderChat(item.messages), { addSpecialTokens: false });
  let pad = '';
  for (const o of others) {
    if (tokenizer.encode(pad, { addSpecialTokens: false }).length + own.length >= tokens) break;
    pad += `${passageOf(o)}\n\n`;
  }
  const padIds = tokenizer.encode(pad, { addSpecialTokens: false }).slice(0, Math.max(0, tokens - own.length));
  const padText = tokenizer.decode(padIds, { skipSpecialTokens: true });
  const messages = item.messages.map((m, i) => (i === item.messages.length - 1 ? { ...m, content: `Background documents:\n${padText}\n\n${m.content}` } : m));
  return tokenizer.encode(tokenizer.renderChat(messages), { addSpecialTokens: false });
}

interface Settings {
  items: EvalItem[];
  /** Every built item: the pool distractor passages come from. */
  pool: EvalItem[];
  /** Prompt lengths for lazy (each); stacked uses the first. */
  tokens: number[];
  decodeTokens: number;
  reps: number;
  /** The LazyLLM schedule under test (scheduleUnderTest): shares and layers, absent for the stage's default. */
  lazyKeep?: number[];
  lazyLayers?: number[];
  /** Which of lazy, lazy_norevive, static, random run beside full. */
  lazyVariants: string[];
  /** Further schedules measured beside (`--arg alt=8,18,26:0.5,0.3,0.2;6,12,20:0.6,0.4,0.25`). */
  lazyAlternatives: { layers: number[]; keep: number[] }[];
  specTarget: number;
  drafts: number;
  pplContext: number;
  pplTokens: number;
  /** Aux Cache revival per layer and step; the stage's default when absent. */
  revive?: number;
  /** Compress scorers measured beside the engine's (`--arg scorers=30:full,4:context`). */
  scorers: Scorer[];
}

/** A compress scorer: its layers and softmax vocabulary (runtime/stages/scorer-head.ts). */
interface Scorer {
  layers: number;
  vocab: ScorerVocab;
}

interface Part {
  ratios: Record<string, number>;
  quality: Record<string, number | boolean>;
  figures: Record<string, unknown>;
}

type Log = (line: string) => void;

/** The model's skip adapter for r = 2 merged two ways (each projection's own type, the runtime's, and q8_0), or null when it has none. */
type Adapted = { same: AdaptedModel; q8: AdaptedModel } | null;

/** Variants per adapted model: `skip2_adapted…` (own type, the runtime's) and `skip2_adapted_q8…`; `make` gives them by suffix. */
function adaptedVariants<T>(adapted: Adapted, make: (m: AdaptedModel) => Record<string, T>): Record<string, T> {
  if (adapted === null) return {};
  const out: Record<string, T> = {};
  for (const [tag, m] of [['adapted', adapted.same], ['adapted_q8', adapted.q8]] as const) {
    for (const [suffix, v] of Object.entries(make(m))) out[suffix === '' ? `skip2_${tag}` : `skip2_${suffix}_${tag}`] = v;
  }
  return out;
}

/** Reads and merges the model's r = 2 skip adapter, when it has one. */
function loadAdapted(model: LoadedModel, log: Log): { adapted: Adapted; figures: Record<string, unknown> } {
  const facts = headsFacts(model);
  const file = findSkipAdapter(facts, 2);
  if (file === undefined) {
    log(`stages: no skip adapter for r=2 (npx skein train skip --model ${facts.name} --target 2): adapted variants not measured`);
    return { adapted: null, figures: {} };
  }
  const adapter = readSkipAdapter(file, model.config, checkpointSha256(model.source));
  const same = adaptedModel(model, adapter);
  const q8 = adaptedModel(model, adapter, { blockType: 'q8_0' });
  const mb = (n: number) => round(n / 2 ** 20, 1);
  // The merged layers' f32 tensors are made only if something reads them (adapted-model.ts): the blocks are what a merge costs.
  log(`stages: skip adapter ${file} (rank ${adapter.meta.rank}); merged: ${mb(same.ownedBytes.blocks)} MB blocks of the base's types (q8_0: ${mb(q8.ownedBytes.blocks)} MB)`);
  return {
    adapted: { q8, same },
    figures: {
      skip_adapter: {
        file: path.relative(process.cwd(), file),
        rank: adapter.meta.rank,
        training: adapter.meta.training,
        merged_mb: { same_type_blocks: mb(same.ownedBytes.blocks), q8_0_blocks: mb(q8.ownedBytes.blocks) },
      },
    },
  };
}

/** Decode tokens/s: full vs ULS r=2 (unadapted and adapted) vs baselines vs self-speculative, interleaved reps. */
function measureDecode(model: LoadedModel, tokenizer: ModelTokenizer, o: Settings, log: Log, adapted: Adapted): Part {
  const L = model.config.numLayers;
  const shortIds = tokenizer.encode(tokenizer.renderChat([{ role: 'user', content: `${passageOf(o.items[0]!).slice(0, 300)}\nSummarise this text.` }]), {
    addSpecialTokens: false,
  });
  const uls = unifiedLayers(L, 2);
  const variants: Record<string, SequenceShape | undefined> = {
    full: undefined,
    skip2: { decodeLayers: uls },
    early_exit2: { decodeLayers: earlyExitLayers(L, 2) },
    middle_block2: { decodeLayers: middleBlockLayers(L, 2) },
    skip2_selfspec: { decodeLayers: uls, skipMode: 'self-speculative', drafts: o.drafts },
    [`selfspec_r${String(o.specTarget).replace('.', '')}`]: { decodeLayers: unifiedLayers(L, o.specTarget), skipMode: 'self-speculative', drafts: o.drafts },
    // The same layer count drafting with a middle block skipped instead: for targets below 2
    // the ULS rule (interval 1) skips the block just before the last layer, which SmolLM2
    // does not survive (top-1 agreement 0 % at 24/30 layers vs 57 % with a middle block).
    [`selfspec_mid${String(o.specTarget).replace('.', '')}`]: { decodeLayers: middleBlockLayers(L, o.specTarget), skipMode: 'self-speculative', drafts: o.drafts },
    // The kept layers with the model's skip adapter merged in (`skein train skip`), beside the
    // unadapted ones: re-quantized to each projection's own type (what the runtime uses) and to q8_0.
    ...adaptedVariants(adapted, (m) => ({
      '': { decodeLayers: uls, decodeModel: m },
      selfspec: { decodeLayers: uls, skipMode: 'self-speculative' as const, drafts: o.drafts, decodeModel: m },
    })),
  };
  // As the engine does: self-speculative sequences draft by this machine's measured costs
  // (scheduler/self-spec-cost.ts) unless SKEIN_MEASURED_COSTS=0 (the acceptance-only rule).
  if (process.env.SKEIN_MEASURED_COSTS !== '0') {
    for (const shape of Object.values(variants)) {
      if (shape?.skipMode === 'self-speculative') shape.selfSpecCost = measureSelfSpecCost(model, shape.decodeLayers!, shape.drafts!, shape.decodeModel);
    }
  }
  log(`stages: decode ${o.decodeTokens} tokens after a ${shortIds.length}-token prompt, ${o.reps} interleaved reps; ULS r=2 keeps ${uls.length}/${L}: [${uls.join(',')}]${process.env.SKEIN_MEASURED_COSTS === '0' ? '; self-speculation without its cost model' : ''}`);
  runOne(model, shortIds, 4); // warm-up: kernels for these shapes
  // and the adapted models' own prepared weights (made on their first forward)
  for (const shape of Object.values(variants)) if (shape?.decodeModel !== undefined) runOne(model, shortIds, 4, { ...shape, skipMode: 'lossy' });
  const runs: Record<string, Run[]> = {};
  for (let rep = 0; rep < o.reps; rep++) {
    for (const [name, shape] of Object.entries(variants)) {
      const r = runOne(model, shortIds, o.decodeTokens, shape);
      (runs[name] ??= []).push(r);
      const f = r.summary.shape;
      log(`  ${name.padEnd(16)} ${r.decodeTps.toFixed(2)} tok/s (cpu ${r.decodeCpuTps.toFixed(2)})${f?.draftsProposed ? `  drafts ${f.draftsAccepted}/${f.draftsProposed} accepted` : ''}`);
    }
  }
  const tps = (name: string) => mean(runs[name]!.map((r) => r.decodeTps));
  const cpuTps = (name: string) => mean(runs[name]!.map((r) => r.decodeCpuTps));
  const fullTokens = runs.full![0]!.tokens;
  const part: Part = { ratios: {}, quality: {}, figures: {} };
  for (const name of Object.keys(variants).filter((n) => n !== 'full')) {
    part.ratios[`${name}_decode_vs_full`] = round(tps(name) / tps('full'));
    part.ratios[`${name}_decode_cpu_vs_full`] = round(cpuTps(name) / cpuTps('full'));
    if (variants[name]!.skipMode === 'self-speculative') {
      part.quality[`${name}_identical`] = runs[name]!.every((r) => r.tokens.join() === fullTokens.join());
      const f = runs[name]!.map((r) => r.summary.shape!);
      part.quality[`${name}_acceptance`] = round(mean(f.map((x) => (x.draftsAccepted ?? 0) / Math.max(1, x.draftsProposed ?? 0))));
    } else {
      const a = agreement(runs[name]![0]!.tokens, fullTokens);
      part.quality[`${name}_token_agreement`] = round(a.share);
      part.quality[`${name}_first_divergence`] = a.firstDivergence;
    }
  }
  // What self-speculation could give here: k drafted tokens at the lossy kept-layers step's
  // measured cost each, then k + 1 rows verified at full depth (the forward by rows measured
  // after a 128-token past) — with every draft accepted (the ceiling no drafter passes), and
  // with the acceptance measured above (what the run should read).
  const rowMs = measureCosts(model);
  const ceilings: Record<string, unknown> = {};
  for (const name of Object.keys(variants).filter((n) => n.startsWith('skip2_selfspec'))) {
    const lossy = `skip2${name.slice('skip2_selfspec'.length)}`; // skip2_selfspec_adapted drafts as skip2_adapted does
    if (runs[lossy] === undefined) continue;
    const draftMs = (k: number) => (k * rowMs(1) * tps('full')) / tps(lossy);
    // Any chain length up to 16, not just the stage's: no number of drafts passes it.
    const every = speculationCeiling({ rowMs, batch: 1, draftMs, maxDrafts: Math.max(o.drafts, 16) });
    const expected = speculationCeiling({ rowMs, batch: 1, draftMs, maxDrafts: o.drafts, acceptance: part.quality[`${name}_acceptance`] as number });
    part.ratios[`${name}_ceiling_vs_full`] = round(every.speedup);
    part.ratios[`${name}_expected_vs_full`] = round(expected.speedup);
    ceilings[name] = { every_draft_accepted: { speedup: round(every.speedup), drafts: every.drafts }, at_measured_acceptance: { speedup: round(expected.speedup), drafts: expected.drafts } };
  }
  part.figures.selfspec_ceiling = ceilings;
  log(`  self-speculation on this machine's forward costs: ${JSON.stringify(ceilings)}`);
  part.figures.decode_tokens_per_sec = Object.fromEntries(Object.keys(variants).map((n) => [n, round(tps(n))]));
  part.figures.decode_cpu_tokens_per_sec = Object.fromEntries(Object.keys(variants).map((n) => [n, round(cpuTps(n))]));
  // The bandwidth bound: weight bytes per decode step, full vs the kept layers (base and adapted weights).
  const all = Array.from({ length: L }, (_, l) => l);
  const bytes: Record<string, number> = {
    full: decodeWeightBytes(model, all),
    skip2: decodeWeightBytes(model, uls),
    ...adaptedVariants(adapted, (m) => ({ '': decodeWeightBytes(m, uls) })),
  };
  part.figures.decode_weight_mb = Object.fromEntries(Object.entries(bytes).map(([k, v]) => [k, round(v / 1e6, 2)]));
  for (const [k, v] of Object.entries(bytes)) if (k !== 'full') part.ratios[`${k}_bandwidth_bound`] = round(bytes.full! / v);
  return part;
}

/** Perplexity of held-out text scored through the kept layers (context prefilled at full depth). */
function measurePpl(model: LoadedModel, tokenizer: ModelTokenizer, o: Settings, log: Log, adapted: Adapted): Part {
  const L = model.config.numLayers;
  const texts = o.items.map((it) => tokenizer.encode(passageOf(it), { addSpecialTokens: false })).filter((t) => t.length >= o.pplContext + 8);
  const variants: Record<string, number[] | undefined> = {
    full: undefined,
    skip2: unifiedLayers(L, 2),
    early_exit2: earlyExitLayers(L, 2),
    middle_block2: middleBlockLayers(L, 2),
  };
  const decodeModels: Record<string, LoadedModel> = adaptedVariants(adapted, (m) => ({ '': m }));
  for (const name of Object.keys(decodeModels)) variants[name] = unifiedLayers(L, 2);
  const ppl: Record<string, number> = {};
  for (const [name, layers] of Object.entries(variants)) {
    const opts = { ...(layers ? { layers } : {}), ...(decodeModels[name] ? { decodeModel: decodeModels[name] } : {}) };
    const nll = texts.map((t) => teacherForcedNll(model, t.slice(0, o.pplContext), t.slice(o.pplContext, o.pplContext + o.pplTokens), opts));
    ppl[name] = Math.exp(mean(nll));
    log(`  ppl ${name.padEnd(14)} ${ppl[name]!.toFixed(2)}`);
  }
  const part: Part = { ratios: {}, quality: {}, figures: { ppl: Object.fromEntries(Object.entries(ppl).map(([k, v]) => [k, round(v)])) } };
  for (const name of Object.keys(variants).filter((n) => n !== 'full')) part.quality[`${name}_ppl_delta`] = round(ppl[name]! - ppl.full!);
  return part;
}

interface Scored {
  ttft: number[];
  ttftCpu: number[];
  decodeTps: number[];
  pass: number[];
  nll: number[];
  revived: number[];
}

/** Each item's prompt run greedily (TTFT, accuracy) and teacher-forced on its answer (NLL, a second TTFT) per variant, variants interleaved. */
function scoreVariants(
  model: LoadedModel,
  tokenizer: ModelTokenizer,
  o: Settings,
  prompts: number[][],
  variants: Record<string, { shape?: SequenceShape; prompt?: (k: number) => { ids: number[]; ms: number; cpuMs: number } }>,
  log: Log,
): Record<string, Scored> {
  const out: Record<string, Scored> = {};
  o.items.forEach((item, k) => {
    const answer = tokenizer.encode(item.expected, { addSpecialTokens: false });
    for (const [name, v] of Object.entries(variants)) {
      const { ids, ms, cpuMs } = v.prompt?.(k) ?? { ids: prompts[k]!, ms: 0, cpuMs: 0 };
      // An unshaped variant's teacher-forced pass reuses its greedy run's prompt KV (no second
      // long prefill; its TTFT is not a sample then); a shaped one's prefill is private, so it
      // runs again and gives a second TTFT sample.
      const reuse = v.shape === undefined ? benchScheduler(model, true) : undefined;
      const r = runOne(model, ids, GREEDY_TOKENS, v.shape, undefined, reuse);
      const text = tokenizer.decode(r.tokens, { skipSpecialTokens: true });
      const forced = forcedNll(model, ids, answer, v.shape, reuse);
      reuse?.s.pool.clearCache();
      const p = (out[name] ??= { ttft: [], ttftCpu: [], decodeTps: [], pass: [], nll: [], revived: [] });
      p.ttft.push(ms + r.ttftMs, ...(reuse ? [] : [ms + forced.run.ttftMs]));
      p.ttftCpu.push(cpuMs + r.ttftCpuMs, ...(reuse ? [] : [cpuMs + forced.run.ttftCpuMs]));
      p.decodeTps.push(r.decodeTps);
      const pass = scoreEvalItem(item, text).pass;
      p.pass.push(pass ? 1 : 0);
      p.nll.push(forced.nll);
      const revived = Object.values(r.summary.shape?.revivedAtLayer ?? {}).reduce((a, b) => a + b, 0);
      p.revived.push(revived);
      log(
        `  item ${k} (${ids.length} tok) ${name.padEnd(13)} TTFT ${(ms + r.ttftMs).toFixed(0)} ms (cpu ${(cpuMs + r.ttftCpuMs).toFixed(0)})${ms ? ` (compress ${ms.toFixed(0)})` : ''}, answer NLL ${forced.nll.toFixed(2)}${revived ? `, revived ${revived}` : ''}, ${pass ? 'pass' : 'miss'} ${JSON.stringify(text.slice(0, 60))} (expected ${JSON.stringify(item.expected)})`,
      );
    }
  });
  return out;
}

/** Greedy tokens per QA item: room for a preamble ("The answer to the question is: …") before the answer. */
const GREEDY_TOKENS = 24;

function lengthTag(tokens: number): string {
  return tokens >= 1024 ? `${Math.round(tokens / 1024)}k` : `${tokens}`;
}

/**
 * The schedule under test: `lazy-layers` and `lazy-keep` when given, else one `keep` ratio
 * at the paper's depths when given, else the stage's own default (lazy-schedule.ts).
 */
function scheduleUnderTest(L: number, o: Settings): LazySchedule {
  return lazySchedule(L, {
    ...(o.lazyLayers ? { layers: o.lazyLayers } : {}),
    ...(o.lazyKeep ? { keepRatio: o.lazyKeep.length === 1 ? o.lazyKeep[0]! : o.lazyKeep } : {}),
    ...(o.revive !== undefined ? { revive: o.revive } : {}),
  });
}

/**
 * Prefill TTFT, accuracy and answer NLL at each prompt length: full vs LazyLLM with revival
 * vs the same schedule without it vs static (one stage at the first layer, the final share)
 * vs random pruning (the same schedule, random tokens); `variants` picks some.
 */
function measureLazy(model: LoadedModel, tokenizer: ModelTokenizer, o: Settings, log: Log): Part {
  const L = model.config.numLayers;
  const schedule = scheduleUnderTest(L, o);
  const final = schedule.keep.at(-1)!;
  const rng = mulberry32(7);
  const all: Record<string, { shape?: SequenceShape }> = {
    full: {},
    lazy: { shape: { prune: schedule } },
    lazy_norevive: { shape: { prune: { ...schedule, revive: 0 } } },
    static: { shape: { prune: { layers: [schedule.layers[0]!], keep: [final], revive: 0 } } },
    random: { shape: { prune: { ...schedule, revive: 0, choose: (live, count) => randomKeep(live, count, rng) } } },
  };
  // Other schedules beside the one under test (with revival), e.g. to choose a default: `alt_<layers>_<keep %>`.
  for (const alt of o.lazyAlternatives) {
    const a = lazySchedule(L, { layers: alt.layers, keepRatio: alt.keep, ...(o.revive !== undefined ? { revive: o.revive } : {}) });
    all[`alt_${a.layers.join('-')}_${a.keep.map((k) => Math.round(k * 100)).join('-')}`] = { shape: { prune: a } };
  }
  const variants = Object.fromEntries(Object.entries(all).filter(([name]) => name === 'full' || name.startsWith('alt_') || o.lazyVariants.includes(name)));
  const share = (shape?: SequenceShape) => (shape?.prune ? tokenLayerShare(shape.prune, L) : 1);
  const part: Part = {
    ratios: {},
    quality: {},
    figures: {
      lazy_schedule: { layers: schedule.layers, keep: schedule.keep.map((k) => round(k, 3)), revive: schedule.revive },
      lazy_token_layer_share: Object.fromEntries(Object.entries(variants).map(([k, v]) => [k, round(share(v.shape), 3)])),
    },
  };
  for (const tokens of o.tokens) {
    const tag = lengthTag(tokens);
    log(
      `stages: lazy prefill of ${o.items.length} passage-QA prompts of ~${tokens} tokens; LazyLLM layers [${schedule.layers.join(',')}] keep [${schedule.keep.map((k) => k.toFixed(2)).join(',')}] (${(100 * share(variants.lazy?.shape)).toFixed(0)} % of the token-layers), revive ${schedule.revive}`,
    );
    const prompts = o.items.map((item) => longPrompt(tokenizer, item, o.pool.filter((p) => p !== item), tokens));
    runOne(model, prompts[0]!.slice(0, 2 * CHUNK), 1); // warm-up: one-time costs of the chunk shapes
    const out = scoreVariants(model, tokenizer, o, prompts, variants, log);
    part.quality[`full_accuracy_${tag}`] = round(mean(out.full!.pass));
    part.quality[`full_answer_nll_${tag}`] = round(mean(out.full!.nll));
    part.figures[`lazy_${tag}`] = {
      prompt_tokens: round(mean(prompts.map((p) => p.length)), 0),
      ttft_ms: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.ttft), 0)])),
      ttft_cpu_ms: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.ttftCpu), 0)])),
      accuracy: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.pass))])),
      answer_nll: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.nll))])),
      revived_per_item: round(mean(out.lazy?.revived ?? [])),
      // Each item's pass (1) or miss (0) per variant, in item order: runs split over processes (`first`) pair up again.
      pass_by_item: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.pass])),
    };
    for (const name of Object.keys(variants).filter((n) => n !== 'full')) {
      part.ratios[`${name}_ttft_${tag}_vs_full`] = round(mean(out.full!.ttft) / mean(out[name]!.ttft));
      part.ratios[`${name}_ttft_${tag}_cpu_vs_full`] = round(mean(out.full!.ttftCpu) / mean(out[name]!.ttftCpu));
      // The paired difference, its 95 % interval and the items behind it (paired.ts).
      const paired = pairedDelta(out[name]!.pass, out.full!.pass);
      part.quality[`${name}_accuracy_${tag}_delta`] = round(paired.delta);
      part.quality[`${name}_accuracy_${tag}_delta_ci95_low`] = round(paired.ci95[0]);
      part.quality[`${name}_accuracy_${tag}_delta_ci95_high`] = round(paired.ci95[1]);
      part.quality[`${name}_accuracy_${tag}_gained`] = paired.gained;
      part.quality[`${name}_accuracy_${tag}_lost`] = paired.lost;
      part.quality[`${name}_answer_nll_${tag}_delta`] = round(mean(out[name]!.nll) - mean(out.full!.nll));
    }
  }
  return part;
}

/** compress 33 % + prunedPrefill + skipLayers r=2 (lossy) vs plain and vs compress alone, on the same prompts. */
function measureStacked(model: LoadedModel, tokenizer: ModelTokenizer, o: Settings, log: Log): Part {
  const L = model.config.numLayers;
  const schedule = scheduleUnderTest(L, o);
  const uls = unifiedLayers(L, 2);
  const prompts = o.items.map((item) => longPrompt(tokenizer, item, o.pool.filter((p) => p !== item), o.tokens[0]!));
  // Compression is timed where it runs (the engine does it before prefill), once per item and reused.
  const compressAll = (scorer: Scorer) =>
    prompts.map((ids, k) => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const kept = compressIds(model, tokenizer, ids, 0.33, questionOf(o.items[k]!), scorer.layers, scorer.vocab);
      const c = process.cpuUsage(c0);
      return { ids: kept, ms: performance.now() - t0, cpuMs: (c.user + c.system) / 1000 };
    });
  // compress33 is the engine's compress stage as it runs (its default scorer); the others beside it.
  const engineScorer: Scorer = { layers: defaultScorerLayers(L), vocab: DEFAULT_SCORER_VOCAB };
  const scorers: Record<string, Scorer> = { compress33: engineScorer };
  for (const sc of o.scorers) scorers[`compress33_l${sc.layers}_${sc.vocab}`] ??= sc;
  const compressedBy = Object.fromEntries(Object.entries(scorers).map(([name, sc]) => [name, compressAll(sc)]));
  const compressed = compressedBy.compress33!;
  const retained = (ids: number[], k: number) => (tokenizer.decode(ids, { skipSpecialTokens: true }).includes(o.items[k]!.expected) ? 1 : 0);
  const variants: Record<string, { shape?: SequenceShape; prompt?: (k: number) => { ids: number[]; ms: number; cpuMs: number } }> = {
    full: {},
    ...Object.fromEntries(Object.entries(compressedBy).map(([name, c]) => [name, { prompt: (k: number) => c[k]! }])),
    stacked: { prompt: (k: number) => compressed[k]!, shape: { prune: schedule, decodeLayers: uls } satisfies SequenceShape },
  };
  log(
    `stages: stacked on ${o.items.length} prompts of ~${o.tokens[0]} tokens: compress 33 % (scorer: ${engineScorer.layers} layers, ${engineScorer.vocab} vocabulary; beside it ${Object.keys(scorers).slice(1).join(', ') || 'none'}) → prunedPrefill keep [${schedule.keep.map((k) => k.toFixed(2)).join(',')}] → skipLayers r=2 [${uls.join(',')}]`,
  );
  runOne(model, compressed[0]!.ids, 1); // warm-up at the compressed length
  const out = scoreVariants(model, tokenizer, o, prompts, variants, log);
  const part: Part = {
    ratios: {},
    quality: {
      ...Object.fromEntries(Object.entries(compressedBy).map(([name, c]) => [`${name}_answer_retained`, round(mean(c.map((x, k) => retained(x.ids, k))))])),
      compress33_answer_retained_random_scores: round(mean(prompts.map((ids, k) => retained(randomScoreCompress(tokenizer, ids, 0.33, questionOf(o.items[k]!), k + 1), k)))),
    },
    figures: {
      compress33_scorer: engineScorer,
      stacked_ttft_ms: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.ttft), 0)])),
      stacked_ttft_cpu_ms: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.ttftCpu), 0)])),
      stacked_decode_tokens_per_sec: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, round(mean(v.decodeTps))])),
      compress_ms: Object.fromEntries(Object.entries(compressedBy).map(([name, c]) => [name, round(mean(c.map((x) => x.ms)), 0)])),
      compress_cpu_ms: Object.fromEntries(Object.entries(compressedBy).map(([name, c]) => [name, round(mean(c.map((x) => x.cpuMs)), 0)])),
      compress_tokens: Object.fromEntries(Object.entries(compressedBy).map(([name, c]) => [name, round(mean(c.map((x) => x.ids.length)), 0)])),
      prompt_tokens: round(mean(prompts.map((p) => p.length)), 0),
    },
  };
  for (const name of [...Object.keys(scorers), 'stacked']) {
    part.ratios[`${name}_ttft_vs_full`] = round(mean(out.full!.ttft) / mean(out[name]!.ttft));
    part.ratios[`${name}_ttft_cpu_vs_full`] = round(mean(out.full!.ttftCpu) / mean(out[name]!.ttftCpu));
    part.ratios[`${name}_decode_vs_full`] = round(mean(out[name]!.decodeTps) / mean(out.full!.decodeTps));
    part.quality[`${name}_accuracy_delta`] = round(mean(out[name]!.pass) - mean(out.full!.pass));
    part.quality[`${name}_answer_nll_delta`] = round(mean(out[name]!.nll) - mean(out.full!.nll));
  }
  return part;
}

/** A comma-separated list of numbers (`--arg tokens=2048,4096`). */
function numbers(arg: string | undefined): number[] | undefined {
  return arg === undefined ? undefined : arg.split(',').map(Number);
}

registerBench('stages', {
  description: 'skipLayers (ULS, self-speculative) and prunedPrefill (LazyLLM with Aux-Cache revival) vs full and baselines, and stacked with compress: decode tok/s, TTFT, ppl, QA',
  async run({ log, args = {} }) {
    const parts = new Set((args.parts ?? 'decode,ppl,lazy').replace('prefill', 'lazy').split(','));
    const smol = fs.existsSync(path.join(MODELS_DIR, DEFAULT_MODEL));
    const spec = args.model ?? (smol ? DEFAULT_MODEL : benchModel(args));
    const { model, tokenizer } = await loadEngineModel(spec);
    try {
      if (tokenizer === null) throw new NotAvailableError('bench stages', 'the model has no tokenizer');
      prepareModel(model);
      const modelName = typeof spec === 'string' ? spec : 'random';
      log(`stages: model ${modelName} (${model.config.numLayers} layers)${smol || args.model ? '' : ` — ${DEFAULT_MODEL} is not in models/ (npx skein pull ${DEFAULT_MODEL})`}`);
      const nItems = Number(args.items ?? 2);
      // `first` and `pool-items` split one item set over processes: `items=3 first=3 pool-items=6` is items 3..5 of a 6-item run, same prompts.
      const first = Number(args.first ?? 0);
      const pool = await qaItems(Number(args['pool-items'] ?? first + nItems));
      const o: Settings = {
        items: pool.slice(first, first + nItems),
        pool,
        tokens: numbers(args.tokens ?? '1024')!,
        decodeTokens: Number(args['decode-tokens'] ?? 24),
        reps: Number(args.reps ?? 2),
        ...(args['lazy-keep'] ?? args.keep ? { lazyKeep: numbers(args['lazy-keep'] ?? args.keep) } : {}),
        ...(args['lazy-layers'] ? { lazyLayers: numbers(args['lazy-layers']) } : {}),
        lazyVariants: (args.variants ?? 'lazy,lazy_norevive,static,random').split(','),
        lazyAlternatives: (args.alt ?? '')
          .split(';')
          .filter((x) => x.length > 0)
          .map((x) => ({ layers: numbers(x.split(':')[0])!, keep: numbers(x.split(':')[1])! })),
        specTarget: Number(args['spec-target'] ?? 1.25),
        drafts: Number(args.drafts ?? 3),
        pplContext: Number(args['ppl-context'] ?? 96),
        pplTokens: Number(args['ppl-tokens'] ?? 96),
        ...(args.revive !== undefined ? { revive: Number(args.revive) } : {}),
        scorers: (args.scorers ?? '')
          .split(',')
          .filter((x) => x.length > 0)
          .map((x) => ({ layers: Number(x.split(':')[0]), vocab: (x.split(':')[1] ?? 'full') as ScorerVocab })),
      };
      const results: Part[] = [];
      const { adapted, figures: adapterFigures } = parts.has('decode') || parts.has('ppl') ? loadAdapted(model, log) : { adapted: null, figures: {} };
      results.push({ ratios: {}, quality: {}, figures: adapterFigures });
      try {
        if (parts.has('decode')) results.push(measureDecode(model, tokenizer, o, log, adapted));
        if (parts.has('ppl')) results.push(measurePpl(model, tokenizer, o, log, adapted));
      } finally {
        adapted?.q8.dispose();
        adapted?.same.dispose();
      }
      if (parts.has('lazy')) results.push(measureLazy(model, tokenizer, o, log));
      if (parts.has('stacked')) results.push(measureStacked(model, tokenizer, o, log));
      if (parts.has('sot')) results.push(await measureSotStacked(model, tokenizer, modelName, log, Number(args.questions ?? 3)));
      const { items: _items, pool: _pool, ...settings } = o;
      return {
        model: modelName,
        layers: model.config.numLayers,
        settings: { ...settings, items: o.items.length, parts: [...parts] },
        ...Object.assign({}, ...results.map((r) => r.figures)),
        ratios: Object.assign({}, ...results.map((r) => r.ratios)),
        quality: Object.assign({}, ...results.map((r) => r.quality)),
        ...(adapted === null && (parts.has('decode') || parts.has('ppl')) ? { not_measured: 'the adapted skip variants (the model has no skip-r2 adapter)' } : {}),
      };
    } finally {
      model.dispose();
    }
  },
});
