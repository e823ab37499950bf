/**
 * The optimised forward: one synchronous call runs every sequence of a batch through the
 * model. All sequences' live new tokens are packed into one (T, hidden) matrix, so each
 * dense op (norms, projections, MLP) runs once per layer for the whole batch. Attention
 * runs per sequence on the exact kernel (exact-attention.ts).
 *
 * On the wasm backend every row's result is independent of the call it runs in — alone,
 * in a verification or tree, in a prefill chunk of any size, beside other sequences —
 * bit for bit (forward-exact.test.ts): projections run row by row on the wasm kernels, attention row
 * by row in a fixed order, norms and rotary in per-row loops. Batching, chunked prefill,
 * prefix sharing and greedy speculative decoding are lossless because of it.
 *
 * Prepared weights (cached per model, disposed with it): q and k fused into one matrix
 * (rotary runs on both at once), the RMSNorm weights folded into the matrices that follow
 * them and 1/sqrt(headDim) folded into the query columns. At batch 1 the wasm backend
 * spends about as long on per-op overhead as on reading weights, so fewer ops per layer is
 * the point; kernels.ts fuses the small elementwise chains for decode-sized batches.
 *
 * Block weights (a GGUF model whose projections are all F32/F16/Q8_0/Q4_0/Q4_1, see
 * types.ts BlockWeights, or a float checkpoint's f32 blocks on the wasm backend): the
 * projections and lm head run on the wasm kernels of runtime/kernels over the blocks
 * instead (no fused f32 copy is prepared), two dispatches per layer — norm + q/k/v, and
 * o-proj + residual + norm + MLP + residual (block-linear.ts). Other backends (tfjs-node)
 * run the fused f32 matrices below as tfjs matMuls. Quantized types multiply
 * int8-rounded activations as llama.cpp does; block-forward.test.ts states the tolerance.
 * Measured by `skein bench decode` on SmolLM2-135M Q4_1 against llama.cpp on the same
 * file: decode batch 1 0.21× (f32 tfjs path) → 0.38× (blocks); prefill of 128 tokens
 * 0.66× → 0.61×, i.e. no gain there (XNNPACK's f32 GEMM holds its own at 128 rows).
 *
 * @example
 * const [r] = forward(model, [{ ids: [1, 2, 3], logits: 'last' }]);
 * // r.logits[0]: Float32Array(vocab); r.newKv[l].k: (3, kvDim) — dispose the KV when done
 */
import * as tf from '@tensorflow/tfjs-core';
import { BadRequestError, NotAvailableError } from '../../core/errors.js';
import { KERNEL_TYPES, MatmulKernels, UploadedMatrix } from '../kernels/matmul.js';
import { blockLayer, blockLayers, type BlockLayerSeq } from './block-layer.js';
import { blockLinear, blockMlp, type BlockLinearOp, type BlockMlpOp } from './block-linear.js';
import { floatBlockWeights } from './block-weights.js';
import { exactAttention } from './exact-attention.js';
import { KvMirror, kvTypeOf } from './kv-mirror.js';
import { embedTokens, gatherRows, rmsNorm, ropeQk, swiGlu } from './kernels.js';
import { inverseFrequencies, ropeTables } from './rope.js';
import { sameLeading } from './same-leading.js';
import type { BlockMatrix } from '../kernels/blocks.js';
import type { BlockWeights, ForwardCallOptions, ForwardSequence, ForwardSequenceResult, LayerKvChunks, LoadedModel, ResumeStep } from './types.js';

interface PreparedLayer {
  wqk: tf.Tensor2D; // (hidden, qDim + kvDim): [q·scale | k], input norm folded in
  bqk: tf.Tensor1D | null; // (qDim + kvDim)
  wv: tf.Tensor2D; // (hidden, kvDim), input norm folded in
  bv: tf.Tensor1D | null; // (kvDim)
  wo: tf.Tensor2D; // (heads·headDim, hidden)
  bo: tf.Tensor1D | null; // (hidden)
  wg: tf.Tensor2D; // (hidden, inter), post-attention norm folded in
  wu: tf.Tensor2D; // (hidden, inter), post-attention norm folded in
  wd: tf.Tensor2D; // (inter, hidden)
}

/**
 * A layer on the block-weight path: each projection one call of the wasm kernels on the
 * GGUF's own blocks, the RMSNorms applied inside the call (they cannot be folded into
 * quantized weights), 1/sqrt(headDim) applied to the query outputs.
 */
interface BlockLayer {
  qkv: BlockLinearOp; // x → (T, qDim): q·scale (+ bq·scale), (T, kvDim): k (+ bk), (T, kvDim): v (+ bv); rotary on q and k in the same call
  mlp: BlockMlpOp; // attn (T, qDim), x (T, hidden) → x + o(attn) + mlp(...)
}

interface Prepared {
  layers: PreparedLayer[]; // empty on the block-weight path
  blocks: { layers: BlockLayer[]; lmHead: BlockLinearOp } | null;
  inv: Float64Array; // (headDim/2) rotary inverse frequencies
  /** The wasm kernels attention runs on (the block weights' own instance when there are blocks). */
  kernels: MatmulKernels;
  /** The KV chunks' copies in `kernels`' memory that attention reads (kv-mirror.ts). */
  mirror: KvMirror;
  eps: tf.Scalar; // RMSNorm epsilon, made once rather than uploaded by every add
  rotateHalf: tf.Tensor2D; // (D, D): x·R = rotate_half(x) = [-x2, x1]
  dispose(): void;
}

const prepared = new WeakMap<LoadedModel, Prepared>();

/** tf.tidy typed for results holding nulls and plain fields (tidy ignores non-tensors). */
function tidy<T>(fn: () => T): T {
  return tf.tidy(fn as () => tf.TensorContainer) as T;
}

/**
 * The KV pool's JoinRows for this model's default forward (kv/block.ts): a filled block's
 * tensor gets its copy in the kernels' memory from its rows' copies (KvMirror.joinRows).
 */
export function kvRowJoiner(model: LoadedModel): (chunks: tf.Tensor2D[], keys: boolean) => tf.Tensor2D {
  return (chunks, keys) => prepareModel(model).mirror.joinRows(chunks, keys);
}

/**
 * Builds (once per model) the fused weights the forward runs on. The model's dispose() is
 * wrapped so that they go with it.
 */
