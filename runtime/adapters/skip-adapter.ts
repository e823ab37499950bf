/**
 * Skip adapters on disk: the LoRA that `skein train skip` fits so that a model's kept
 * layers alone (Unified Layer Skipping, runtime/stages/layer-selection.ts) follow the full
 * model's next-token distribution. One pair of files per target speedup r:
 * `skip-r<r>.json` (base file and its sha256, target, kept layers, rank, scale, training
 * figures) beside `skip-r<r>.safetensors` (stored as f16, read as f32: per kept layer l and projection p,
 * `layers.{l}.{p}.a` (in, rank) and `layers.{l}.{p}.b` (rank, out), so the adapted
 * projection is x·(W + scale·A·B), W stored (in, out) as everywhere in the runtime).
 *
 * Where adapters are found for a model: `<model folder>/adapters/`, then the committed
 * `models/adapters/<model name>/` (the default model's folder is git-ignored, its adapters
 * are not). Anything wrong — a missing file, another base file, layers that are not the
 * ones r keeps, a tensor of the wrong shape — is a CheckpointError naming the file and,
 * where it applies, the tensor.
 *
 * @example
 * const file = findSkipAdapter({ name: 'smollm2-135m-instruct', dir }, 2);
 * const adapter = readSkipAdapter(file!, model.config, baseSha256);
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../core/errors.js';
import { readSafetensors, writeSafetensors, type FloatTensor } from '../checkpoint/safetensors.js';
import { MODELS_DIR } from '../checkpoint/load.js';
import type { ModelConfig } from '../model/types.js';
import { unifiedLayers } from '../stages/layer-selection.js';

/** The projections a skip adapter may carry, by their LayerWeights names. */
export const LORA_PROJECTIONS = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const;
export type LoraProjection = (typeof LORA_PROJECTIONS)[number];

/** What `skein train skip` measured on held-out continuations, before and after. */
export interface SkipTraining {
  samples: number;
  heldOutSamples: number;
  steps: number;
  wallSeconds: number;
  /** Mean KL(full ‖ kept layers) per position, nats. */
  klBefore: number;
  klAfter: number;
  /** Perplexity of the kept layers on the full model's greedy continuations (the full model's own beside). */
  pplBefore: number;
  pplAfter: number;
  pplFull: number;
  /** Share of positions where the kept layers' argmax is the full model's (teacher-forced). */
  agreementBefore: number;
  agreementAfter: number;
}

export interface SkipAdapterMeta {
  format: 'skein-skip-adapter';
  /** The base checkpoint file's name and sha256 (hex): an adapter fits one set of weights. */
  base: { file: string; sha256: string };
  targetSpeedup: number;
  numLayers: number;
  /** The kept layers (unifiedLayers(numLayers, targetSpeedup)); only they carry LoRA. */
  layers: number[];
  rank: number;
  /** Multiplies A·B (LoRA's alpha / rank). */
  scale: number;
  projections: LoraProjection[];
  training?: SkipTraining;
}

/** One projection's low-rank update, flat row-major. */
export interface LoraPair {
  a: Float32Array; // (in, rank)
  b: Float32Array; // (rank, out)
}

export interface SkipAdapter {
  meta: SkipAdapterMeta;
  /** lora[i][p]: kept layer meta.layers[i], projection p. */
  lora: Record<LoraProjection, LoraPair>[];
}

/** (in, out) of a projection in the runtime's x·W layout. */
export function projectionShape(c: Pick<ModelConfig, 'hiddenSize' | 'intermediateSize' | 'numHeads' | 'numKvHeads' | 'headDim'>, p: LoraProjection): [number, number] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const shapes: Record<LoraProjection, [number, number]> = {
    wq: [c.hiddenSize, q],
    wk: [c.hiddenSize, kv],
    wv: [c.hiddenSize, kv],
    wo: [q, c.hiddenSize],
    wGate: [c.hiddenSize, c.intermediateSize],
    wUp: [c.hiddenSize, c.intermediateSize],
    wDown: [c.intermediateSize, c.hiddenSize],
  };
  return shapes[p];
}

/** `skip-r2` for r = 2; a fractional target keeps its digits (`skip-r2.5`). */
export function adapterBaseName(targetSpeedup: number): string {
  return `skip-r${targetSpeedup}`;
}

/** The adapter's json file for a model and target, or undefined when it has none. */
export function findSkipAdapter(model: { name: string; dir?: string }, targetSpeedup: number): string | undefined {
  const name = `${adapterBaseName(targetSpeedup)}.json`;
  const candidates = [
    ...(model.dir ? [path.join(model.dir, 'adapters', name)] : []),
    path.join(MODELS_DIR, 'adapters', model.dir ? path.basename(model.dir) : model.name, name),
  ];
  return candidates.find((f) => fs.existsSync(f));
}

/** sha256 (hex) of a file, read in chunks. */
export function fileSha256(file: string): string {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 22);
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/**
 * The sha256 an adapter names as its base: of the file for a single-file checkpoint (GGUF),
 * of the sorted files' own sha256s for a folder's `*.safetensors`.
 */
