/**
 * Evaluates an exported model folder and writes its model card (README.md) from measured
 * numbers only: the run's log (tokens, wall time, throughput), held-out perplexity per
 * data part and eval-item accuracy through the runtime's forward, sample outputs. It also
 * writes eval/heldout.json, the small fixed slice the shipped-model test re-checks, with
 * the bounds that test holds the model to.
 *
 * @example
 * await writeCard({ modelDir: 'models/skein-mini', runDir: '.skein/train/skein-mini', dataDir: 'data' });
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadModel } from '../checkpoint/load.js';
import { openDataset } from './data/pack.js';
import type { EvalItem } from './data/instruct.js';
import { skeletonPrompt, pointPrompt } from './data/sot-prompts.js';
import { paramTable, trainFlopsPerToken, type TrainModelConfig } from './config.js';
import { dropSchedule, type TrainState } from './trainer.js';
import { answerNll, chat, evalItems, perplexityByPart, readEvalItems, type ItemsSummary } from './evaluate.js';

/** wasm matMul peak on one core, [128×768]·[768×3072] (ARCHITECTURE.md; re-measured here). */
export const WASM_MATMUL_PEAK = 38e9;

export interface HeldoutSlice {
  /** Token windows (ids, length seqLen+1) per data part, from the validation split. */
  windows: Record<string, number[][]>;
  qa: EvalItem[];
  skeleton: EvalItem[];
  /** What the shipped-model test asserts. */
  /**
   * The QA bound is on the reference answers' teacher-forced −log p: it moves before a small
   * model's exact-match accuracy does, so it can catch a regression where accuracy is 0.
   */
  bounds: { maxPerplexity: Record<string, number>; maxQaAnswerNll: number; minSkeletonLists: number };
}

export interface CardOptions {
  modelDir: string;
  runDir: string;
  dataDir: string;
  /** Windows of 512 tokens per part for the card's perplexity. */
  perPart?: number;
  /** Items per kind for the card's accuracies. */
  items?: number;
  log?: (line: string) => void;
  /** Free text about the run (markdown), e.g. what changed between sessions. */
  notes?: string;
}

/** The question inside a skeleton prompt: the line before "Skeleton:". */
function skeletonQuestion(item: EvalItem): string {
  const lines = item.messages[0].content.split('\n');
  const i = lines.findIndex((l) => l.startsWith('Skeleton:'));
  return i > 0 ? lines[i - 1].trim() : '';
}

function runHistory(state: TrainState, notes?: string): string {
  const lines = (state.changes ?? []).map(
    (c) => `- step ${c.step}: ${Object.entries(c.changed).map(([k, [a, b]]) => `${k} ${JSON.stringify(a)} → ${JSON.stringify(b)}`).join(', ')}`,
  );
  if (lines.length === 0 && notes === undefined) return '';
  return `Run history (options changed on resume):\n\n${[...(notes ? [notes.trim()] : []), ...lines].join('\n')}`;
}

interface LogLine {
  step: number;
  tokensPerSec: number;
  flops: number;
  stepSec: number;
  seqLen: number;
  tokensSeen: number;
  loss: number;
}

function readLog(runDir: string): LogLine[] {
  const f = path.join(runDir, 'train.log.jsonl');
  if (!fs.existsSync(f)) return [];
  return fs
    .readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{"step"'))
    .map((l) => JSON.parse(l) as LogLine);
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)];
}

/** Throughput from per-step times (each step: tokens of all workers / its wall seconds). */
export function throughput(lines: LogLine[], cfg: TrainModelConfig, workers: number, tokensPerWorker: number, layersRun = cfg.numLayers): { median: number; best: number; medianFlops: number; bestFlops: number } {
  const per = lines.filter((l) => l.stepSec > 0).map((l) => {
    const tokens = workers * Math.max(1, Math.floor(tokensPerWorker / l.seqLen)) * l.seqLen;
    return { tps: tokens / l.stepSec, flops: (tokens * trainFlopsPerToken(cfg, l.seqLen, layersRun)) / l.stepSec };
  });
  // Best sustained: the best 20-step window (other jobs share the 2 cores).
  let best = 0;
  let bestFlops = 0;
  for (let i = 0; i + 20 <= per.length; i++) {
    const w = per.slice(i, i + 20);
    const t = 20 / w.reduce((a, x) => a + 1 / x.tps, 0);
    if (t > best) {
      best = t;
      bestFlops = 20 / w.reduce((a, x) => a + 1 / x.flops, 0);
    }
  }
  return { median: median(per.map((p) => p.tps)), best, medianFlops: median(per.map((p) => p.flops)), bestFlops };
}

