/**
 * `skein train heads`: speculative heads (Medusa / Cerberus, issue #13) for a model, on a
 * frozen backbone. Self-distillation rows are generated once and cached under
 * `<state>/data-*.safetensors` (the backbone never runs again for them); training state is
 * checkpointed there too, so a second run with the same flags resumes. The heads are written
 * where the speculate stage finds them (runtime/heads/files.ts): `--out`, by default the
 * committed `models/heads/<model>/<kind>/`.
 *
 * @example
 * npx skein train heads --model smollm2-135m-instruct --kind cerberus --heads 4 --tokens 12000
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import { loadModel, MODELS_DIR } from '../../checkpoint/load.js';
import { readSafetensors, writeSafetensors } from '../../checkpoint/safetensors.js';
import { HEADS_KINDS, writeHeads, type HeadsKind } from '../../heads/files.js';
import { distill, type DistilledRows } from '../../train/heads-data.js';
import { trainHeads } from '../../train/heads-train.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';

interface HeadsOptions {
  model?: string;
  kind: string;
  heads: number;
  tokens: number;
  heldOut: number;
  maxTokens: number;
  steps?: number;
  batch: number;
  lr: number;
  state?: string;
  out?: string;
}

function int(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new BadRequestError(name, `expected a positive integer, got ${value}`);
    return n;
  };
}

const log = (line: string) => process.stderr.write(`skein: heads: ${line}\n`);

/** Rows from the cache, or generated (about `tokens` of them) and cached. */
function rows(file: string, make: () => DistilledRows): DistilledRows {
  if (fs.existsSync(file)) {
    const t = readSafetensors(file);
    const [n, d] = t.hidden!.shape as [number, number];
    const K = t.targets!.shape[1]!;
    log(`using cached rows ${file} (${n})`);
    return { hidden: t.hidden!.data, targets: Int32Array.from(t.targets!.data), next: Int32Array.from(t.next!.data), rows: n, heads: K, hiddenSize: d, prompts: t.prompts!.data[0]! };
  }
  const r = make();
  writeSafetensors(file, {
    hidden: { shape: [r.rows, r.hiddenSize], data: r.hidden },
    targets: { shape: [r.rows, r.heads], data: Float32Array.from(r.targets) },
    next: { shape: [r.rows], data: Float32Array.from(r.next) },
    prompts: { shape: [1], data: Float32Array.of(r.prompts) },
  });
  return r;
}

async function trainHeadsCommand(o: HeadsOptions): Promise<void> {
  if (!HEADS_KINDS.includes(o.kind as HeadsKind)) throw new BadRequestError('--kind', `one of ${HEADS_KINDS.join(', ')}`);
  const kind = o.kind as HeadsKind;
  const { model: spec } = await modelOrDefault(o.model);
  const model = await loadModel(spec, { eagerTokenizer: true });
  const tokenizer = model.tokenizer();
  const name = path.basename(model.dir);
  const state = o.state ?? path.join('.skein', 'heads', name);
  fs.mkdirSync(state, { recursive: true });
  const t0 = performance.now();
  // About maxTokens rows per prompt; a few more prompts than that, as some end early.
  const promptsFor = (tokens: number) => Math.max(4, Math.ceil((tokens / o.maxTokens) * 1.25));
  const gen = (tokens: number, heldOut: boolean) => () => {
    log(`generating ${heldOut ? 'held-out' : 'training'} continuations (about ${tokens} tokens)`);
    const t = performance.now();
    const r = distill(model, tokenizer, {
      prompts: promptsFor(tokens),
      maxTokens: o.maxTokens,
      heads: o.heads,
      heldOut,
      onProgress: (i, n) => i % 16 === 0 && log(`continuations ${i}/${n}`),
    });
    log(`${r.rows} rows from ${r.prompts} prompts in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    return r;
  };
  const train = rows(path.join(state, `data-train-${o.heads}-${o.tokens}.safetensors`), gen(o.tokens, false));
  const heldOut = rows(path.join(state, `data-heldout-${o.heads}-${o.heldOut}.safetensors`), gen(o.heldOut, true));
  const steps = o.steps ?? Math.ceil((2 * train.rows) / o.batch);
  log(`training ${o.heads} ${kind} heads on ${train.rows} rows, ${steps} steps of ${o.batch}`);
  let last = performance.now();
  const heads = trainHeads(model, train, heldOut, {
    kind,
    steps,
    batch: o.batch,
    lr: o.lr,
    stateDir: state,
    onStep: (step, loss) => {
      if (step % 10 === 0 || step === steps) {
        const now = performance.now();
        log(`step ${step}/${steps} loss ${loss.toFixed(3)} (${((now - last) / 10).toFixed(0)} ms/step)`);
        last = now;
      }
    },
  });
  const out = o.out ?? path.join(MODELS_DIR, 'heads', name, kind);
  writeHeads(out, heads);
  const t = heads.meta.training!;
  log(`held-out top-1 per head ${t.top1.join(', ')}; top-5 ${t.top5.join(', ')}`);
  log(`tree of ${heads.meta.tree.length} nodes; gate threshold ${heads.meta.gateThreshold ?? 'none'} (rate ${heads.meta.gateRate ?? 0})`);
  log(`wrote ${out} (${train.rows} training tokens, ${((performance.now() - t0) / 1000).toFixed(0)} s this run)`);
  model.dispose();
}

export function registerHeads(train: Command): void {
  train
    .command('heads')
    .description('Train speculative heads (Medusa or Cerberus) on a frozen model from its own greedy continuations')
    .option('--model <name>', MODEL_OPTION_HELP)
    .option('--kind <kind>', 'medusa or cerberus', 'medusa')
    .option('--heads <n>', 'number of heads (head k predicts the token k+2 ahead)', int('--heads'), 4)
    .option('--tokens <n>', 'training tokens (positions) to distill', int('--tokens'), 12000)
    .option('--held-out <n>', 'held-out tokens for accuracies, tree and gate', int('--held-out'), 1500)
    .option('--max-tokens <n>', 'continuation length per prompt', int('--max-tokens'), 96)
    .option('--steps <n>', 'optimiser steps (default: two epochs)', int('--steps'))
    .option('--batch <n>', 'rows per step', int('--batch'), 64)
    .option('--lr <x>', 'Adam learning rate', Number, 1e-3)
    .option('--state <dir>', 'cache and checkpoint folder (default .skein/heads/<model>)')
    .option('--out <dir>', 'where to write the heads (default models/heads/<model>/<kind>)')
    .action(async (opts: HeadsOptions) => trainHeadsCommand(opts));
}
