/**
 * `skein bench speculate`: speculative heads (issue #13) on the default model —
 * SmolLM2-135M-Instruct with its committed heads (models/heads/smollm2-135m-instruct) —
 * against plain greedy decoding, in one run, on held-out instruction prompts (the held-out
 * pool of runtime/train/data/instruct.ts, a seed the heads never trained on), through the
 * batched scheduler the engine uses:
 *
 * - batch 1 (each prompt alone, in turn): plain, Medusa, Cerberus, Cerberus with its
 *   calibrated entropy gate;
 * - batch 8 (the prompts submitted together): plain, Medusa and Cerberus with the gate.
 *
 * Tokens/s is generated tokens over wall time, prefill included (the same prompts in every
 * configuration), the median of the reps; beside it decode alone (`*_decode_vs_plain`: from
 * the moment a group's prompts are all prefilled, what heads can speed), since with short
 * answers to long prompts prefill dilutes the end-to-end ratio. The configurations are interleaved per rep so
 * load on the machine hits them alike. Each speculative output is checked token for token against plain greedy
 * (`greedy_identical`); mean accepted length is tokens per verification (1 + accepted
 * drafts); gate rate is the share of decode decisions the gate sent to plain decoding.
 * Beside them, the cost model: forward milliseconds for 1 + n rows after a 128-token
 * past, and the heads' milliseconds per step with their projection onto the whole
 * vocabulary and onto their own (HeadsMeta.vocab); and from them the ceilings
 * (speculation-ceiling.ts): the speedup chains of drafts would give if every draft were
 * accepted — what no heads can pass on this machine.
 *
 * Kernels: the model runs on its own path (the wasm block kernels for the GGUF, whose rows
 * are bit-identical in a tree verification and a one-row step); `--arg kernels=f32` runs
 * the tfjs f32 matrices instead, for comparison.
 *
 * @example
 * npx skein bench speculate --json --arg prompts=4 --arg tokens=64
 */
import * as path from 'node:path';
import { NotAvailableError } from '../../core/errors.js';
import { resolveSampling } from '../../core/sampling.js';
import { loadModel, MODELS_DIR } from '../checkpoint/load.js';
import { round } from '../engine/bench-support.js';
import { availableHeads, findHeadsDir, readHeads } from '../heads/files.js';
import type { LoadedModel } from '../model/types.js';
import { Scheduler, type SequenceShape, type SequenceSummary } from '../scheduler/scheduler.js';
import { HeadsLibrary } from '../stages/speculate.js';
import { speculationCeiling } from '../scheduler/speculation-ceiling.js';
import { instructionPrompts } from '../train/heads-data.js';
import { measureCosts, measureHeads } from '../train/heads-train.js';
import { registerBench } from './index.js';

const DEFAULT_MODEL = 'smollm2-135m-instruct';

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

interface Batch {
  tokens: number[][];
  summaries: SequenceSummary[];
  ms: number;
  /**
   * Decode alone: per group of sequences run together, the time from the moment every one
   * of them has its first token (their prompts prefilled) to the end, and the tokens made in
   * it. Heads speed decode, not prefill; with 48-token answers to prompts of up to 384 tokens
   * prefill is a third of `ms`, the same for every configuration, and dilutes the ratio.
   */
  decodeMs: number;
  decodeTokens: number;
}

