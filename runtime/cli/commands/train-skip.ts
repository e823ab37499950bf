/**
 * `skein train skip`: adapts a model to the layers a target speedup r keeps (Unified Layer
 * Skipping, issue #12) by self-distillation: LoRA on the kept layers, the full model as
 * teacher, on the model's own greedy continuations of the project's instruction prompts
 * (runtime/train/skip-train.ts). The continuations are generated once and cached under
 * `<state>/`; training state is checkpointed there every few steps and `--resume` picks it
 * up. The adapter is written where the skipLayers stage finds it
 * (runtime/adapters/skip-adapter.ts): `--out`, by default the committed
 * `models/adapters/<model>/skip-r<r>.{json,safetensors}`.
 *
 * @example
 * npx skein train skip --model smollm2-135m-instruct --target 2 --tokens 8000 --steps 120
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import { loadModel, MODELS_DIR } from '../../checkpoint/load.js';
import { adapterBaseName, checkpointSha256, writeSkipAdapter } from '../../adapters/skip-adapter.js';
import { keptLayerCount } from '../../stages/layer-selection.js';
import { generate, instructionPrompts } from '../../train/heads-data.js';
import { trainSkip, type SkipSample } from '../../train/skip-train.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';

interface SkipOptions {
  model?: string;
  target: number;
  tokens: number;
  heldOut: number;
  maxTokens: number;
  steps?: number;
  batch: number;
  window: number;
  rank: number;
  lr: number;
  state?: string;
  out?: string;
  resume?: boolean;
}

function int(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new BadRequestError(name, `expected a positive integer, got ${value}`);
    return n;
  };
}

const log = (line: string) => process.stderr.write(`skein: skip: ${line}\n`);

/** Samples from the cache, or generated and cached (ids only: a few hundred KB). */
function samples(file: string, make: () => SkipSample[]): SkipSample[] {
  if (fs.existsSync(file)) {
    const s = JSON.parse(fs.readFileSync(file, 'utf8')) as SkipSample[];
    log(`using cached continuations ${file} (${s.length})`);
    return s;
  }
  const s = make();
  fs.writeFileSync(file, JSON.stringify(s));
  return s;
}

async function trainSkipCommand(o: SkipOptions): Promise<void> {
  if (!(Number.isFinite(o.target) && o.target > 1)) throw new BadRequestError('--target', `must be a number > 1, got ${o.target}`);
  const { model: spec } = await modelOrDefault(o.model);
  const model = await loadModel(spec, { eagerTokenizer: true });
  if (keptLayerCount(model.config.numLayers, o.target) === model.config.numLayers) {
    throw new BadRequestError('--target', `${o.target}× keeps every one of the ${model.config.numLayers} layers: nothing to adapt`);
  }
  const tokenizer = model.tokenizer();
  const name = path.basename(model.dir);
  const state = o.state ?? path.join('.skein', 'skip', name, adapterBaseName(o.target));
  fs.mkdirSync(state, { recursive: true });
  if (!o.resume) for (const f of ['skip-state.json', 'skip-state.safetensors']) fs.rmSync(path.join(state, f), { force: true });
  const t0 = performance.now();
  const gen = (tokens: number, heldOut: boolean) => () => {
    const n = Math.max(2, Math.ceil((tokens / o.maxTokens) * 1.25));
    log(`generating ${heldOut ? 'held-out' : 'training'} continuations of ${n} prompts`);
    const t = performance.now();
    const prompts = instructionPrompts(tokenizer, n, heldOut, 7, 192);
    const out = generate(model, tokenizer, prompts, o.maxTokens, (i, total) => i % 16 === 0 && log(`continuations ${i}/${total}`), false);
    const s = prompts.map((ids, i) => ({ ids: [...ids, ...out[i]!.tokens], promptLength: ids.length })).filter((x) => x.ids.length - x.promptLength >= 2);
    log(`${s.length} samples, ${s.reduce((a, x) => a + x.ids.length - x.promptLength, 0)} continuation tokens in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    return s;
  };
  const train = samples(path.join(state, `data-train-${o.tokens}-${o.maxTokens}.json`), gen(o.tokens, false));
  const heldOut = samples(path.join(state, `data-heldout-${o.heldOut}-${o.maxTokens}.json`), gen(o.heldOut, true));
  const steps = o.steps ?? Math.ceil(train.length / o.batch);
  log(`training rank-${o.rank} LoRA on the layers ${o.target}× keeps: ${train.length} samples, ${steps} steps of ${o.batch}`);
  let last = performance.now();
  const adapter = trainSkip(model, train, heldOut, {
    targetSpeedup: o.target,
    steps,
    batch: o.batch,
    window: o.window,
    rank: o.rank,
    lr: o.lr,
    stateDir: state,
    checkpointEvery: 5,
    onStep: (step, kl) => {
      const now = performance.now();
      log(`step ${step}/${steps} KL ${kl.toFixed(4)} (${((now - last) / 1000).toFixed(1)} s)`);
      last = now;
    },
  });
  adapter.meta.base = { file: path.basename(model.source), sha256: checkpointSha256(model.source) };
  const out = o.out ?? path.join(MODELS_DIR, 'adapters', name);
  const file = writeSkipAdapter(out, adapter);
  const t = adapter.meta.training!;
  log(`held-out KL ${t.klBefore} → ${t.klAfter}; perplexity ${t.pplBefore} → ${t.pplAfter} (full model ${t.pplFull}); agreement ${t.agreementBefore} → ${t.agreementAfter}`);
  log(`wrote ${file} (${((performance.now() - t0) / 1000).toFixed(0)} s this run)`);
  model.dispose();
}

export function registerSkip(train: Command): void {
  train
    .command('skip')
    .description('Adapt a model to the layers a skipLayers target keeps (LoRA, self-distilled from the full model)')
    .option('--model <name>', MODEL_OPTION_HELP)
    .option('--target <r>', 'target speedup r (the kept layers are those skipLayers runs at r)', Number, 2)
    .option('--tokens <n>', 'continuation tokens to generate for training', int('--tokens'), 8000)
    .option('--held-out <n>', 'continuation tokens for the held-out figures', int('--held-out'), 1200)
    .option('--max-tokens <n>', 'continuation length per prompt', int('--max-tokens'), 64)
    .option('--steps <n>', 'optimiser steps (default: one pass over the samples)', int('--steps'))
    .option('--batch <n>', 'samples per step', int('--batch'), 4)
    .option('--window <n>', 'tokens the kept layers run per sample', int('--window'), 48)
    .option('--rank <n>', 'LoRA rank', int('--rank'), 8)
    .option('--lr <x>', 'Adam learning rate', Number, 1e-3)
    .option('--state <dir>', 'cache and checkpoint folder (default .skein/skip/<model>/skip-r<r>)')
    .option('--out <dir>', 'where to write the adapter (default models/adapters/<model>)')
    .option('--resume', 'continue from the checkpoint in the state folder')
    .action(async (opts: SkipOptions) => trainSkipCommand(opts));
}
