/**
 * `skein train heads`: speculative heads (Medusa / Cerberus, issue #13) for a model, on a
 * frozen backbone. Self-distillation rows are generated once and cached in chunks under
 * `.skein/heads-data/<model>/` (runtime/train/heads-cache.ts: the backbone never runs again
 * for them, a stopped run loses one chunk, `--shard s/n` lets n processes fill the cache
 * together, `--data-only` stops there); training state is checkpointed under `--state`, so
 * a second run with the same flags resumes. The heads are written
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
import { HEADS_KINDS, readHeads, writeHeads, type HeadsKind } from '../../heads/files.js';
import { fillCache } from '../../train/heads-cache.js';
import { shapeHeads, trainHeads } from '../../train/heads-train.js';
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
  data?: string;
  out?: string;
  maxBatch: number;
  shard?: string;
  dataOnly?: boolean;
  cached?: boolean;
  init?: string;
  vocab: number;
  pendingToken?: boolean;
  reshape?: boolean;
}

/** `--shard s/n`: this process generates chunks i ≡ s−1 (mod n). */
function parseShard(spec: string | undefined): { index: number; count: number } {
  if (spec === undefined) return { index: 0, count: 1 };
  const m = /^(\d+)\/(\d+)$/.exec(spec);
  const [s, n] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (!(n >= 1 && s >= 1 && s <= n)) throw new BadRequestError('--shard', `expected s/n with 1 ≤ s ≤ n, got ${spec}`);
  return { index: s - 1, count: n };
}

function int(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new BadRequestError(name, `expected a positive integer, got ${value}`);
    return n;
  };
}

const log = (line: string) => process.stderr.write(`skein: heads: ${line}\n`);

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
  const shard = parseShard(o.shard);
  // Held-out rows come from their own pool (instruct.ts) and seed, apart from the bench's (seed 11); only the first shard makes them.
  const cache = (heldOut: boolean, rows: number) =>
    fillCache(model, tokenizer, {
      dir: o.data ?? path.join('.skein', 'heads-data', name),
      heldOut,
      rows,
      heads: o.heads,
      maxTokens: o.maxTokens,
      seed: heldOut ? 5 : 1,
      maxBatch: o.maxBatch,
      log,
      ...(heldOut ? { readOnly: o.cached === true || shard.index > 0 } : { shard, readOnly: o.cached === true }),
    });
  if (!o.reshape) log(`distilling: ${o.tokens} training rows${shard.count > 1 ? ` (shard ${shard.index + 1} of ${shard.count})` : ''}, ${o.heldOut} held-out, continuations of up to ${o.maxTokens} tokens, batch ${o.maxBatch}`);
  const heldOut = cache(true, o.heldOut);
  const out = o.out ?? path.join(MODELS_DIR, 'heads', name, kind);
  if (o.reshape) {
    if (heldOut.rows === 0) {
      model.dispose();
      throw new BadRequestError('--reshape', 'no held-out rows are cached yet; run with --data-only first');
    }
    const heads = readHeads(out, model.config);
    shapeHeads(model, heads, heldOut);
    writeHeads(out, heads);
    log(`reshaped ${out} on ${heldOut.rows} held-out rows: tree of ${heads.meta.tree.length} nodes (best path share ${heads.meta.paths?.[0]?.share ?? 0}); gate threshold ${heads.meta.gateThreshold ?? 'none'} (rate ${heads.meta.gateRate ?? 0}); forward cost by rows ${JSON.stringify(heads.meta.forwardCost)}`);
    model.dispose();
    return;
  }
  const train = cache(false, o.tokens);
  log(`${train.rows} training rows (${train.prompts} prompts), ${heldOut.rows} held-out rows (${heldOut.prompts} prompts), ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  if (o.dataOnly) {
    model.dispose();
    return;
  }
  if (train.rows === 0 || heldOut.rows === 0) {
    model.dispose();
    throw new BadRequestError('--cached', `no ${train.rows === 0 ? 'training' : 'held-out'} rows are cached yet; run without --cached (or with --data-only) first`);
  }
  const steps = o.steps ?? Math.ceil((2 * train.rows) / o.batch);
  log(`training ${o.heads} ${kind} heads on ${train.rows} rows, ${steps} steps of ${o.batch}`);
  let last = performance.now();
  const heads = trainHeads(model, train, heldOut, {
    kind,
    steps,
    batch: o.batch,
    lr: o.lr,
    stateDir: state,
    vocab: o.vocab,
    pendingToken: o.pendingToken === true,
    ...(o.init !== undefined ? { init: readHeads(o.init, model.config) } : {}),
    onStep: (step, loss) => {
      if (step % 10 === 0 || step === steps) {
        const now = performance.now();
        log(`step ${step}/${steps} loss ${loss.toFixed(3)} (${((now - last) / 10).toFixed(0)} ms/step)`);
        last = now;
      }
    },
  });
  writeHeads(out, heads);
  const t = heads.meta.training!;
  log(`held-out top-1 per head ${t.top1.join(', ')}; top-5 ${t.top5.join(', ')}; vocabulary ${heads.meta.vocab?.length ?? 'all'} tokens covering ${t.vocabCoverage ?? 1} of the training targets`);
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
    .option('--tokens <n>', 'training tokens (positions) to distill', int('--tokens'), 100000)
    .option('--held-out <n>', 'held-out tokens for accuracies, tree and gate', int('--held-out'), 4000)
    .option('--max-tokens <n>', 'continuation length per prompt', int('--max-tokens'), 128)
    .option('--max-batch <n>', 'sequences generated together (16 measured fastest per token here)', int('--max-batch'), 16)
    .option('--data <dir>', 'distilled-rows cache (default .skein/heads-data/<model>)')
    .option('--shard <s/n>', 'generate only every n-th chunk of rows, starting at s (parallel distillation)')
    .option('--vocab <n>', 'tokens the heads project onto: the most frequent of the distilled continuations (the model\'s vocabulary size or more: all)', int('--vocab'), 8192)
    .option('--pending-token', 'heads also read the embedding of the token the base model just chose (the tree root): head 0 predicts past a known token')
    .option('--init <dir>', 'start from the heads in this folder (fine-tuning them on the rows) instead of zeros')
    .option('--cached', 'train on the rows already cached, generating none')
    .option('--data-only', 'distill (or top up) the cached rows and stop')
    .option('--reshape', 'keep the trained heads in --out (default models/heads/<model>/<kind>) and only re-measure on cached held-out rows and this machine: their tree, gate and forward cost by rows')
    .option('--steps <n>', 'optimiser steps (default: two epochs)', int('--steps'))
    .option('--batch <n>', 'rows per step', int('--batch'), 64)
    .option('--lr <x>', 'Adam learning rate', Number, 1e-3)
    .option('--state <dir>', 'cache and checkpoint folder (default .skein/heads/<model>)')
    .option('--out <dir>', 'where to write the heads (default models/heads/<model>/<kind>)')
    .action(async (opts: HeadsOptions) => trainHeadsCommand(opts));
}