export function prepareModel(model: LoadedModel): Prepared {
  const cached = prepared.get(model);
  if (cached !== undefined) return cached;
  const c = model.config;
  const scale = 1 / Math.sqrt(c.headDim);
  // Float checkpoints run on f32 blocks too where the kernels are at hand (block-weights.ts
  // floatBlockWeights says why); other backends keep the tfjs matMuls.
  const candidate = model.blockWeights ?? (tf.getBackend() === 'wasm' && floatKernelsFit(c) ? floatBlockWeights(model) : undefined);
  const blocks = usableBlocks(candidate) ? prepareBlocks(model, candidate!) : null;
  const layers = blocks !== null ? [] : model.weights.layers.map((L) =>
    tidy(() => {
      const n1 = tf.reshape(L.inputNorm, [c.hiddenSize, 1]); // (hidden, 1): scales rows of W
      const n2 = tf.reshape(L.postNorm, [c.hiddenSize, 1]);
      // Separate matrices where their outputs part ways: a column split of a product
      // costs a strided copy, a second matMul costs nothing extra.
      const wqk = tf.concat([tf.mul(L.wq, tf.mul(n1, scale)), tf.mul(L.wk, n1)], 1) as tf.Tensor2D;
      const bqk = L.bq !== null && L.bk !== null ? (tf.concat([tf.mul(L.bq, scale), L.bk]) as tf.Tensor1D) : null;
      const wv = tf.mul(L.wv, n1) as tf.Tensor2D;
      const wg = tf.mul(L.wGate, n2) as tf.Tensor2D;
      const wu = tf.mul(L.wUp, n2) as tf.Tensor2D;
      // wo, bo, wd are used as they are; clone so the prepared set owns all it holds.
      // v's bias, wo, bo and wd are used as loaded (shared with the model, not owned here).
      return { wqk, bqk, wv, bv: L.bv, wo: L.wo, bo: L.bo, wg, wu, wd: L.wDown };
    }),
  );
  const eps = tf.scalar(c.rmsNormEps);
  const D = c.headDim;
  const r = new Float32Array(D * D);
  for (let j = 0; j < D / 2; j++) {
    r[(j + D / 2) * D + j] = -1; // out[j] = -x[j + D/2]
    r[j * D + j + D / 2] = 1; // out[j + D/2] = x[j]
  }
  const rotateHalf = tf.tensor2d(r, [D, D]);
  const kernels = blocks?.lmHead.kernels ?? new MatmulKernels();
  // Models on quantized blocks attend over an f16 copy of the KV cache, as llama.cpp does
  // on the same files (kv-mirror.ts kvAsF16), or a q8 one where the model asks for it;
  // float weights over f32.
  const mirror = new KvMirror(kernels, c.numKvHeads, kvTypeOf(model));
  const p: Prepared = {
    layers,
    blocks,
    inv: inverseFrequencies(c),
    kernels,
    mirror,
    eps,
    rotateHalf,
    dispose() {
      mirror.clear();
      tf.dispose([eps, rotateHalf]);
      for (const l of layers) tf.dispose([l.wqk, l.wv, l.wg, l.wu, ...(l.bqk ? [l.bqk] : [])]);
      prepared.delete(model);
    },
  };
  prepared.set(model, p);
  const dispose = model.dispose.bind(model);
  model.dispose = () => {
    p.dispose();
    dispose();
  };
  return p;
}

/** Whether every projection of a float model has the kernels' column multiple. */
function floatKernelsFit(c: LoadedModel['config']): boolean {
  return [c.hiddenSize, c.numHeads * c.headDim, c.intermediateSize].every((n) => n % 32 === 0);
}

/** Whether the forward can run on a model's block weights (every matrix of a kernel type). */
function usableBlocks(b: BlockWeights | undefined): boolean {
  if (b === undefined) return false;
  const all = [b.lmHead, ...b.layers.flatMap((L) => [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown])];
  return all.every((m) => KERNEL_TYPES.includes(m.type) && m.cols % 32 === 0);
}

/**
 * Copies a model's block weights into its own kernel memory (freed with the model) —
 * unless the loader already put them there (UploadedMatrix) — and the norm weights out of
 * tfjs once.
 */
function prepareBlocks(model: LoadedModel, bw: BlockWeights): NonNullable<Prepared['blocks']> {
  const c = model.config;
  const kernels = bw.lmHead instanceof UploadedMatrix ? bw.lmHead.kernels : new MatmulKernels();
  const upload = (m: BlockMatrix) => (m instanceof UploadedMatrix && m.kernels === kernels ? m.weight : kernels.upload(m));
  const scale = 1 / Math.sqrt(c.headDim);
  const eps = c.rmsNormEps;
  const layers = bw.layers.map((B, l): BlockLayer => {
    const L = model.weights.layers[l]!;
    const norm1 = { weight: L.inputNorm.dataSync() as Float32Array, eps };
    const norm2 = { weight: L.postNorm.dataSync() as Float32Array, eps };
    const read = (t: tf.Tensor1D | null) => (t === null ? null : (t.dataSync() as Float32Array).slice());
    // Biases (Qwen2's q/k/v) only with both q and k biased, as the tfjs path takes them; the query's scaled as tf.mul would.
    const qk = L.bq !== null && L.bk !== null;
    const bq = qk ? Float32Array.from(read(L.bq)!, (b) => Math.fround(b * Math.fround(scale))) : null;
    return {
      qkv: {
        kernels,
        norm: norm1,
        outputs: [[{ weight: upload(B.wq), scale, bias: bq }], [{ weight: upload(B.wk), bias: qk ? read(L.bk) : null }], [{ weight: upload(B.wv), bias: read(L.bv) }]],
      },
      mlp: {
        kernels,
        o: upload(B.wo),
        bo: L.bo === null ? null : (L.bo.dataSync() as Float32Array),
        norm: norm2,
        gate: upload(B.wGate),
        up: upload(B.wUp),
        down: upload(B.wDown),
      },
    };
  });
  return { layers, lmHead: { kernels, norm: null, outputs: [[{ weight: upload(bw.lmHead) }]] } };
}

/** Disposes the prepared weights of a model (they are rebuilt on the next forward). */
export function releasePrepared(model: LoadedModel): void {
  prepared.get(model)?.dispose();
}

