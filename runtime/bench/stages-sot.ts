/**
 * `skein bench stages --arg parts=sot`: the Skeleton-of-Thought graph (graphs/sot.json: a
 * router, a skeleton, its points expanded in parallel over a shared prefix, or a direct
 * answer) run end to end on the engine, plain and with forward-shaping stages stacked on its
 * model calls (the skeleton, expand and generate nodes, as `skein run --stages` merges
 * them), on the same questions, variants interleaved per question, one seed:
 *
 * - `selfspec`: skipLayers r = 2 self-speculative (the skip adapter drafts when the model has
 *   one): lossless, so the answers must be identical; the figure is its time.
 * - `stacked`: prunedPrefill (the stage's default schedule) + skipLayers r = 2 lossy (adapted
 *   when the model has an adapter): what the lossy stack costs in answer and buys in time.
 *
 * compress is not stacked here: a SoT call's prompt is the question (and the skeleton), a
 * few dozen tokens with nothing to drop. Ratios: `stacked_sot_vs_plain` and
 * `selfspec_sot_vs_plain`, plain wall time / variant wall time (above 1 is faster), and the
 * same in this process's CPU time (`…_cpu_vs_plain`).
 */
import * as fs from 'node:fs';
import { firstValueFrom, toArray } from 'rxjs';
import { compileGraph, runCompiled, type RunEvent, type Stages } from '../../operators/index.js';
import { withStages } from '../cli/commands/stages-flag.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { round } from '../engine/bench-support.js';
import { EngineFront } from '../engine/front.js';
import { LocalTransport } from '../engine/local.js';
import { tokenSampler } from '../engine/sampling.js';
import type { LoadedModel } from '../model/types.js';

/** Open questions of the kind SoT is for (the router decides per question): the graph's default input, then two written for this bench. */
const QUESTIONS = [
  'How do I plan a small garden?',
  'What should I think about before adopting a dog?',
  'How do I get ready for a first long bicycle tour?',
];

const VARIANTS: Record<string, Stages | undefined> = {
  plain: undefined,
  selfspec: { skipLayers: { targetSpeedup: 2, mode: 'self-speculative' } },
  stacked: { prunedPrefill: {}, skipLayers: { targetSpeedup: 2, mode: 'lossy' } },
};

interface SotRun {
  ms: number;
  /** This process's CPU time (the engine runs on its main thread): robust to the box's other work, which wall time is not. */
  cpuMs: number;
  answer: string;
  route: string;
  tokensOut: number;
  stageEvents: Record<string, number>;
}

/** Share of equal words at equal positions, over the longer answer. */
function wordAgreement(a: string, ref: string): number {
  const x = a.split(/\s+/).filter(Boolean);
  const y = ref.split(/\s+/).filter(Boolean);
  let same = 0;
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] === y[i]) same++;
  return same / Math.max(1, x.length, y.length);
}

export async function measureSotStacked(model: LoadedModel, tokenizer: ModelTokenizer, modelName: string, log: (line: string) => void, questions = QUESTIONS.length) {
  const graph = JSON.parse(fs.readFileSync(new URL('../../graphs/sot.json', import.meta.url), 'utf8')) as unknown;
  // The engine on this thread over the bench's model (so CPU time is the engine's), with its
  // prefix cache emptied before every run: otherwise each variant after the first would find
  // the router, skeleton and expansion prompts of the same question already computed.
  const transport = new LocalTransport({ model, tokenizer, sampler: tokenSampler, keepModel: true });
  const engine = new EngineFront({ modelName, backend: 'in-process', tokenizer, transport });
  try {
    const runOnce = async (stages: Stages | undefined, question: string): Promise<SotRun> => {
      transport.core.scheduler.pool.clearCache();
      const compiled = compileGraph((stages ? withStages(graph, stages) : graph) as never, { source: 'graphs/sot.json' });
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const events = await firstValueFrom(runCompiled(compiled, { question }, { engine, seed: 1 }).pipe(toArray()));
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(c0);
      const end = events.find((e): e is Extract<RunEvent, { type: 'run-end' }> => e.type === 'run-end')!;
      if (end.status !== 'ok') throw new Error(`sot run ${end.status}: ${end.error?.message ?? ''}`);
      const routed = events.some((e) => e.type === 'node-start' && e.node === 'skeleton') ? 'sot' : 'direct';
      const stageEvents: Record<string, number> = {};
      for (const e of events) if (e.type === 'stage') stageEvents[e.stage] = (stageEvents[e.stage] ?? 0) + 1;
      const tokensOut = Object.values(end.usage).reduce((n, u) => n + u.tokensOut, 0);
      return { ms, cpuMs: (cpu.user + cpu.system) / 1000, answer: String(end.output?.answer ?? ''), route: routed, tokensOut, stageEvents };
    };
    // Kernels and each variant's one-time costs (the skip adapter is merged on the first request that asks for it).
    for (const stages of Object.values(VARIANTS)) await runOnce(stages, 'Warm up: name three colours.');
    const runs: Record<string, SotRun[]> = {};
    for (const question of QUESTIONS.slice(0, questions)) {
      for (const [name, stages] of Object.entries(VARIANTS)) {
        const r = await runOnce(stages, question);
        (runs[name] ??= []).push(r);
        log(`  sot ${name.padEnd(8)} ${(r.ms / 1000).toFixed(1)} s (cpu ${(r.cpuMs / 1000).toFixed(1)} s), ${r.route}, ${r.tokensOut} tokens out, ${JSON.stringify(r.answer.slice(0, 70))}`);
      }
    }
    const total = (name: string, key: 'ms' | 'cpuMs' = 'ms') => runs[name]!.reduce((n, r) => n + r[key], 0);
    const ratios: Record<string, number> = {};
    const quality: Record<string, number | boolean> = {};
    for (const name of Object.keys(VARIANTS).filter((n) => n !== 'plain')) {
      ratios[`${name}_sot_vs_plain`] = round(total('plain') / total(name));
      ratios[`${name}_sot_cpu_vs_plain`] = round(total('plain', 'cpuMs') / total(name, 'cpuMs'));
      const agree = runs[name]!.map((r, i) => wordAgreement(r.answer, runs.plain![i]!.answer));
      quality[`${name}_sot_identical`] = runs[name]!.every((r, i) => r.answer === runs.plain![i]!.answer);
      quality[`${name}_sot_word_agreement`] = round(agree.reduce((n, a) => n + a, 0) / agree.length);
      quality[`${name}_sot_same_route`] = round(runs[name]!.filter((r, i) => r.route === runs.plain![i]!.route).length / runs[name]!.length);
    }
    return {
      ratios,
      quality,
      figures: {
        sot_stacked: Object.fromEntries(
          Object.entries(runs).map(([name, rs]) => [
            name,
            rs.map((r) => ({ seconds: round(r.ms / 1000, 1), cpu_seconds: round(r.cpuMs / 1000, 1), route: r.route, tokens_out: r.tokensOut, stage_events: r.stageEvents, answer: r.answer.slice(0, 240) })),
          ]),
        ),
        sot_stages: Object.fromEntries(Object.entries(VARIANTS).map(([k, v]) => [k, v ?? {}])),
      },
    };
  } finally {
    await engine.close();
  }
}
