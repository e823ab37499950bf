/**
 * Speculative heads on disk (Medusa / Cerberus, TECHNIQUES §4): one folder per kind,
 * `heads.json` (kind, number of heads, sizes, the candidate tree, the calibrated entropy
 * gate, the training figures, the token ids the heads project onto) beside `heads.safetensors` (f32: per head `heads.{k}.weight`
 * stored (in, out) so `x·W` is a plain matMul, and `heads.{k}.bias`). A Medusa head's
 * input is the model's final hidden state (in = hidden); a Cerberus head after the first
 * also reads the previous head's output (in = 2·hidden).
 *
 * Where heads are found for a model: `<model folder>/heads/<kind>/`, then the committed
 * `models/heads/<model name>/<kind>/` (the default model's folder is git-ignored, its heads
 * are not). A bad file is a CheckpointError naming the file and, where it applies, the tensor.
 *
 * @example
 * const dir = findHeadsDir({ name: 'smollm2-135m-instruct', dir }, 'cerberus');
 * const heads = readHeads(dir!, model.config);
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../core/errors.js';
import { readSafetensors, writeSafetensors, type FloatTensor } from '../checkpoint/safetensors.js';
import { MODELS_DIR } from '../checkpoint/load.js';
import type { ModelConfig } from '../model/types.js';

export type HeadsKind = 'medusa' | 'cerberus';
export const HEADS_KINDS: readonly HeadsKind[] = ['medusa', 'cerberus'];
export const HEADS_JSON = 'heads.json';
export const HEADS_WEIGHTS = 'heads.safetensors';

/** What `skein train heads` measured, kept with the heads so the bench and the card can say it. */
export interface HeadsTraining {
  tokens: number;
  heldOutTokens: number;
  steps: number;
  wallSeconds: number;
  /** Per head: share of held-out positions whose target is the head's top-1 / within its top-5. */
  top1: number[];
  top5: number[];
  /** Per head, the held-out accuracy at each rank (rank i: target is the i-th candidate), used to shape the tree. */
  rankAccuracy: number[][];
  /** Fine-tuned from earlier heads (`train heads --init`): what those were trained on. */
  startedFrom?: { tokens: number; steps: number };
  /** Share of the training targets inside the heads' vocabulary (`vocab`; 1 without one). */
  vocabCoverage?: number;
}

export interface HeadsMeta {
  kind: HeadsKind;
  numHeads: number;
  hiddenSize: number;
  vocabSize: number;
  /**
   * The candidate tree as Medusa's `medusa_choices`: each path lists, per depth, which
   * candidate (rank in that head's top-k) it takes; ordered so that a path's parent
   * comes before it.
   */
  tree: number[][];
  /** Entropy (nats) of the base model's next-token distribution above which a step decodes plainly; null: no gate. */
  gateThreshold: number | null;
  /** Held-out share of steps the gate sends to plain decoding at that threshold. */
  gateRate?: number;
  /**
   * The token ids the heads project onto (rows of the model's own LM head, so only the ids
   * are stored): the most frequent tokens of the distilled continuations. A head's
   * candidates come from these alone, which stays lossless (the model verifies every
   * draft) and makes the projection vocabSize / vocab.length times cheaper. Absent: the
   * whole vocabulary.
   */
  vocab?: number[];
  /**
   * Every head also reads the embedding of the pending token (the one the base model chose
   * from the same hidden state, the tree's root), so head 0 predicts the token after a
   * known one instead of guessing past it: the information EAGLE and Hydra show plain
   * Medusa heads miss. Absent: false (Medusa's and Cerberus's heads as published).
   */
  pendingToken?: boolean;
  /**
   * The best tree paths measured on held-out rows, best first (parents before their
   * children): each with its share of held-out steps on which it was accepted. `tree` is a
   * prefix of these; a request asking for N nodes takes the first N, and the scheduler
   * weighs each node's share against what its row costs (runtime/scheduler/draft-budget.ts).
   */
  paths?: { path: number[]; share: number }[];
  /** Forward cost of n new rows relative to one row, measured where the heads were trained (after a 128-token past). */
  forwardCost?: { rows: number[]; relative: number[] };
  training?: HeadsTraining;
}