/**
 * Each layer's past lists as validate last passed them, by the list's first key chunk: the
 * chunks, and the key rows up to each. The engine hands every sequence's lists again at each
 * step, the same chunks plus the newest rows; comparing them with these copies by reference
 * (arrays read in order) leaves only the new chunks to check and count. Reading every
 * chunk's shape instead reads ~7,700 tensors at 1,024 tokens of SmolLM2 context in 16-row
 * blocks, each evicted from the caches by the weights' stream since the last step (~0.25 ms
 * of a step, profiled).
 */
const checkedPast = new WeakMap<tf.Tensor, { k: readonly tf.Tensor2D[]; v: readonly tf.Tensor2D[]; rows: readonly number[] }>();

/**
 * How many leading chunks of k and v are those validate last passed (0 when it has not seen
 * the list), and the key rows up to each of them.
 */
function checkedChunks(k: readonly tf.Tensor2D[], v: readonly tf.Tensor2D[]): { same: number; rows: readonly number[] } {
  const known = k.length > 0 ? checkedPast.get(k[0]!) : undefined;
  if (known === undefined) return { same: 0, rows: [] };
  return { same: Math.min(sameLeading(known.k, k), sameLeading(known.v, v)), rows: known.rows };
}

/** Total tokens in a past chunk list (its key chunks). */
function chunkRows(layer: LayerKvChunks | undefined): number {
  if (layer === undefined) return 0;
  const { k, v } = layer;
  const { same, rows } = checkedChunks(k, v);
  let n = same > 0 ? rows[same - 1]! : 0;
  for (let j = same; j < k.length; j++) n += k[j]!.shape[0];
  return n;
}

/** Cached token count of a sequence: the longest past over layers (pruned/skipped layers hold fewer). */
export function pastLength(seq: ForwardSequence): number {
  let n = 0;
  for (const layer of seq.past ?? []) if (layer !== undefined) n = Math.max(n, chunkRows(layer));
  return n;
}

interface SeqState {
  seq: ForwardSequence;
  index: number; // position in the caller's array
  positions: number[];
  live: number[]; // indices (into ids) of the new tokens still computed
  pruneDone: number; // prune steps applied so far
  gone: number[]; // tokens the step being applied prunes
  prunedHidden: { fromLayer: number; tokenIndices: number[]; rows: tf.Tensor2D | null }[];
  attention: (tf.Tensor1D | null)[];
  /** Layers whose last-token attention a keepTop step scores with, and the live tokens it covered. */
  scoreAt: Set<number>;
  attentionLive: number[][];
  newKv: ({ k: tf.Tensor2D; v: tf.Tensor2D; tokenIndices: number[] } | null)[];
  /** Positions of the resumed (revived) rows, ascending: they come first in the state's packed rows. */
  resumed: number[];
  resumeDone: number; // resume steps applied so far
  resumedLog: { fromLayer: number; positions: number[] }[];
  resumedKv: ({ k: tf.Tensor2D; v: tf.Tensor2D; positions: number[] } | null)[];
}

/** Masks among a sequence's new rows by its live-token list (pruning replaces the list, never edits it): every layer until then shares one. */
const visibleByLive = new WeakMap<number[], Uint8Array>();

function validate(model: LoadedModel, seqs: ForwardSequence[], layers: number[]): void {
  const c = model.config;
  for (let i = 1; i < layers.length; i++) {
    if (!(layers[i]! > layers[i - 1]!)) throw new BadRequestError('layers', 'must be strictly ascending');
  }
  for (const l of layers) {
    if (!Number.isInteger(l) || l < 0 || l >= c.numLayers) throw new BadRequestError('layers', `no layer ${l}`);
  }
  seqs.forEach((s, i) => {
    const n = s.ids.length;
    if (n === 0) throw new BadRequestError(`seqs[${i}].ids`, 'at least one new token is needed');
    for (const id of s.ids) {
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new BadRequestError(`seqs[${i}].ids`, `token id ${id} is outside the vocabulary`);
    }
    if (s.positions !== undefined && s.positions.length !== n) throw new BadRequestError(`seqs[${i}].positions`, `needs ${n} entries`);
    if (s.treeMask !== undefined) {
      if (s.treeMask.length !== n || s.treeMask.some((row, r) => row.length !== n || row[r] !== true)) {
        throw new BadRequestError(`seqs[${i}].treeMask`, `must be ${n}×${n} with every token seeing itself`);
      }
    }
    let from = -1;
    for (const p of s.prune ?? []) {
      if (p.fromLayer <= from) throw new BadRequestError(`seqs[${i}].prune`, 'fromLayer must increase');
      from = p.fromLayer;
      if (p.keep !== undefined) {
        if (!p.keep.includes(n - 1)) throw new BadRequestError(`seqs[${i}].prune`, 'each keep set must include the last new token');
      } else {
        if (!(Number.isInteger(p.keepTop) && p.keepTop >= 1)) throw new BadRequestError(`seqs[${i}].prune`, 'keepTop must be a positive integer');
        if (!layers.some((l) => l < p.fromLayer)) {
          throw new BadRequestError(`seqs[${i}].prune`, `keepTop at layer ${p.fromLayer} needs a layer run before it to score with`);
        }
      }
    }
    validateResume(c, s, i, layers);
    // Plain loops: an engine step checks every chunk of every layer (~3,800 at 1,024 tokens
    // of context in 16-row blocks), and the closures were ~2 % of such a step; the chunks
    // checked at an earlier call are known (checkedPast).
    const past = s.past ?? [];
    const kvDim = c.numKvHeads * c.headDim;
    for (let l = 0; l < past.length; l++) {
      const layer = past[l];
      if (layer === undefined) continue;
      const { k, v } = layer;
      if (k.length !== v.length) throw new BadRequestError(`seqs[${i}].past[${l}]`, 'k and v need the same chunks');
      const checked = checkedChunks(k, v);
      const same = checked.same;
      const rows = checked.rows.slice(0, same);
      let total = same > 0 ? rows[same - 1]! : 0;
      for (let j = same; j < k.length; j++) {
        const ks = k[j]!.shape;
        const vs = v[j]!.shape;
        if (ks[1] !== kvDim || vs[1] !== kvDim || ks[0] !== vs[0]) throw new BadRequestError(`seqs[${i}].past[${l}]`, `chunk ${j} must be two (n, ${kvDim}) tensors`);
        total += ks[0]!;
        rows.push(total);
      }
      // Copies: callers may change their lists in place.
      if (k.length > 0) checkedPast.set(k[0]!, { k: k.slice(), v: v.slice(), rows });
    }
    if (c.slidingWindow !== null) {
      const total = pastLength(s) + n;
      if (total > c.slidingWindow) {
        throw new NotAvailableError('sliding-window attention', `sequence ${i} has ${total} tokens, the window is ${c.slidingWindow}`);
      }
    }
  });
}