function fence(s: string): string {
  return '```text\n' + s.replace(/```/g, "'''").trim() + '\n```';
}

function fmt(x: number, d = 2): string {
  return Number.isFinite(x) ? x.toFixed(d) : 'n/a';
}

/** Evaluates the model folder and writes README.md and eval/heldout.json. */
export async function writeCard(o: CardOptions): Promise<{ card: string; slice: HeldoutSlice }> {
  const log = o.log ?? (() => {});
  const perPart = o.perPart ?? 8;
  const nItems = o.items ?? 40;
  const state = JSON.parse(fs.readFileSync(path.join(o.runDir, 'ckpt', 'state.json'), 'utf8')) as TrainState;
  const cfg = state.config;
  const model = await loadModel(o.modelDir);
  const ds = openDataset(o.dataDir);
  const items = readEvalItems(path.join(o.dataDir, 'eval', 'items.jsonl'));

  // Held-out perplexity per part, 512-token windows spread over each part's val split.
  const windows: Record<string, number[][]> = {};
  const parts = ds.manifest.parts.map((p) => p.name);
  const batches = ds.evalBatches(512, { perPart, batch: perPart });
  batches.forEach((b, i) => {
    windows[parts[i]] = Array.from({ length: b.batch }, (_, r) => [...b.inputs.subarray(r * 512, (r + 1) * 512), b.targets[(r + 1) * 512 - 1]]);
  });
  log('perplexity');
  const ppl = perplexityByPart(model, windows);
  // Balanced skipping of intermediate layers (every third one), first and last always run.
  const half = Array.from({ length: cfg.numLayers }, (_, l) => l).filter((l) => l === 0 || l === cfg.numLayers - 1 || l % 3 !== 0);

  const byKind = (k: string) => items.filter((i) => i.kind === k).slice(0, nItems);
  log('eval items');
  const summary: ItemsSummary = await evalItems(model, [...byKind('qa'), ...byKind('skeleton'), ...byKind('router'), ...byKind('define')]);

  log('layer-skip perplexity');
  const skipWindows = Object.fromEntries(Object.entries(windows).map(([k, v]) => [k, v.slice(0, 2)]));
  const pplAll2 = perplexityByPart(model, skipWindows);
  const pplSkipped = perplexityByPart(model, skipWindows, half);

  log('samples');
  const skelQs = ['What are the benefits of regular exercise?', 'How do I plan a small garden?', 'Describe a volcano.'];
  const skelSamples: { q: string; out: string }[] = [];
  for (const q of skelQs) skelSamples.push({ q, out: await chat(model, skeletonPrompt(q), 64) });
  const firstPoint = skelSamples[0].out.split('\n')[0]?.replace(/^\d+\.\s*/, '') || 'Better health';
  const pointOut = await chat(model, pointPrompt(skelQs[0], skelSamples[0].out, 1, firstPoint), 64);
  const chatOut = await chat(model, 'Hello! What is a volcano?', 64);

  // The test's fixed slice: 2 short windows per part, the 6 shortest QA items, 6 skeleton items.
  const qaShort = items
    .filter((i) => i.kind === 'qa')
    .slice(0, 40)
    .sort((a, b) => a.messages[0].content.length - b.messages[0].content.length)
    .slice(0, 6);
  const skel = items.filter((i) => i.kind === 'skeleton').slice(-6);
  // 2 windows of 256 tokens per part keep the test to seconds.
  const sliceWindows = Object.fromEntries(Object.entries(windows).map(([k, v]) => [k, v.slice(0, 2).map((w) => w.slice(0, 257))]));
  const slicePpl = perplexityByPart(model, sliceWindows);
  const sliceQa = await evalItems(model, qaShort);
  const sliceSkel = await evalItems(model, skel);
  const qaNll = qaShort.reduce((sum, item) => sum + answerNll(model, item.messages, item.expected), 0) / qaShort.length;
  const lists = sliceSkel.results.filter((r) => /^\s*1\.\s*\S/.test(r.output) && /\n\s*2\.\s*\S/.test(r.output)).length;
  const slice: HeldoutSlice = {
    windows: sliceWindows,
    qa: qaShort,
    skeleton: skel,
    bounds: {
      maxPerplexity: Object.fromEntries(Object.entries(slicePpl).map(([k, v]) => [k, Math.ceil(v.perplexity * 1.05 * 100) / 100])),
      maxQaAnswerNll: Math.ceil(qaNll * 1.05 * 100) / 100,
      minSkeletonLists: Math.max(0, lists - 1),
    },
  };
  fs.mkdirSync(path.join(o.modelDir, 'eval'), { recursive: true });
  fs.writeFileSync(path.join(o.modelDir, 'eval', 'heldout.json'), JSON.stringify(slice) + '\n');
  model.dispose();

  const lines = readLog(o.runDir);
  const workers = state.options.workers;
  // Layer dropout runs Σ(1 − p_l) layers per step on average; count only those.
  const layersRun = dropSchedule(cfg.numLayers, state.options.layerDrop).reduce((a, p) => a + 1 - p, 0);
  const tp = throughput(lines, cfg, workers, state.options.tokensPerWorker, layersRun);
  const params = paramTable(cfg).total;
  const nonEmbed = params - cfg.vocabSize * cfg.hiddenSize;
  const sched = dropSchedule(cfg.numLayers, state.options.layerDrop);
  const k = (name: string) => summary.byKind[name as keyof typeof summary.byKind];
  const sources = fs.existsSync(path.join(o.dataDir, 'SOURCES.md')) ? fs.readFileSync(path.join(o.dataDir, 'SOURCES.md'), 'utf8') : '';
  const sourcesTable = sources.split('\n## ')[0].replace(/^# .*\n/, '').trim();
  const stats = JSON.parse(fs.readFileSync(path.join(o.dataDir, 'stats.json'), 'utf8')) as { parts: { name: string; trainTokens: number; valTokens: number; bytesPerToken: number }[] };
  const lastEval = state.evals[state.evals.length - 1];
  const o2 = state.options;

  const card = `---
license: other
language: en
library_name: skein
pipeline_tag: text-generation
---

# skein-mini

Skein's embedded default model: a ${fmt(params / 1e6)}M-parameter Llama-architecture model
trained from scratch in TypeScript on tfjs (wasm backend, 2 shared CPU cores) by
\`npx skein train base\` (runtime/train/). It is a small demonstration model: it knows the
ChatML format and the Skeleton-of-Thought prompt shapes of its instruction data, and
little else. Everything below is measured; nothing is copied from elsewhere.

## Architecture

| | |
|---|---|
| architecture | LlamaForCausalLM (RMSNorm, rotary with rotate_half, GQA, SwiGLU, tied embeddings) |
| parameters | ${params.toLocaleString('en-US')} (${(nonEmbed / 1e6).toFixed(2)}M without the embedding) |
| layers / hidden / FFN | ${cfg.numLayers} / ${cfg.hiddenSize} / ${cfg.intermediateSize} |
| heads / kv heads / head dim | ${cfg.numHeads} / ${cfg.numKvHeads} / ${cfg.headDim} |
| vocabulary | ${cfg.vocabSize} (byte-level BPE trained on the same data; \`<|endoftext|>\` ${cfg.bosTokenId}, \`<|im_end|>\` ${cfg.eosTokenId}) |
| context | ${cfg.maxPositionEmbeddings} positions (rope theta ${cfg.ropeTheta}); trained on windows of ${o2.seqLens.map((s) => `${s.seqLen} (${Math.round(s.weight * 100)}%)`).join(', ')} |
| weights | model.safetensors, float16 |

## Data and licences

${sourcesTable}

| part | train tokens | held-out tokens | bytes/token |
|---|---|---|---|
${stats.parts.map((p) => `| ${p.name} | ${(p.trainTokens / 1e6).toFixed(2)}M | ${(p.valTokens / 1e3).toFixed(0)}K | ${p.bytesPerToken} |`).join('\n')}

Windows are drawn by part with weights ${Object.entries(openDataset(o.dataDir).manifest.mix).map(([k2, v]) => `${k2} ${v}`).join(', ')}. Chat-prompt
targets get loss weight ${o2.promptWeight ?? 1} (answers and plain text 1). The held-out split
is separate documents (and, for instruction items, held-out WordNet synsets), see docs/TRAIN-DATA.md.

## Training

| | |
|---|---|
| steps | ${state.step} of a ${o2.steps}-step schedule |
| tokens seen | ${state.tokensSeen.toLocaleString('en-US')} |
| wall time | ${(state.elapsedSec / 60).toFixed(1)} min of training (all sessions) |
| hardware | 2 CPU cores shared with other jobs; tfjs wasm backend, one worker thread per core, gradients averaged |
| throughput | median ${fmt(tp.median, 0)} tokens/s; best 20-step window ${fmt(tp.best, 0)} tokens/s |
| matmul FLOP/s | median ${fmt(tp.medianFlops / 1e9, 1)} GFLOP/s over ${workers} cores, ${fmt(tp.medianFlops / workers / 1e9, 1)} per core = ${fmt((100 * tp.medianFlops) / (workers * WASM_MATMUL_PEAK), 0)}% of the 38 GFLOP/s one-core wasm matmul peak; best 20-step window ${fmt(tp.bestFlops / 1e9, 1)} GFLOP/s (${fmt((100 * tp.bestFlops) / (workers * WASM_MATMUL_PEAK), 0)}%) |
| optimiser | AdamW β=(${o2.beta1}, ${o2.beta2}), ε=${o2.eps}, weight decay ${o2.weightDecay} (matrices), global-norm clip ${o2.clip} |
| learning rate | ${o2.lr} peak, linear warmup ${o2.warmupSteps} steps, cosine to ${o2.minLr} |
| batch | ${workers} workers × ${o2.tokensPerWorker} tokens per step |
| seed | ${o2.seed} (initialisation, data order, window lengths and layer dropout all come from it) |

${runHistory(state, o.notes)}

FLOP/s counts the matmuls of forward and backward (6·N per token plus attention, for the
layers layer dropout leaves on average) over the wall time of each step, so it includes
everything else the step does.

### Layer dropout (LayerSkip-style)

Every step, each worker drops each layer independently with a rate that rises linearly
with depth (LayerSkip, arXiv 2404.16710), so that the skipped-layer decode has a model
trained for it. A dropped layer is the identity (no rescaling):

| layer | ${sched.map((_, l) => l).join(' | ')} |
|---|${sched.map(() => '---').join('|')}|
| drop rate | ${sched.map((p) => p.toFixed(3)).join(' | ')} |

Perplexity with layers {${half.join(', ')}} only (${cfg.numLayers - half.length} of ${cfg.numLayers} skipped), 2 windows per part:
${Object.keys(pplAll2).map((p) => `${p} ${fmt(pplSkipped[p].perplexity)} (all layers ${fmt(pplAll2[p].perplexity)})`).join('; ')}.

## Evaluation (held-out)

Perplexity through the runtime's forward, ${perPart} windows of 512 tokens per part
(instruction windows include prompt tokens):

| part | perplexity | loss (nats/token) | tokens |
|---|---|---|---|
${Object.entries(ppl).map(([p, v]) => `| ${p} | ${fmt(v.perplexity)} | ${fmt(v.loss, 3)} | ${v.tokens} |`).join('\n')}

${lastEval ? `Running evaluation during training (step ${lastEval.step}, ${o2.evalPerPart} windows per part): ${Object.entries(lastEval.perplexity).map(([p, v]) => `${p} ${fmt(v)}`).join(', ')}.` : ''}

Greedy answers to held-out instruction items (data/eval/items.jsonl, scored by
\`scoreEvalItem\`):

| kind | items | passed | accuracy | mean score |
|---|---|---|---|---|
${['qa', 'skeleton', 'router', 'define'].map((name) => { const v = k(name); return v ? `| ${name === 'qa' ? 'passage QA' : name === 'skeleton' ? 'SoT skeleton (numbered 3-10 short points)' : name === 'router' ? 'SoT router (A/B/C)' : 'definition'} | ${v.n} | ${v.passed} | ${fmt(v.accuracy * 100, 0)}% | ${fmt(v.meanScore)} |` : ''; }).join('\n')}

The shipped-model test (runtime/train/shipped-model.test.ts) re-checks a fixed slice of
this (eval/heldout.json): perplexity per part within ${JSON.stringify(slice.bounds.maxPerplexity)},
the mean teacher-forced −log p of the reference answers of its ${qaShort.length} passage-QA items ≤ ${slice.bounds.maxQaAnswerNll} nats/token (measured ${qaNll.toFixed(2)}; exact-match accuracy ${sliceQa.byKind.qa?.passed ?? 0}/${qaShort.length}),
and ≥ ${slice.bounds.minSkeletonLists} of ${skel.length} SoT skeleton answers being numbered lists (measured ${lists}).

## Samples (greedy)

${skelSamples.map((s) => `SoT skeleton prompt, question "${s.q}":\n\n${fence(s.out)}`).join('\n\n')}

SoT skeleton prompt on held-out questions (eval/heldout.json):

${sliceSkel.results.slice(0, 2).map((r, i) => `"${skeletonQuestion(skel[i])}":\n\n${fence(r.output)}`).join('\n\n')}

SoT point expansion (point 1 of the first skeleton):

${fence(pointOut)}

Chat turn, "Hello! What is a volcano?":

${fence(chatOut)}

## Resume training

The run's compact state is committed beside the weights: resume/state.json (step,
generator states, options, evaluations) and resume/optimizer.safetensors (Adam moments,
bf16). A later session continues with:

\`\`\`sh
npx skein train base --resume-from models/skein-mini --data data --steps ${o2.steps + 500} --export models/skein-mini
\`\`\`

which rebuilds a float32 checkpoint (weights from the float16 file, moments from bf16:
one rounding of each) and goes on with the same random streams; a larger \`--steps\`
re-plans the cosine over the new total (recorded in resume/state.json as a change).
Within one session, \`--resume\` continues from the float32 checkpoint in \`--out\`.
Ctrl-C or SIGTERM saves a checkpoint after the current step.

## Limitations

A model this small, trained for about ${(state.tokensSeen / 1e6).toFixed(1)}M tokens, produces fluent-looking
fragments more than correct answers; use it to exercise Skein's pipelines, not for facts.
`;
  fs.writeFileSync(path.join(o.modelDir, 'README.md'), card);
  return { card, slice };
}