export function checkpointSha256(source: string): string {
  if (!fs.statSync(source).isDirectory()) return fileSha256(source);
  const files = fs.readdirSync(source).filter((f) => f.endsWith('.safetensors')).sort();
  return crypto.createHash('sha256').update(files.map((f) => fileSha256(path.join(source, f))).join('\n')).digest('hex');
}

type AdapterConfig = Pick<ModelConfig, 'numLayers' | 'hiddenSize' | 'intermediateSize' | 'numHeads' | 'numKvHeads' | 'headDim'>;

/**
 * Reads an adapter (its json file; the weights beside it) and checks it against the model
 * it is for: `baseSha256` is the sha256 of the checkpoint file the model was loaded from.
 */
export function readSkipAdapter(jsonFile: string, config: AdapterConfig, baseSha256: string): SkipAdapter {
  const weightsFile = jsonFile.replace(/\.json$/, '.safetensors');
  for (const f of [jsonFile, weightsFile]) {
    if (!fs.existsSync(f)) throw new CheckpointError({ file: f, reason: 'no such file (train one with `npx skein train skip`)' });
  }
  let meta: SkipAdapterMeta;
  try {
    meta = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as SkipAdapterMeta;
  } catch (err) {
    throw new CheckpointError({ file: jsonFile, reason: `not JSON: ${(err as Error).message}` });
  }
  checkMeta(jsonFile, meta, config, baseSha256);
  const tensors = readSafetensors(weightsFile);
  const lora = meta.layers.map((l) => {
    const pairs = {} as Record<LoraProjection, LoraPair>;
    for (const p of meta.projections) {
      const [inDim, outDim] = projectionShape(config, p);
      pairs[p] = {
        a: tensor(weightsFile, tensors, `layers.${l}.${p}.a`, [inDim, meta.rank]),
        b: tensor(weightsFile, tensors, `layers.${l}.${p}.b`, [meta.rank, outDim]),
      };
    }
    return pairs;
  });
  return { meta, lora };
}

function checkMeta(file: string, meta: SkipAdapterMeta, config: AdapterConfig, baseSha256: string): void {
  const bad = (reason: string) => new CheckpointError({ file, reason });
  if (meta.format !== 'skein-skip-adapter') throw bad(`format must be "skein-skip-adapter", got ${JSON.stringify(meta.format)}`);
  if (meta.base?.sha256 !== baseSha256) {
    throw bad(`made for base ${meta.base?.file ?? '?'} (sha256 ${meta.base?.sha256 ?? '?'}), the model's file has sha256 ${baseSha256}`);
  }
  if (meta.numLayers !== config.numLayers) throw bad(`made for ${meta.numLayers} layers, the model has ${config.numLayers}`);
  if (!(typeof meta.targetSpeedup === 'number' && meta.targetSpeedup >= 1)) throw bad('targetSpeedup must be a number ≥ 1');
  const expected = unifiedLayers(config.numLayers, meta.targetSpeedup);
  if (JSON.stringify(meta.layers) !== JSON.stringify(expected)) {
    throw bad(`layers [${meta.layers?.join(', ')}] are not the ones a ${meta.targetSpeedup}× target keeps ([${expected.join(', ')}])`);
  }
  if (!(Number.isInteger(meta.rank) && meta.rank >= 1)) throw bad('rank must be a positive integer');
  if (!(typeof meta.scale === 'number' && Number.isFinite(meta.scale))) throw bad('scale must be a finite number');
  if (!Array.isArray(meta.projections) || meta.projections.length === 0 || !meta.projections.every((p) => LORA_PROJECTIONS.includes(p))) {
    throw bad(`projections must be a non-empty list of ${LORA_PROJECTIONS.join(', ')}`);
  }
}

function tensor(file: string, tensors: Record<string, FloatTensor>, name: string, shape: number[]): Float32Array {
  const t = tensors[name];
  if (t === undefined) throw new CheckpointError({ file, tensor: name, reason: 'missing' });
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new CheckpointError({ file, tensor: name, reason: `shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]` });
  }
  for (const x of t.data) if (!Number.isFinite(x)) throw new CheckpointError({ file, tensor: name, reason: `value ${x}: weights must be finite` });
  return t.data;
}

/** Writes an adapter (weights first, so a json file always has its weights beside it); returns the json file. */
export function writeSkipAdapter(dir: string, adapter: SkipAdapter): string {
  const tensors: Record<string, FloatTensor> = {};
  const { meta } = adapter;
  meta.layers.forEach((l, i) => {
    for (const p of meta.projections) {
      const pair = adapter.lora[i]![p];
      tensors[`layers.${l}.${p}.a`] = { shape: [pair.a.length / meta.rank, meta.rank], data: pair.a };
      tensors[`layers.${l}.${p}.b`] = { shape: [meta.rank, pair.b.length / meta.rank], data: pair.b };
    }
  });
  fs.mkdirSync(dir, { recursive: true });
  const base = path.join(dir, adapterBaseName(meta.targetSpeedup));
  writeSafetensors(`${base}.safetensors`, tensors, 'F16', { format: 'skein-skip-adapter' });
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(meta, null, 2)}\n`);
  return `${base}.json`;
}