/** Heads in memory: weights as flat f32, (in, out) row-major. */
export interface HeadsData {
  meta: HeadsMeta;
  weights: Float32Array[];
  biases: Float32Array[];
}

/** The input width of head k: its hidden row, the pending token's embedding when the heads read it, the previous head's output for Cerberus. */
export function headInput(kind: HeadsKind, k: number, hidden: number, pendingToken = false): number {
  return hidden * (1 + (pendingToken ? 1 : 0) + (kind === 'cerberus' && k > 0 ? 1 : 0));
}

/** The heads folder of a model for a kind, or undefined when it has none. */
export function findHeadsDir(model: { name: string; dir?: string }, kind: HeadsKind): string | undefined {
  const candidates = [
    ...(model.dir ? [path.join(model.dir, 'heads', kind)] : []),
    path.join(MODELS_DIR, 'heads', model.dir ? path.basename(model.dir) : model.name, kind),
  ];
  return candidates.find((d) => fs.existsSync(path.join(d, HEADS_JSON)));
}

/** Every kind of heads a model has. */
export function availableHeads(model: { name: string; dir?: string }): HeadsKind[] {
  return HEADS_KINDS.filter((k) => findHeadsDir(model, k) !== undefined);
}

/** Reads and checks a heads folder against the model it is for. */
export function readHeads(dir: string, config: Pick<ModelConfig, 'hiddenSize' | 'vocabSize'>): HeadsData {
  const jsonFile = path.join(dir, HEADS_JSON);
  const weightsFile = path.join(dir, HEADS_WEIGHTS);
  for (const f of [jsonFile, weightsFile]) {
    if (!fs.existsSync(f)) throw new CheckpointError({ file: f, reason: 'no such file (train heads with `npx skein train heads`)' });
  }
  let meta: HeadsMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as HeadsMeta;
  } catch (err) {
    throw new CheckpointError({ file: jsonFile, reason: `not JSON: ${(err as Error).message}` });
  }
  checkMeta(jsonFile, meta, config);
  const tensors = readSafetensors(weightsFile);
  const d = meta.hiddenSize;
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (let k = 0; k < meta.numHeads; k++) {
    const w = tensor(weightsFile, tensors, `heads.${k}.weight`, [headInput(meta.kind, k, d, meta.pendingToken), d]);
    const b = tensor(weightsFile, tensors, `heads.${k}.bias`, [d]);
    weights.push(w);
    biases.push(b);
  }
  return { meta, weights, biases };
}