/**
 * Where each past chunk's rows sit in `positions`, and whether they ascend: the block
 * table's do (a block's rows in order, holes left out; revived rows are added sorted), so a
 * resumed row sees a prefix of each chunk, a slice found by bisection; other callers'
 * chunks (a cache that merged revived rows after later ones) are filtered row by row.
 */
function pastChunks(positions: readonly number[], chunks: readonly tf.Tensor2D[]): { at: number; len: number; ascending: boolean }[] {
  let at = 0;
  return chunks.map((c) => {
    const len = c.shape[0];
    let ascending = true;
    for (let i = 1; i < len && ascending; i++) ascending = positions[at + i]! > positions[at + i - 1]!;
    at += len;
    return { at: at - len, len, ascending };
  });
}

/** Rows of an ascending past chunk (positions[at .. at+len)) before position p: a prefix. */
function visiblePrefix(positions: readonly number[], at: number, len: number, p: number): number {
  let lo = 0;
  let hi = len;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (positions[at + mid]! < p) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The resume steps of sequence `i` against its new tokens, past and pastPositions. */
function validateResume(c: LoadedModel['config'], s: ForwardSequence, i: number, layers: number[]): void {
  if (s.resume === undefined || s.resume.length === 0) return;
  const field = `seqs[${i}].resume`;
  const first = Math.min(...(s.positions ?? [pastLength(s)]));
  const pp = s.pastPositions;
  if (pp === undefined || s.past === undefined) throw new BadRequestError(`seqs[${i}].pastPositions`, 'resuming tokens needs the past and the position of each past row');
  s.past.forEach((layer, l) => {
    const rows = chunkRows(layer);
    if ((pp[l]?.length ?? 0) !== rows) throw new BadRequestError(`seqs[${i}].pastPositions/${l}`, `gives ${pp[l]?.length ?? 0} positions for ${rows} past rows`);
  });
  let from = 0;
  s.resume.forEach((step, j) => {
    if (!(Number.isInteger(step.fromLayer) && step.fromLayer > from && step.fromLayer < c.numLayers)) {
      throw new BadRequestError(`${field}/${j}`, `fromLayer ${step.fromLayer} must be in 1..${c.numLayers - 1}, increasing`);
    }
    from = step.fromLayer;
    if (step.hidden.length !== step.positions.length || step.hidden.some((h) => h.length !== c.hiddenSize)) {
      throw new BadRequestError(`${field}/${j}`, `needs one (${c.hiddenSize}) hidden state per position`);
    }
    step.positions.forEach((p, k) => {
      if (!(Number.isInteger(p) && p >= 0 && p < first && (k === 0 || p > step.positions[k - 1]!))) {
        throw new BadRequestError(`${field}/${j}`, `positions must ascend and come before the new tokens (${first}), got ${p}`);
      }
    });
    if (step.select !== undefined) {
      const { rank, max } = step.select;
      if (!(Number.isInteger(rank) && rank >= 1 && Number.isInteger(max) && max >= 0)) throw new BadRequestError(`${field}/${j}`, 'select needs a positive integer rank and a whole max');
      if (!layers.some((l) => l < step.fromLayer)) throw new BadRequestError(`${field}/${j}`, `select at layer ${step.fromLayer} needs a layer run before it to score with`);
    }
  });
}

/**
 * The most rows a forward runs with all its layers in one call (chainLayers): every layer's
 * new K/V rows wait in the kernels' memory until the call returns (46 KB a row for SmolLM2),
 * and that memory never shrinks, so a long prompt in one piece takes a layer at a time (its
 * products dwarf the per-layer dispatch anyway). The engine's prefill chunks are 128 rows.
 */
const CHAIN_MAX_ROWS = 128;

/**
 * Runs one batched forward. Synchronous; all intermediate tensors are freed, only the
 * returned KV tensors survive (the caller owns them).
 */
export function forward(model: LoadedModel, seqs: ForwardSequence[], opts: ForwardCallOptions = {}): ForwardSequenceResult[] {
  const c = model.config;
  const layers = opts.layers ?? Array.from({ length: c.numLayers }, (_, l) => l);
  validate(model, seqs, layers);
  if (seqs.length === 0) return [];
  const prep = prepareModel(model);
  prep.mirror.sweepIfDue();
  const H = c.numHeads;
  const KV = c.numKvHeads;
  const D = c.headDim;

  const states: SeqState[] = seqs.map((seq, index) => {
    const start = pastLength(seq);
    return {
      seq,
      index,
      positions: seq.positions ?? seq.ids.map((_, i) => start + i),
      live: seq.ids.map((_, i) => i),
      pruneDone: 0,
      gone: [],
      prunedHidden: [],
      attention: new Array<tf.Tensor1D | null>(c.numLayers).fill(null),
      scoreAt: new Set([
        ...(seq.prune ?? []).flatMap((p) => (p.keepTop !== undefined ? [Math.max(...layers.filter((l) => l < p.fromLayer))] : [])),
        ...(seq.resume ?? []).flatMap((p) => (p.select !== undefined ? [Math.max(...layers.filter((l) => l < p.fromLayer))] : [])),
      ]),
      attentionLive: [],
      newKv: new Array(c.numLayers).fill(null),
      resumed: [],
      resumeDone: 0,
      resumedLog: [],
      resumedKv: new Array(c.numLayers).fill(null),
    };
  });
  const order = states;

  const outOwner: { s: SeqState; tokenIndices: number[] }[] = [];
  const kept = tidy(() => {
    // Packed rows: every sequence's new tokens, in `order`.
    const allIds = order.flatMap((s) => s.seq.ids);
    const allPos = order.flatMap((s) => s.positions);
    let x = embedTokens(model.weights.embed, allIds); // (T, hidden)
    // Rotary tables for every packed row, shaped to broadcast over heads: (T, 1, D), both
    // halves of a head sharing an angle.
    const half = D / 2;
    // The block path rotates inside its kernel call from the plain tables (rope); the tfjs
    // path multiplies by these tensors (null on the block path: never uploaded there).
    let rope!: { cos: Float32Array; sin: Float32Array }; // each (T, D/2), set by ropeFor
    /** Rotary tables for rows at the given positions, as tensors for the tfjs path (null on the block path). */
    const ropeFor = (positions: number[]): [tf.Tensor3D, tf.Tensor3D] | [null, null] => {
      rope = ropeTables(prep.inv, positions);
      if (prep.blocks !== null) return [null, null];
      const { cos: cRaw, sin: sRaw } = rope;
      const cos2 = new Float32Array(positions.length * D);
      const sin2 = new Float32Array(positions.length * D);
      for (let t = 0; t < positions.length; t++) {
        for (let i = 0; i < half; i++) {
          cos2[t * D + i] = cos2[t * D + half + i] = cRaw[t * half + i]!;
          sin2[t * D + i] = sin2[t * D + half + i] = sRaw[t * half + i]!;
        }
      }
      return [tf.tensor3d(cos2, [positions.length, 1, D]), tf.tensor3d(sin2, [positions.length, 1, D])];
    };
    let [cos, sin] = ropeFor(allPos);
    /** Positions of the packed rows: per state, its resumed rows, then its live new tokens. */
    const packedPositions = () => order.flatMap((s) => [...s.resumed, ...s.live.map((i) => s.positions[i]!)]);

    // Each layer runs in its own scope, so its intermediates are freed when it ends: under
    // one scope for the whole forward, a 512-token SmolLM2-135M prefill held every layer's
    // attention scores at once and grew the wasm heap from 0.5 to 4 GB (its wall).
    if (!chainLayers()) for (const l of layers) tidy(() => runLayer(l));

    /**
     * Every layer in one kernel call (block-layer.ts blockLayers) where nothing needs the
     * layers apart — no sequence prunes, revives or wants attention rows — and the kernels
     * fuse them all; false otherwise (nothing done). The same kernels on the same rows as
     * runLayer's fused branch, so the same bits.
     */
    function chainLayers(): boolean {
      const blocks = prep.blocks;
      if (blocks === null || layers.length === 0 || x.shape[0] > CHAIN_MAX_ROWS) return false;
      for (const s of order) if ((s.seq.prune?.length ?? 0) > 0 || (s.seq.resume?.length ?? 0) > 0 || s.seq.returnAttention === true || s.scoreAt.size > 0) return false;
      const ops = layers.map((l) => {
        const B = blocks.layers[l]!;
        return {
          qkv: B.qkv,
          mlp: B.mlp,
          rotary: { outputs: [0, 1], dim: D, cos: rope.cos, sin: rope.sin },
          shape: { heads: H, kvHeads: KV, headDim: D },
          kernels: prep.kernels,
          mirror: prep.mirror,
          seqs: [] as BlockLayerSeq[],
        };
      });
      if (!ops.every((op) => op.kernels.fusesLayer({ groups: op.qkv.outputs, norm: op.qkv.norm, mlp: op.mlp }))) return false;
      layers.forEach((l, i) => {
        ops[i]!.seqs = order.map((s) => ({
          n: s.live.length,
          keys: prep.mirror.layerChunks(s.seq.past?.[l]?.k ?? [], true),
          values: prep.mirror.layerChunks(s.seq.past?.[l]?.v ?? []),
          visible: visibleAmongNew(s),
        }));
      });
      const r = blockLayers(x, ops);
      if (r === null) return false;
      x = r.x;
      layers.forEach((l, i) => {
        const { k, v, kChunks, vChunks } = r.layers[i]!;
        const ks = order.length === 1 ? [k] : (tf.split(k, order.map((s) => s.live.length), 0) as tf.Tensor2D[]);
        const vs = order.length === 1 ? [v] : (tf.split(v, order.map((s) => s.live.length), 0) as tf.Tensor2D[]);
        order.forEach((s, j) => {
          s.newKv[l] = { k: ks[j]!, v: vs[j]!, tokenIndices: s.live };
          prep.mirror.adopt(ks[j]!, kChunks[j]!);
          prep.mirror.adopt(vs[j]!, vChunks[j]!);
        });
      });
      return true;
    }

    /** One layer over the packed rows; returns the tensors that outlive it. */
    function runLayer(l: number): tf.Tensor[] {
      // LazyLLM pruning: drop rows before the first run layer at or after fromLayer, one
      // step at a time so each step records its own pruned tokens.
      for (;;) {
        let stepped = false;
        let changed = false;
        for (const s of order) {
          const steps = s.seq.prune ?? [];
          s.gone = [];
          if (s.pruneDone < steps.length && steps[s.pruneDone]!.fromLayer <= l) {
            const step = steps[s.pruneDone++]!;
            const keep = new Set(step.keep ?? topByAttention(s, step.keepTop!, Math.max(...layers.filter((p) => p < step.fromLayer))));
            s.gone = s.live.filter((i) => !keep.has(i));
            s.prunedHidden.push({ fromLayer: step.fromLayer, tokenIndices: s.gone, rows: null });
            stepped = true;
            if (s.gone.length > 0) changed = true;
          }
        }
        if (!stepped) break;
        if (!changed) continue;
        // Rows are laid out per state in order: resumed rows (never pruned again), then live tokens ascending.
        let r = 0;
        const keepRows: number[] = [];
        for (const s of order) {
          for (let j = 0; j < s.resumed.length; j++) keepRows.push(r++);
          const gone = new Set(s.gone);
          const goneRows: number[] = [];
          const live: number[] = [];
          for (const i of s.live) {
            if (gone.has(i)) goneRows.push(r);
            else {
              keepRows.push(r);
              live.push(i);
            }
            r++;
          }
          if (s.seq.returnPrunedHidden && goneRows.length > 0) {
            s.prunedHidden[s.prunedHidden.length - 1]!.rows = gatherRows(x, goneRows); // (pruned, hidden)
          }
          s.live = live;
        }
        x = gatherRows(x, keepRows); // (Tlive, hidden)
        [cos, sin] = ropeFor(packedPositions()); // (Tlive, 1, D)
      }
      resumeRows(l);

      const T = x.shape[0];
      const P = prep.layers[l];
      const B = prep.blocks?.layers[l];

      // The whole layer in one kernel call (block-layer.ts) unless a sequence revives rows or
      // wants attention rows here: same kernels on the same inputs, so the same bits.
      // On the block path rotary runs inside the q/k/v call (block-linear.ts RotaryRows: the same bits as ropeQk).
      const rotary = { outputs: [0, 1], dim: D, cos: rope.cos, sin: rope.sin };
      /** A (T, kvDim) tensor of every sequence's rows (resumed, then live) split per sequence. */
      const perSequence = (t: tf.Tensor2D): tf.Tensor2D[] =>
        order.length === 1 ? [t] : (tf.split(t, order.map((s) => s.resumed.length + s.live.length), 0) as tf.Tensor2D[]);
      if (B !== undefined && order.every((s) => s.resumed.length === 0 && !wantsLast(s, l))) {
        const r = blockLayer(x, {
          qkv: B.qkv,
          mlp: B.mlp,
          rotary,
          shape: { heads: H, kvHeads: KV, headDim: D },
          kernels: prep.kernels,
          mirror: prep.mirror,
          seqs: order.map((s) => ({
            n: s.live.length,
            keys: prep.mirror.layerChunks(s.seq.past?.[l]?.k ?? [], true),
            values: prep.mirror.layerChunks(s.seq.past?.[l]?.v ?? []),
            visible: visibleAmongNew(s),
          })),
        });
        x = r.x;
        const ks = perSequence(r.k);
        const vs = perSequence(r.v);
        order.forEach((s, i) => {
          s.newKv[l] = { k: ks[i]!, v: vs[i]!, tokenIndices: s.live };
          prep.mirror.adopt(ks[i]!, r.kChunks[i]!);
          prep.mirror.adopt(vs[i]!, r.vChunks[i]!);
        });
        return [x, ...order.flatMap((s) => [s.newKv[l]!.k, s.newKv[l]!.v]), ...order.flatMap((s) => s.prunedHidden.flatMap((p) => (p.rows ? [p.rows] : [])))];
      }

      // Attention block. Norm weight and query scale live in wqk/wv (or in the block op).
      let q: tf.Tensor2D; // (T, qDim)
      let k: tf.Tensor2D; // (T, kvDim)
      let v: tf.Tensor2D; // (T, kvDim)
      if (B !== undefined) {
        [q, k, v] = blockLinear(x, B.qkv, rotary) as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
      } else {
        const xn = rmsNorm(x, c.rmsNormEps, prep.eps); // (T, hidden)
        const qkRaw = P!.bqk === null ? tf.matMul(xn, P!.wqk) : tf.add(tf.matMul(xn, P!.wqk), P!.bqk);
        v = P!.bv === null ? tf.matMul(xn, P!.wv) : tf.add(tf.matMul(xn, P!.wv), P!.bv);
        // Rotary on queries and keys together; rotate_half is a matMul by a signed permutation
        // on the composite path (the wasm Reverse and strided slices are far slower).
        [q, k] = ropeQk(qkRaw as tf.Tensor2D, cos!, sin!, { heads: H, kvHeads: KV, dim: D }, prep.rotateHalf); // (T, qDim), (T, kvDim)
      }

      // New KV, per sequence: returned to the caller and the keys the attention reads.
      const ks = perSequence(k);
      const vs = perSequence(v);
      order.forEach((s, i) => {
        const m = s.resumed.length;
        if (m === 0) {
          s.newKv[l] = { k: ks[i]!, v: vs[i]!, tokenIndices: s.live };
          return;
        }
        const [kr, kn] = tf.split(ks[i]!, [m, s.live.length], 0) as tf.Tensor2D[];
        const [vr, vn] = tf.split(vs[i]!, [m, s.live.length], 0) as tf.Tensor2D[];
        s.newKv[l] = { k: kn!, v: vn!, tokenIndices: s.live };
        s.resumedKv[l] = { k: kr!, v: vr!, positions: s.resumed.slice() };
      });

      let row = 0;
      const parts = order.flatMap((s) => {
        const m = s.resumed.length;
        const out = [...resumedAttention(s, l, q, row), attention(s, l, q, row + m, s.live.length)];
        row += m + s.live.length;
        return out;
      });
      const attn = parts.length === 1 ? parts[0]! : (tf.concat(parts, 0) as tf.Tensor2D); // (T, qDim)

      if (B !== undefined) {
        x = blockMlp(attn, x, B.mlp); // (T, hidden): o-proj, residual, norm, MLP, residual in one
      } else {
        const o = tf.matMul(attn, P!.wo); // (T, hidden)
        x = tf.add(x, P!.bo === null ? o : tf.add(o, P!.bo));
        // MLP block: down(silu(gate) · up); norm weight lives in wg/wu.
        const xn2 = rmsNorm(x, c.rmsNormEps, prep.eps); // (T, hidden)
        const g = tf.matMul(xn2, P!.wg) as tf.Tensor2D; // (T, inter)
        const u = tf.matMul(xn2, P!.wu) as tf.Tensor2D; // (T, inter)
        x = tf.add(x, tf.matMul(swiGlu(g, u), P!.wd)); // (T, hidden)
      }
      return [
        x,
        ...(cos !== null && sin !== null ? [cos, sin] : []),
        ...order.flatMap((s) => [s.newKv[l]!.k, s.newKv[l]!.v, ...(s.attention[l] ? [s.attention[l]!] : [])]),
        ...order.flatMap((s) => (s.resumedKv[l] ? [s.resumedKv[l]!.k, s.resumedKv[l]!.v] : [])),
        ...order.flatMap((s) => s.prunedHidden.flatMap((p) => (p.rows ? [p.rows] : []))),
      ];
    }

    // Final norm over the rows that want logits or hidden states; lm head over those that want logits.
    const outRows: number[] = [];
    // Indices into outRows of the rows the lm head runs on (hiddenOnly sequences' rows are not among them).
    const headRows: number[] = [];
    {
      let r = 0;
      for (const s of order) {
        const mode = s.seq.hiddenOnly ? 'all' : (s.seq.logits ?? 'last');
        const want = mode === 'all' ? s.live : mode === 'last' ? [s.live[s.live.length - 1]!] : [];
        r += s.resumed.length; // resumed rows give no logits
        const first = mode === 'all' ? r : r + s.live.length - 1;
        for (let j = 0; j < want.length; j++) {
          if (!s.seq.hiddenOnly) headRows.push(outRows.length);
          outRows.push(first + j);
        }
        outOwner.push({ s, tokenIndices: want });
        r += s.live.length;
      }
    }
    let logits: tf.Tensor2D | null = null;
    let hidden: tf.Tensor2D | null = null;
    if (outRows.length > 0) {
      const sel = outRows.length === x.shape[0] ? x : gatherRows(x, outRows); // (R, hidden)
      const normed = tf.mul(rmsNorm(sel, c.rmsNormEps, prep.eps), model.weights.finalNorm) as tf.Tensor2D; // (R, hidden)
      if (headRows.length > 0) {
        const head = headRows.length === outRows.length ? normed : gatherRows(normed, headRows); // (H, hidden)
        logits = prep.blocks !== null ? blockLinear(head, prep.blocks.lmHead)[0]! : (tf.matMul(head, model.weights.lmHead) as tf.Tensor2D); // (H, vocab)
      }
      if (order.some((s) => s.seq.returnHidden || s.seq.hiddenOnly)) hidden = normed;
    }
    const kv = order.flatMap((s) => [...s.newKv, ...s.resumedKv].flatMap((e) => (e ? [e.k, e.v] : [])));
    const extra = order.flatMap((s) => [
      ...s.attention.filter((a): a is tf.Tensor1D => a !== null),
      ...s.prunedHidden.flatMap((p) => (p.rows ? [p.rows] : [])),
    ]);
    return { logits, hidden, kv, extra };

    /**
     * One sequence's attention for its live new rows over its cached, resumed and new keys,
     * on the exact kernel (exact-attention.ts): every cached and resumed key, causal among
     * the new rows, or the tree mask of a verification.
     */
    /** (n, n) over a sequence's live new tokens: row a sees b under its tree mask, else causally. */
    function visibleAmongNew(s: SeqState): Uint8Array {
      const known = visibleByLive.get(s.live);
      if (known !== undefined) return known;
      const n = s.live.length;
      const visible = new Uint8Array(n * n);
      visibleByLive.set(s.live, visible);
      const tree = s.seq.treeMask;
      for (let a = 0; a < n; a++) {
        for (let b = 0; b < n; b++) {
          const i = s.live[a]!;
          const j = s.live[b]!;
          if (tree ? tree[i]![j]! : j <= i) visible[a * n + b] = 1;
        }
      }
      return visible;
    }

    /** Whether a sequence wants its last row's attention at layer l (returned, or scored by LazyLLM). */
    function wantsLast(s: SeqState, l: number): boolean {
      return s.seq.returnAttention === true || s.scoreAt.has(l);
    }

    function attention(s: SeqState, l: number, q: tf.Tensor2D, row: number, n: number): tf.Tensor2D {
      const past = s.seq.past?.[l];
      const own = s.newKv[l]!;
      const res = s.resumedKv[l];
      const wantLast = wantsLast(s, l);
      const [out, last] = exactAttention(q, {
        row,
        n,
        keys: [...(past?.k ?? []), ...(res ? [res.k] : []), own.k],
        values: [...(past?.v ?? []), ...(res ? [res.v] : []), own.v],
        visible: visibleAmongNew(s),
        shape: { heads: H, kvHeads: KV, headDim: D },
        kernels: prep.kernels,
        mirror: prep.mirror,
        wantLast,
      });
      if (last !== null) {
        s.attention[l] = last;
        s.attentionLive[l] = s.live;
      }
      return out;
    }

    /**
     * LazyLLM's choice for a keepTop step: the live new tokens the last one attended to most
     * at `layer` (mean over heads), the last always kept, ties to the earlier token. One
     * small read-back per pruning step is the price of deciding inside the same forward.
     */
    function topByAttention(s: SeqState, count: number, layer: number): number[] {
      if (s.live.length <= count) return s.live;
      const att = s.attention[layer]!.dataSync(); // (past + live at that layer)
      const covered = s.attentionLive[layer]!;
      const past = att.length - covered.length;
      const score = new Map(covered.map((i, a) => [i, att[past + a]!]));
      const last = s.live.at(-1)!;
      const rest = s.live.slice(0, -1).sort((a, b) => score.get(b)! - score.get(a)! || a - b);
      return [...rest.slice(0, count - 1), last];
    }

    /**
     * Revival before layer l: each sequence's resume steps due here bring their chosen
     * tokens into the packing as extra rows (hidden states from the Aux Cache), merged by
     * position with rows resumed at earlier layers of this call.
     */
    function resumeRows(l: number): void {
      const added: Float32Array[] = [];
      const rows: number[] = []; // into [x; added]
      const T0 = x.shape[0];
      let r = 0;
      for (const s of order) {
        const steps = s.seq.resume ?? [];
        const fresh: { p: number; src: number }[] = [];
        while (s.resumeDone < steps.length && steps[s.resumeDone]!.fromLayer <= l) {
          const step = steps[s.resumeDone++]!;
          const pick = step.select === undefined ? step.positions.map((_, j) => j) : selectResumed(s, step, Math.max(...layers.filter((p) => p < step.fromLayer)));
          s.resumedLog.push({ fromLayer: step.fromLayer, positions: pick.map((j) => step.positions[j]!) });
          for (const j of pick) fresh.push({ p: step.positions[j]!, src: T0 + added.push(step.hidden[j]!) - 1 });
        }
        const merged = [...s.resumed.map((p, j) => ({ p, src: r + j })), ...fresh].sort((a, b) => a.p - b.p);
        r += s.resumed.length;
        s.resumed = merged.map((e) => e.p);
        for (const e of merged) rows.push(e.src);
        for (let j = 0; j < s.live.length; j++) rows.push(r++);
      }
      if (added.length === 0) return;
      const flat = new Float32Array(added.length * c.hiddenSize);
      added.forEach((h, j) => flat.set(h, j * c.hiddenSize));
      x = gatherRows(tf.concat([x, tf.tensor2d(flat, [added.length, c.hiddenSize])], 0) as tf.Tensor2D, rows); // (T + resumed, hidden)
      [cos, sin] = ropeFor(packedPositions());
    }

    /**
     * A resume step's choice: the parked tokens the last new token attends to among its
     * `rank` most attended keys at `layer` (every key it saw there, ties to the earlier
     * row), best first, at most `max`; returned as indices into the step, ascending.
     */
    function selectResumed(s: SeqState, step: ResumeStep, layer: number): number[] {
      const att = s.attention[layer]!.dataSync(); // (past + resumed + live at that layer)
      const ranked = Array.from(att.keys()).sort((a, b) => att[b]! - att[a]! || a - b);
      const top = new Set(ranked.slice(0, step.select!.rank));
      const rowOf = new Map(s.seq.pastPositions![layer]!.map((p, row) => [p, row]));
      const chosen = step.positions.flatMap((p, j) => {
        const row = rowOf.get(p);
        return row !== undefined && top.has(row) ? [{ j, score: att[row]! }] : [];
      });
      chosen.sort((a, b) => b.score - a.score || a.j - b.j);
      return chosen
        .slice(0, step.select!.max)
        .map((e) => e.j)
        .sort((a, b) => a - b);
    }

    /**
     * The resumed rows' attention, one row at a time: each sees the past rows before its
     * position at this layer and the resumed rows up to itself, never the new tokens (they
     * come after it). Few rows per step (the revival budget), so one kernel call each.
     */
    function resumedAttention(s: SeqState, l: number, q: tf.Tensor2D, row: number): tf.Tensor2D[] {
      const res = s.resumedKv[l];
      if (res === null) return [];
      const past = s.seq.past?.[l];
      const positions = s.seq.pastPositions![l]!;
      const chunks = pastChunks(positions, past?.k ?? []);
      return res.positions.map((p, j) => {
        const keys: tf.Tensor2D[] = [];
        const values: tf.Tensor2D[] = [];
        chunks.forEach(({ at, len, ascending }, ci) => {
          const kc = past!.k[ci]!;
          const vc = past!.v[ci]!;
          if (!ascending) {
            const seen = Array.from({ length: len }, (_, i) => i).filter((i) => positions[at + i]! < p);
            if (seen.length === 0) return;
            keys.push(gatherRows(kc, seen));
            values.push(gatherRows(vc, seen));
            return;
          }
          const seen = visiblePrefix(positions, at, len, p);
          if (seen === 0) return;
          keys.push(seen === len ? kc : tf.slice(kc, [0, 0], [seen, kc.shape[1]]));
          values.push(seen === len ? vc : tf.slice(vc, [0, 0], [seen, vc.shape[1]]));
        });
        keys.push(tf.slice(res.k, [0, 0], [j + 1, res.k.shape[1]]));
        values.push(tf.slice(res.v, [0, 0], [j + 1, res.v.shape[1]]));
        const [out] = exactAttention(q, {
          row: row + j,
          n: 1,
          keys,
          values,
          visible: Uint8Array.of(1),
          shape: { heads: H, kvHeads: KV, headDim: D },
          kernels: prep.kernels,
          mirror: prep.mirror,
          wantLast: false,
        });
        return out;
      });
    }
  });

  // Read everything back once, then free all but the KV.
  const results: ForwardSequenceResult[] = new Array(seqs.length);
  const vocab = c.vocabSize;
  const logitData = kept.logits ? (kept.logits.dataSync() as Float32Array) : null;
  const hiddenData = kept.hidden ? (kept.hidden.dataSync() as Float32Array) : null;
  let r = 0;
  // The lm head's rows skip hiddenOnly sequences, so they are counted apart.
  let h = 0;
  // Rows are views of the two read-back arrays (dataSync's copies, ours alone): copying
  // them again cost a 196 KB allocation per SmolLM2 decode step, and the garbage
  // collections that outside memory brings on (~5 % of an engine step).
  for (const { s, tokenIndices } of outOwner) {
    const logits: Float32Array[] = [];
    const hidden: Float32Array[] = [];
    const wantsHidden = s.seq.returnHidden === true || s.seq.hiddenOnly === true;
    for (let j = 0; j < tokenIndices.length; j++, r++) {
      if (!s.seq.hiddenOnly) {
        logits.push(logitData!.subarray(h * vocab, (h + 1) * vocab));
        h++;
      }
      if (wantsHidden) hidden.push(hiddenData!.subarray(r * c.hiddenSize, (r + 1) * c.hiddenSize));
    }
    const res: ForwardSequenceResult = { logits, newKv: s.newKv, logitTokenIndices: tokenIndices };
    if (s.seq.resume !== undefined) {
      res.resumed = s.resumedLog;
      res.resumedKv = s.resumedKv;
    }
    if (wantsHidden) res.hidden = hidden;
    if (s.seq.returnAttention) res.attention = s.attention.map((a) => (a ? (a.dataSync() as Float32Array).slice() : null));
    if (s.seq.returnPrunedHidden) {
      res.prunedHidden = s.prunedHidden.map((p) => {
        const data = p.rows ? (p.rows.dataSync() as Float32Array) : new Float32Array(0);
        const h = c.hiddenSize;
        return { fromLayer: p.fromLayer, tokenIndices: p.tokenIndices, hidden: p.tokenIndices.map((_, i) => data.slice(i * h, (i + 1) * h)) };
      });
    }
    results[s.index] = res;
  }
  tf.dispose([...(kept.logits ? [kept.logits] : []), ...(kept.hidden ? [kept.hidden] : []), ...kept.extra]);
  return results;
}

/**
 * The model's LM head on rows that are already final-normed hidden states, (R, hidden) →
 * (R, vocab), on the same path the forward takes (block kernels or the f32 matrix):
 * speculative heads (runtime/heads) project their outputs through it.
 */
export function lmHeadLogits(model: LoadedModel, normed: tf.Tensor2D): tf.Tensor2D {
  const prep = prepareModel(model);
  return prep.blocks !== null ? blockLinear(normed, prep.blocks.lmHead)[0]! : (tf.matMul(normed, model.weights.lmHead) as tf.Tensor2D);
}