/** Greedy generation of every prompt on a fresh scheduler (no prefix cache), `batch` at a time. */
function generate(model: LoadedModel, prompts: number[][], maxTokens: number, batch: number, eosIds: number[], shape?: SequenceShape, maxDraftTokens?: number): Batch {
  const tokens: number[][] = prompts.map(() => []);
  const summaries: SequenceSummary[] = [];
  let decodeMs = 0;
  let decodeTokens = 0;
  const t0 = performance.now();
  for (let at = 0; at < prompts.length; at += batch) {
    const s = new Scheduler({ model, sampler: () => (row) => argmax(row), prefixSharing: false, ...(maxDraftTokens ? { maxDraftTokens } : {}) });
    let error: Error | undefined;
    const group = prompts.slice(at, at + batch);
    const times: number[] = [];
    let started = 0;
    let allStartedAt = Infinity;
    group.forEach((ids, j) =>
      s.submit(
        { id: `p${at + j}`, ids, eosIds, sampling: resolveSampling({ maxTokens }), ...(shape ? { shape } : {}) },
        {
          token: (t) => {
            const now = performance.now();
            if (tokens[at + j]!.length === 0 && ++started === group.length) allStartedAt = now;
            tokens[at + j]!.push(t);
            times.push(now);
          },
          done: (d) => void summaries.push(d),
          error: (e) => (error = e),
        },
      ),
    );
    while (s.hasWork()) s.step();
    const end = performance.now();
    s.pool.clearCache();
    if (error) throw error;
    decodeMs += end - allStartedAt;
    decodeTokens += times.filter((t) => t > allStartedAt).length;
  }
  return { tokens, summaries, ms: performance.now() - t0, decodeMs, decodeTokens };
}

