/**
 * `skein train`: train Skein's small default model from scratch on tfjs.
 *
 *   skein train base    train (or --resume) a Llama from scratch, live progress bar, export
 *   skein train export  write a run's checkpoint as a Hugging Face model folder
 *   skein train card    evaluate a model folder and write its README.md model card + test slice
 *   skein train heads   speculative heads on a frozen model (train-heads.ts)
 *   skein train skip    a LoRA adapting a model's kept layers to skipLayers (train-skip.ts)
 *
 * @example
 * npx skein train base --steps 600 --export models/skein-mini
 * npx skein train base --resume-from models/skein-mini --steps 900   # a later session
 */
import fsModule from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { BadRequestError } from '../../../core/errors.js';
import { PRESETS, paramTable } from '../../train/config.js';
import { DEFAULT_TRAIN, train, readCheckpoint, checkpointExists, type SeqLenChoice } from '../../train/trainer.js';
import { exportModel, importForResume } from '../../train/export.js';
import { registerHeads } from './train-heads.js';
import { registerSkip } from './train-skip.js';

function num(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new BadRequestError(name, `expected a number, got ${value}`);
    return n;
  };
}

function parseSeqLens(s: string): SeqLenChoice[] {
  return s.split(',').map((part) => {
    const [len, w] = part.split(':');
    const seqLen = Number(len);
    const weight = w === undefined ? 1 : Number(w);
    if (!Number.isInteger(seqLen) || seqLen < 2 || !(weight > 0)) throw new BadRequestError('--seq-lens', `bad entry ${part} (want LEN:WEIGHT,...)`);
    return { seqLen, weight };
  });
}

function fmtSec(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
}

interface BaseOptions {
  preset: string;
  data: string;
  out?: string;
  steps: number;
  workers: number;
  seed: number;
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  clip: number;
  layerDrop: number;
  promptWeight: number;
  tokensPerWorker: number;
  seqLens: SeqLenChoice[];
  checkpointMinutes: number;
  evalEvery: number;
  maxMinutes: number;
  resume?: boolean;
  resumeFrom?: string;
  export?: string;
  dtype: string;
  progress: boolean;
}