function checkMeta(file: string, meta: HeadsMeta, config: Pick<ModelConfig, 'hiddenSize' | 'vocabSize'>): void {
  const bad = (reason: string) => new CheckpointError({ file, reason });
  if (!HEADS_KINDS.includes(meta.kind)) throw bad(`kind must be one of ${HEADS_KINDS.join(', ')}, got ${String(meta.kind)}`);
  if (!(Number.isInteger(meta.numHeads) && meta.numHeads >= 1)) throw bad('numHeads must be a positive integer');
  if (meta.hiddenSize !== config.hiddenSize) throw bad(`the heads are for hidden size ${meta.hiddenSize}, the model's is ${config.hiddenSize}`);
  if (meta.vocabSize !== config.vocabSize) throw bad(`the heads are for a vocabulary of ${meta.vocabSize}, the model's is ${config.vocabSize}`);
  if (!Array.isArray(meta.tree) || meta.tree.length === 0) throw bad('tree must be a non-empty list of paths');
  const seen = new Set<string>();
  for (const p of meta.tree) {
    if (!Array.isArray(p) || p.length === 0 || p.length > meta.numHeads || !p.every((c) => Number.isInteger(c) && c >= 0)) {
      throw bad(`tree path ${JSON.stringify(p)} must be 1..${meta.numHeads} candidate ranks`);
    }
    if (p.length > 1 && !seen.has(JSON.stringify(p.slice(0, -1)))) throw bad(`tree path ${JSON.stringify(p)} comes before its parent`);
    seen.add(JSON.stringify(p));
  }
  if (meta.vocab !== undefined) {
    if (!Array.isArray(meta.vocab) || meta.vocab.length === 0) throw bad('vocab must be a non-empty list of token ids');
    const ids = new Set<number>();
    for (const id of meta.vocab) {
      if (!(Number.isInteger(id) && id >= 0 && id < config.vocabSize)) throw bad(`vocab id ${JSON.stringify(id)} is outside the model's vocabulary 0..${config.vocabSize - 1}`);
      if (ids.has(id)) throw bad(`vocab id ${id} appears twice`);
      ids.add(id);
    }
  }
  if (meta.pendingToken !== undefined && typeof meta.pendingToken !== 'boolean') throw bad('pendingToken must be true or false');
  if (meta.paths !== undefined) {
    if (!Array.isArray(meta.paths)) throw bad('paths must be a list of {path, share}');
    const before = new Set<string>();
    for (const p of meta.paths) {
      const ok = Array.isArray(p?.path) && p.path.length >= 1 && p.path.length <= meta.numHeads && p.path.every((c) => Number.isInteger(c) && c >= 0);
      if (!ok || !(typeof p.share === 'number' && p.share >= 0 && p.share <= 1)) throw bad(`paths entry ${JSON.stringify(p)} must be {path: 1..${meta.numHeads} ranks, share: 0..1}`);
      if (p.path.length > 1 && !before.has(JSON.stringify(p.path.slice(0, -1)))) throw bad(`paths entry ${JSON.stringify(p.path)} comes before its parent`);
      before.add(JSON.stringify(p.path));
    }
  }
  if (meta.forwardCost !== undefined) {
    const { rows, relative } = meta.forwardCost;
    const ok =
      Array.isArray(rows) && Array.isArray(relative) && rows.length >= 1 && rows.length === relative.length &&
      rows.every((n, i) => Number.isInteger(n) && n >= 1 && (i === 0 || n > rows[i - 1]!)) && relative.every((x) => typeof x === 'number' && x > 0);
    if (!ok) throw bad('forwardCost must be {rows: ascending row counts, relative: one positive cost per count}');
  }
  if (meta.gateThreshold !== null && !(typeof meta.gateThreshold === 'number' && meta.gateThreshold >= 0)) {
    throw bad('gateThreshold must be a non-negative number or null');
  }
}

function tensor(file: string, tensors: Record<string, FloatTensor>, name: string, shape: number[]): Float32Array {
  const t = tensors[name];
  if (t === undefined) throw new CheckpointError({ file, tensor: name, reason: 'missing' });
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new CheckpointError({ file, tensor: name, reason: `shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]` });
  }
  return t.data;
}

/** Writes a heads folder (weights first, so a folder with heads.json is always complete; weights as F16). */
export function writeHeads(dir: string, heads: HeadsData): void {
  const d = heads.meta.hiddenSize;
  const tensors: Record<string, FloatTensor> = {};
  heads.weights.forEach((w, k) => {
    tensors[`heads.${k}.weight`] = { shape: [headInput(heads.meta.kind, k, d, heads.meta.pendingToken), d], data: w };
    tensors[`heads.${k}.bias`] = { shape: [d], data: heads.biases[k]! };
  });
  fs.mkdirSync(dir, { recursive: true });
  // F16: half the bytes of a committed file (four heads reading the pending token are 14.6 MB in F32); decoding
  // rounds them further, to Q8_0 (heads.ts), and training keeps its own F32 state.
  writeSafetensors(path.join(dir, HEADS_WEIGHTS), tensors, 'F16', { format: 'skein-heads', kind: heads.meta.kind });
  // The vocabulary's thousands of ids on one line, the rest of the file one field a line.
  const text = JSON.stringify(heads.meta, (key, value: unknown) => (key === 'vocab' && value !== undefined ? '@vocab' : value), 2).replace('"@vocab"', JSON.stringify(heads.meta.vocab));
  fs.writeFileSync(path.join(dir, HEADS_JSON), `${text}\n`);
}