registerBench('speculate', {
  description: 'Medusa / Cerberus heads vs plain greedy decode on the default model: tokens/s at batch 1 and 8, accepted length, gate rate, identical output',
  async run({ log, args = {} }) {
    const spec = args.model ?? DEFAULT_MODEL;
    const nPrompts = Number(args.prompts ?? 4);
    const maxTokens = Number(args.tokens ?? 64);
    const reps = Number(args.reps ?? 1);
    const model = await loadModel(spec, { eagerTokenizer: true });
    const facts = { name: path.basename(model.dir), dir: model.dir };
    const kinds = availableHeads(facts);
    if (!kinds.includes('medusa') || !kinds.includes('cerberus')) {
      model.dispose();
      throw new NotAvailableError(`bench speculate on ${spec}`, `it needs medusa and cerberus heads (have: ${kinds.join(', ') || 'none'}); run \`npx skein train heads --model ${spec} --kind medusa\` and \`--kind cerberus\``);
    }
    if (args.kernels === 'f32') delete model.blockWeights;
    const kernels = model.blockWeights !== undefined ? 'blocks' : 'f32';
    const tokenizer = model.tokenizer();
    const library = new HeadsLibrary(model, facts);
    try {
      const prompts = instructionPrompts(tokenizer, Math.max(nPrompts, 8), true, 11, 384);
      const b1Prompts = prompts.slice(0, nPrompts);
      const b8Prompts = prompts.slice(0, 8);
      const medusa = library.shape({ mode: 'medusa', entropyGate: false });
      const cerberus = library.shape({ mode: 'cerberus', entropyGate: false });
      const gated = library.shape({ mode: 'cerberus' });
      log(`speculate: ${spec} (${kernels} kernels), ${b1Prompts.length} held-out prompts at batch 1, 8 at batch 8, ${maxTokens} tokens each, ${reps} rep(s)`);
      log(`speculate: trees medusa ${medusa.tree.length} nodes, cerberus ${cerberus.tree.length} nodes, gate ${gated.gate ?? 'none'}`);
      const configs = {
        plain_b1: () => generate(model, b1Prompts, maxTokens, 1, tokenizer.eosIds),
        medusa_b1: () => generate(model, b1Prompts, maxTokens, 1, tokenizer.eosIds, { speculate: medusa }),
        cerberus_b1: () => generate(model, b1Prompts, maxTokens, 1, tokenizer.eosIds, { speculate: cerberus }),
        cerberus_gated_b1: () => generate(model, b1Prompts, maxTokens, 1, tokenizer.eosIds, { speculate: gated }),
        plain_b8: () => generate(model, b8Prompts, maxTokens, 8, tokenizer.eosIds),
        medusa_b8: () => generate(model, b8Prompts, maxTokens, 8, tokenizer.eosIds, { speculate: medusa }),
        cerberus_gated_b8: () => generate(model, b8Prompts, maxTokens, 8, tokenizer.eosIds, { speculate: gated }),
      };
      // What a speculating step pays besides its forward: the heads and their projection,
      // onto the whole vocabulary and onto the heads' own (before / after HeadsMeta.vocab);
      // and what verifying n rows costs in multiples of a one-row step.
      const cost = measureCosts(model);
      const verifyCost = Object.fromEntries([1, 2, 3, 5, 9, 17].map((n) => [n, round(cost(n), 2)]));
      const headsMs = Object.fromEntries(
        (['medusa', 'cerberus'] as const).map((kind) => {
          const data = readHeads(findHeadsDir(facts, kind)!, model.config);
          const { vocab, ...whole } = data.meta;
          // Every head asked (the last figure); heads_by_depth: the first u heads, what a tree u deep runs.
          const own = measureHeads(model, data);
          return [kind, { vocab: vocab?.length ?? model.config.vocabSize, full_ms: round(measureHeads(model, { ...data, meta: whole }).at(-1)!, 3), heads_ms: round(own.at(-1)!, 3), heads_by_depth: own.map((x) => round(x, 3)), pending_token: data.meta.pendingToken === true }];
        }),
      );
      log(`speculate: forward ms by rows ${JSON.stringify(verifyCost)}; heads per step ${JSON.stringify(headsMs)}`);
      // What no heads could beat on this machine: chains of drafts all accepted, against the
      // measured forward by rows and the heads' own cost (batch 8: the heads counted free).
      const ceilings = {
        ...Object.fromEntries(
          (['medusa', 'cerberus'] as const).map((kind) => {
            const depth = headsMs[kind]!.heads_by_depth;
            const c = speculationCeiling({ rowMs: cost, batch: 1, draftMs: (k) => depth[Math.min(k, depth.length) - 1]!, maxDrafts: depth.length });
            return [`${kind}_b1_every_draft_accepted`, { speedup: round(c.speedup, 3), drafts: c.drafts }];
          }),
        ),
        b8_every_draft_accepted_heads_free: (({ speedup, drafts }) => ({ speedup: round(speedup, 3), drafts }))(speculationCeiling({ rowMs: cost, batch: 8, draftMs: () => 0, maxDrafts: 4 })),
      };
      log(`speculate: ceilings (every draft accepted) ${JSON.stringify(ceilings)}`);
      type Name = keyof typeof configs;
      const ms: Record<string, number[]> = {};
      const decodeRates: Record<string, number[]> = {};
      const last: Partial<Record<Name, Batch>> = {};
      generate(model, b1Prompts.slice(0, 1), 4, 1, tokenizer.eosIds, { speculate: gated }); // warm-up: prepared weights, kernels
      for (let rep = 0; rep < reps; rep++) {
        for (const [name, run] of Object.entries(configs) as [Name, () => Batch][]) {
          const r = run();
          (ms[name] ??= []).push(r.ms);
          (decodeRates[name] ??= []).push((r.decodeTokens * 1000) / r.decodeMs);
          last[name] = r;
          const n = r.tokens.reduce((sum, t) => sum + t.length, 0);
          log(`speculate: rep ${rep + 1} ${name}: ${n} tokens in ${round(r.ms / 1000, 2)} s (${round((n * 1000) / r.ms, 1)} tok/s)`);
        }
      }
      const tps = (name: Name) => {
        const n = last[name]!.tokens.reduce((sum, t) => sum + t.length, 0);
        // The median rep (the upper one of an even count): a lone fast rep on this shared machine is luck, not speed.
        const sorted = [...ms[name]!].sort((x, y) => x - y);
        return (n * 1000) / sorted[sorted.length >> 1]!;
      };
      // Decode alone (Batch.decodeMs), over the same reps' median.
      const decodeTps = (name: Name) => {
        const sorted = [...decodeRates[name]!].sort((x, y) => x - y);
        return sorted[sorted.length >> 1]!;
      };
      const same = (name: Name, ref: Name) => JSON.stringify(last[name]!.tokens) === JSON.stringify(last[ref]!.tokens);
      const accepted = (name: Name) => {
        const f = last[name]!.summaries.map((s) => s.shape!);
        const v = f.reduce((sum, x) => sum + (x.verifications ?? 0), 0);
        const a = f.reduce((sum, x) => sum + (x.draftsAccepted ?? 0), 0);
        const g = f.reduce((sum, x) => sum + (x.gatedSteps ?? 0), 0);
        const u = f.reduce((sum, x) => sum + (x.unaffordableSteps ?? 0), 0);
        return { meanAcceptedLength: v > 0 ? round(1 + a / v, 3) : 1, gateRate: v + g > 0 ? round(g / (v + g), 3) : 0, unaffordableRate: v + g + u > 0 ? round(u / (v + g + u), 3) : 0 };
      };
      const identical = {
        medusa_b1: same('medusa_b1', 'plain_b1'),
        cerberus_b1: same('cerberus_b1', 'plain_b1'),
        cerberus_gated_b1: same('cerberus_gated_b1', 'plain_b1'),
        medusa_b8: same('medusa_b8', 'plain_b8'),
        cerberus_gated_b8: same('cerberus_gated_b8', 'plain_b8'),
      };
      const tokensPerSec = Object.fromEntries((Object.keys(configs) as Name[]).map((n) => [n, round(tps(n), 2)]));
      const ratios = {
        medusa_b1_vs_plain: round(tps('medusa_b1') / tps('plain_b1'), 3),
        cerberus_b1_vs_plain: round(tps('cerberus_b1') / tps('plain_b1'), 3),
        cerberus_gated_b1_vs_plain: round(tps('cerberus_gated_b1') / tps('plain_b1'), 3),
        medusa_b8_vs_plain: round(tps('medusa_b8') / tps('plain_b8'), 3),
        cerberus_gated_b8_vs_plain: round(tps('cerberus_gated_b8') / tps('plain_b8'), 3),
        medusa_b1_decode_vs_plain: round(decodeTps('medusa_b1') / decodeTps('plain_b1'), 3),
        cerberus_b1_decode_vs_plain: round(decodeTps('cerberus_b1') / decodeTps('plain_b1'), 3),
        cerberus_gated_b1_decode_vs_plain: round(decodeTps('cerberus_gated_b1') / decodeTps('plain_b1'), 3),
        medusa_b8_decode_vs_plain: round(decodeTps('medusa_b8') / decodeTps('plain_b8'), 3),
        cerberus_gated_b8_decode_vs_plain: round(decodeTps('cerberus_gated_b8') / decodeTps('plain_b8'), 3),
      };
      const decodeTokensPerSec = Object.fromEntries((Object.keys(configs) as Name[]).map((n) => [n, round(decodeTps(n), 2)]));
      const quality = {
        greedy_identical: Object.values(identical).every(Boolean),
        identical,
        mean_accepted_length: {
          medusa_b1: accepted('medusa_b1').meanAcceptedLength,
          cerberus_b1: accepted('cerberus_b1').meanAcceptedLength,
          cerberus_gated_b1: accepted('cerberus_gated_b1').meanAcceptedLength,
          medusa_b8: accepted('medusa_b8').meanAcceptedLength,
          cerberus_gated_b8: accepted('cerberus_gated_b8').meanAcceptedLength,
        },
        gate_rate: accepted('cerberus_gated_b1').gateRate,
        gate_rate_b8: accepted('cerberus_gated_b8').gateRate,
        // Share of speculating steps the batch's cost model decoded plainly (no draft could pay for its row).
        unaffordable_rate_b1: accepted('cerberus_b1').unaffordableRate,
        unaffordable_rate_b8: { medusa: accepted('medusa_b8').unaffordableRate, cerberus_gated: accepted('cerberus_gated_b8').unaffordableRate },
      };
      log(`speculate: tokens/s ${JSON.stringify(tokensPerSec)}; decode alone ${JSON.stringify(decodeTokensPerSec)}`);
      log(`speculate: ratios ${JSON.stringify(ratios)}`);
      log(`speculate: quality ${JSON.stringify(quality)}`);
      return {
        model: spec,
        kernels,
        headsDir: path.join(MODELS_DIR, 'heads', facts.name),
        prompts: b1Prompts.length,
        maxTokens,
        reps,
        trees: { medusa: medusa.tree.length, cerberus: cerberus.tree.length },
        gate: gated.gate,
        forwardMsByRows: verifyCost,
        headsMs,
        ceilings,
        tokensPerSec,
        decodeTokensPerSec,
        ratios,
        quality,
      };
    } finally {
      library.dispose();
      model.dispose();
    }
  },
});