async function base(o: BaseOptions): Promise<void> {
  const config = PRESETS[o.preset];
  if (config === undefined) throw new BadRequestError('--preset', `unknown preset ${o.preset} (one of ${Object.keys(PRESETS).join(', ')})`);
  const out = o.out ?? path.join('.skein', 'train', o.preset);
  const { trainingDataExists, buildTrainingData } = await import('../../train/data/build.js');
  if (!trainingDataExists(o.data)) {
    process.stderr.write(`skein: no training data in ${o.data}; building it (about half a minute)\n`);
    await buildTrainingData({ out: o.data, vocabSize: config.vocabSize });
  }
  if (o.resumeFrom !== undefined) {
    const st = importForResume(o.resumeFrom, out);
    process.stderr.write(`skein: rebuilt a checkpoint at step ${st.step} from ${o.resumeFrom} into ${out}\n`);
  }
  const resume = o.resume === true || o.resumeFrom !== undefined;
  if (resume && !checkpointExists(out)) throw new BadRequestError('--resume', `no checkpoint in ${out}`);
  const params = paramTable(config).total;
  process.stderr.write(`skein: training ${o.preset} (${(params / 1e6).toFixed(2)}M parameters) with ${o.workers} worker thread(s) into ${out}\n`);

  const abort = new AbortController();
  const onSignal = () => {
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write('\nskein: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)\n');
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const bar = new cliProgress.SingleBar(
    {
      format: 'train |{bar}| {value}/{total} steps | loss {loss} | {tps} tok/s | {tokens} tokens | ETA {etaText}',
      hideCursor: true,
      noTTYOutput: !process.stderr.isTTY,
      notTTYSchedule: 30_000,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  let barStarted = false;
  const state = await train({
    ...DEFAULT_TRAIN,
    out,
    data: o.data,
    config,
    steps: o.steps,
    workers: o.workers,
    seed: o.seed,
    lr: o.lr,
    minLr: o.minLr,
    warmupSteps: o.warmup,
    weightDecay: o.weightDecay,
    clip: o.clip,
    layerDrop: o.layerDrop,
    promptWeight: o.promptWeight,
    tokensPerWorker: o.tokensPerWorker,
    seqLens: o.seqLens,
    checkpointMinutes: o.checkpointMinutes,
    evalEvery: o.evalEvery,
    maxMinutes: o.maxMinutes,
    resume,
    signal: abort.signal,
    onStep: (s) => {
      const payload = { loss: s.loss.toFixed(3), tps: s.tokensPerSec.toFixed(0), tokens: `${(s.tokensSeen / 1e6).toFixed(2)}M`, etaText: fmtSec(s.etaSec) };
      if (!o.progress) return;
      if (!barStarted) {
        bar.start(s.steps, s.step, payload);
        barStarted = true;
      } else bar.update(s.step, payload);
    },
    onEval: (e) => {
      const parts = Object.entries(e.perplexity).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ');
      const line = `eval @ step ${e.step}: held-out perplexity ${parts}\n`;
      if (barStarted) bar.stop();
      barStarted = false;
      process.stderr.write(line);
    },
    onLog: (line) => process.stderr.write(`skein: ${line}\n`),
  });
  if (barStarted) bar.stop();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.stderr.write(`skein: step ${state.step}/${o.steps}, ${state.tokensSeen} tokens, ${fmtSec(state.elapsedSec)} of training; checkpoint in ${path.join(out, 'ckpt')}\n`);
  if (o.export !== undefined) exportRun(out, o.export, o.data, o.dtype, true);
}

function exportRun(run: string, modelDir: string, data: string, dtype: string, withResume: boolean): void {
  const d = dtype.toUpperCase();
  if (d !== 'F16' && d !== 'BF16' && d !== 'F32') throw new BadRequestError('--dtype', `one of f16, bf16, f32 (got ${dtype})`);
  const { state, params, m, v } = readCheckpoint(run);
  const resume = withResume ? { state, m, v, logFile: path.join(run, 'train.log.jsonl') } : undefined;
  exportModel({ modelDir, config: state.config, params, tokenizerDir: path.join(data, 'tokenizer'), dtype: d, resume });
  process.stderr.write(`skein: exported step ${state.step} to ${modelDir} (${d})\n`);
}

export function register(program: Command): void {
  const cmd = program.command('train').description("Train Skein's small default model from scratch (tfjs, wasm)");
  const d = DEFAULT_TRAIN;
  cmd
    .command('base')
    .description('Train a small Llama from scratch: data-parallel worker threads, AdamW, warmup + cosine, layer dropout, checkpoints')
    .option('--preset <name>', `model size (${Object.keys(PRESETS).join(', ')})`, 'skein-mini')
    .option('--data <dir>', 'packed training data (built when missing; see docs/TRAIN-DATA.md)', 'data')
    .option('--out <dir>', 'run folder for checkpoints and the log (default .skein/train/<preset>)')
    .option('--steps <n>', 'optimiser steps (the cosine schedule ends here)', num('--steps'), d.steps)
    .option('--workers <n>', 'data-parallel worker threads (one per core)', num('--workers'), Math.max(1, Math.min(2, os.availableParallelism())))
    .option('--seed <n>', 'seed of initialisation, data order and layer dropout', num('--seed'), d.seed)
    .option('--lr <x>', 'peak learning rate', num('--lr'), d.lr)
    .option('--min-lr <x>', 'learning rate at the end of the cosine', num('--min-lr'), d.minLr)
    .option('--warmup <n>', 'linear warmup steps', num('--warmup'), d.warmupSteps)
    .option('--weight-decay <x>', 'AdamW decoupled weight decay (matrices only)', num('--weight-decay'), d.weightDecay)
    .option('--clip <x>', 'global gradient-norm clip (0: off)', num('--clip'), d.clip)
    .option('--layer-drop <x>', 'layer-dropout rate of the last layer (rises linearly from 0 at layer 0)', num('--layer-drop'), d.layerDrop)
    .option('--prompt-weight <x>', 'loss weight of chat-prompt targets (1: plain LM loss)', num('--prompt-weight'), d.promptWeight)
    .option('--tokens-per-worker <n>', 'tokens per worker micro-batch', num('--tokens-per-worker'), d.tokensPerWorker)
    .option('--seq-lens <list>', 'window lengths and weights, LEN:WEIGHT,...', parseSeqLens, d.seqLens)
    .option('--checkpoint-minutes <x>', 'minutes between checkpoints', num('--checkpoint-minutes'), d.checkpointMinutes)
    .option('--eval-every <n>', 'steps between held-out evaluations (0: never)', num('--eval-every'), d.evalEvery)
    .option('--max-minutes <x>', 'stop (with a checkpoint) after this much wall time', num('--max-minutes'), d.maxMinutes)
    .option('--resume', 'continue from the checkpoint in --out')
    .option('--resume-from <modelDir>', "continue from an exported model folder's resume/ state")
    .option('--export <modelDir>', 'export the final checkpoint as a Hugging Face model folder')
    .option('--dtype <dtype>', 'export dtype: f16, bf16 or f32', 'f16')
    .option('--no-progress', 'no progress bar')
    .action(async (opts: BaseOptions) => base(opts));
  cmd
    .command('export')
    .description("Write a run's checkpoint as a Hugging Face model folder (with resume/ state)")
    .requiredOption('--run <dir>', 'run folder (has ckpt/)')
    .requiredOption('--model <dir>', 'model folder to write')
    .option('--data <dir>', 'training data folder (for the tokenizer files)', 'data')
    .option('--dtype <dtype>', 'f16, bf16 or f32', 'f16')
    .option('--no-resume-state', 'weights only: leave out resume/ (Adam moments and training state)')
    .action((opts: { run: string; model: string; data: string; dtype: string; resumeState: boolean }) => exportRun(opts.run, opts.model, opts.data, opts.dtype, opts.resumeState));
  cmd
    .command('card')
    .description('Evaluate an exported model (held-out perplexity, eval items, samples) and write its README.md and eval/heldout.json')
    .requiredOption('--run <dir>', 'run folder (its log and checkpoint state)')
    .requiredOption('--model <dir>', 'exported model folder')
    .option('--data <dir>', 'training data folder (held-out split and eval items)', 'data')
    .option('--per-part <n>', '512-token windows per data part', num('--per-part'), 8)
    .option('--items <n>', 'eval items per kind', num('--items'), 40)
    .option('--notes <file>', 'markdown notes about the run to include')
    .action(async (opts: { run: string; model: string; data: string; perPart: number; items: number; notes?: string }) => {
      const { writeCard } = await import('../../train/card.js');
      await writeCard({ modelDir: opts.model, runDir: opts.run, dataDir: opts.data, perPart: opts.perPart, items: opts.items, notes: opts.notes === undefined ? undefined : fsModule.readFileSync(opts.notes, 'utf8'), log: (l) => process.stderr.write(`skein: card: ${l}\n`) });
      process.stderr.write(`skein: wrote ${path.join(opts.model, 'README.md')}\n`);
    });
  registerHeads(cmd);
  registerSkip(cmd);
}
