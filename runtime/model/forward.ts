/**
 * The optimised forward: one synchronous call runs every sequence of a batch through the
 * model. All sequences' live new tokens are packed into one (T, hidden) matrix, so each
 * dense op (norms, projections, MLP) runs once per layer for the whole batch; attention
 * runs per sequence, except that single-token sequences (decode steps) are batched
 * together over a padded key matrix built with one gather.
 *
 * Prepared weights (cached per model, disposed with it): q/k/v fused into one matrix and
 * gate/up into another, the RMSNorm weights folded into the matrices that follow them and
 * 1/sqrt(headDim) folded into the query columns. At batch 1 the wasm backend spends about
 * as long on per-op overhead as on reading weights, so fewer ops per layer is the point.
 *
 * @example
 * const [r] = forward(model, [{ ids: [1, 2, 3], logits: 'last' }]);
 * // r.logits[0]: Float32Array(vocab); r.newKv[l].k: (3, kvDim) — dispose the KV when done
 */
import * as tf from '@tensorflow/tfjs-core';
import { BadRequestError, NotAvailableError } from '../../core/errors.js';
import { inverseFrequencies, ropeTables } from './rope.js';
import type { ForwardCallOptions, ForwardSequence, ForwardSequenceResult, LoadedModel } from './types.js';

interface PreparedLayer {
  wqkv: tf.Tensor2D; // (hidden, (heads + 2·kvHeads)·headDim): [q·scale | k | v], input norm folded in
  bqkv: tf.Tensor1D | null; // ((heads + 2·kvHeads)·headDim)
  wo: tf.Tensor2D; // (heads·headDim, hidden)
  bo: tf.Tensor1D | null; // (hidden)
  wgu: tf.Tensor2D; // (hidden, 2·inter): [gate | up], post-attention norm folded in
  wd: tf.Tensor2D; // (inter, hidden)
}

interface Prepared {
  layers: PreparedLayer[];
  inv: Float64Array; // (headDim/2) rotary inverse frequencies
  dispose(): void;
}

const prepared = new WeakMap<LoadedModel, Prepared>();

/** tf.tidy typed for results holding nulls and plain fields (tidy ignores non-tensors). */
function tidy<T>(fn: () => T): T {
  return tf.tidy(fn as () => tf.TensorContainer) as T;
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
  const layers = model.weights.layers.map((L) =>
    tidy(() => {
      const n1 = tf.reshape(L.inputNorm, [c.hiddenSize, 1]); // (hidden, 1): scales rows of W
      const n2 = tf.reshape(L.postNorm, [c.hiddenSize, 1]);
      const wqkv = tf.concat([tf.mul(L.wq, tf.mul(n1, scale)), tf.mul(L.wk, n1), tf.mul(L.wv, n1)], 1) as tf.Tensor2D;
      const bqkv =
        L.bq !== null && L.bk !== null && L.bv !== null
          ? (tf.concat([tf.mul(L.bq, scale), L.bk, L.bv]) as tf.Tensor1D)
          : null;
      const wgu = tf.concat([tf.mul(L.wGate, n2), tf.mul(L.wUp, n2)], 1) as tf.Tensor2D;
      // wo, bo, wd are used as they are; clone so the prepared set owns all it holds.
      return { wqkv, bqkv, wo: tf.clone(L.wo), bo: L.bo === null ? null : tf.clone(L.bo), wgu, wd: tf.clone(L.wDown) };
    }),
  );
  const p: Prepared = {
    layers,
    inv: inverseFrequencies(c),
    dispose() {
      for (const l of layers) tf.dispose([l.wqkv, l.wo, l.wgu, l.wd, ...(l.bqkv ? [l.bqkv] : []), ...(l.bo ? [l.bo] : [])]);
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

/** Disposes the prepared weights of a model (they are rebuilt on the next forward). */
export function releasePrepared(model: LoadedModel): void {
  prepared.get(model)?.dispose();
}

/** Total tokens in a past chunk list. */
function chunkRows(chunks: tf.Tensor2D[] | undefined): number {
  let n = 0;
  for (const t of chunks ?? []) n += t.shape[0];
  return n;
}

/** Cached token count of a sequence: the longest past over layers (pruned/skipped layers hold fewer). */
export function pastLength(seq: ForwardSequence): number {
  let n = 0;
  for (const layer of seq.past ?? []) if (layer !== undefined) n = Math.max(n, chunkRows(layer.k));
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
  newKv: ({ k: tf.Tensor2D; v: tf.Tensor2D; tokenIndices: number[] } | null)[];
}

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
      if (!p.keep.includes(n - 1)) throw new BadRequestError(`seqs[${i}].prune`, 'each keep set must include the last new token');
    }
    if (c.slidingWindow !== null) {
      const total = pastLength(s) + n;
      if (total > c.slidingWindow) {
        throw new NotAvailableError('sliding-window attention', `sequence ${i} has ${total} tokens, the window is ${c.slidingWindow}`);
      }
    }
  });
}

/** Additive mask: 0 where visible, a large negative number where not. */
const NEG = -1e9;

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
  const H = c.numHeads;
  const KV = c.numKvHeads;
  const D = c.headDim;
  const G = H / KV; // query heads per kv head
  const qDim = H * D;
  const kvDim = KV * D;
  const eps = c.rmsNormEps;

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
      newKv: new Array(c.numLayers).fill(null),
    };
  });
  // Single-token sequences go first and share one padded attention; the rest run alone.
  const single = states.filter((s) => s.seq.ids.length === 1);
  const batchedCount = single.length >= 2 ? single.length : 0;
  const order = batchedCount > 0 ? [...single, ...states.filter((s) => s.seq.ids.length !== 1)] : states;

  const outOwner: { s: SeqState; tokenIndices: number[] }[] = [];
  const kept = tidy(() => {
    // Packed rows: every sequence's new tokens, in `order`.
    const allIds = order.flatMap((s) => s.seq.ids);
    const allPos = order.flatMap((s) => s.positions);
    let x = tf.gather(model.weights.embed, tf.tensor1d(allIds, 'int32')) as tf.Tensor2D; // (T, hidden)
    // Rotary tables for every packed row, shaped to broadcast over heads: (T, 1, 2, D/2).
    // The rotate_half sign is folded into sin: [x1, x2]·cos + [x2, x1]·[-sin, sin].
    const { cos: cRaw, sin: sRaw } = ropeTables(prep.inv, allPos);
    const T0 = allIds.length;
    const half = D / 2;
    const cos2 = new Float32Array(T0 * D);
    const sin2 = new Float32Array(T0 * D);
    for (let t = 0; t < T0; t++) {
      for (let i = 0; i < half; i++) {
        const cv = cRaw[t * half + i]!;
        const sv = sRaw[t * half + i]!;
        cos2[t * D + i] = cv;
        cos2[t * D + half + i] = cv;
        sin2[t * D + i] = -sv;
        sin2[t * D + half + i] = sv;
      }
    }
    const cosAll = tf.tensor4d(cos2, [T0, 1, 2, half]);
    const sinAll = tf.tensor4d(sin2, [T0, 1, 2, half]);
    let cos = cosAll;
    let sin = sinAll;
    // Packed row (in the original packing) of each state's token i.
    const rowBase = new Map<SeqState, number>();
    {
      let r = 0;
      for (const s of order) {
        rowBase.set(s, r);
        r += s.seq.ids.length;
      }
    }
    const masks = new Map<string, tf.Tensor>();
    const idxCache = new Map<string, tf.Tensor1D>();

    for (const l of layers) {
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
            const keep = new Set(step.keep);
            s.gone = s.live.filter((i) => !keep.has(i));
            s.prunedHidden.push({ fromLayer: step.fromLayer, tokenIndices: s.gone, rows: null });
            stepped = true;
            if (s.gone.length > 0) changed = true;
          }
        }
        if (!stepped) break;
        if (!changed) continue;
        // Rows are laid out per state in order, live tokens ascending.
        let r = 0;
        const keepRows: number[] = [];
        const origRows: number[] = [];
        for (const s of order) {
          const gone = new Set(s.gone);
          const goneRows: number[] = [];
          const live: number[] = [];
          for (const i of s.live) {
            if (gone.has(i)) goneRows.push(r);
            else {
              keepRows.push(r);
              origRows.push(rowBase.get(s)! + i);
              live.push(i);
            }
            r++;
          }
          if (s.seq.returnPrunedHidden && goneRows.length > 0) {
            s.prunedHidden[s.prunedHidden.length - 1]!.rows = tf.gather(x, tf.tensor1d(goneRows, 'int32')) as tf.Tensor2D; // (pruned, hidden)
          }
          s.live = live;
        }
        x = tf.gather(x, tf.tensor1d(keepRows, 'int32')) as tf.Tensor2D; // (Tlive, hidden)
        const orig = tf.tensor1d(origRows, 'int32');
        cos = tf.gather(cosAll, orig); // (Tlive, 1, 2, D/2)
        sin = tf.gather(sinAll, orig);
      }

      const T = x.shape[0];
      const P = prep.layers[l]!;

      // Attention block. Norm weight and query scale live in wqkv.
      const xn = tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))); // (T, hidden)
      const qkv = tf.fused.matMul({ a: xn, b: P.wqkv, bias: P.bqkv ?? undefined }); // (T, qDim + 2·kvDim)
      const [qkRaw, v] = tf.split(qkv, [qDim + kvDim, kvDim], 1) as [tf.Tensor2D, tf.Tensor2D]; // (T, qDim+kvDim), (T, kvDim)
      const qk4 = tf.reshape(qkRaw, [T, H + KV, 2, half]); // (T, heads+kvHeads, 2, D/2)
      const qkRot = tf.add(tf.mul(qk4, cos), tf.mul(tf.reverse(qk4, 2), sin)); // (T, heads+kvHeads, 2, D/2)
      const [q, k] = tf.split(tf.reshape(qkRot, [T, qDim + kvDim]), [qDim, kvDim], 1) as [tf.Tensor2D, tf.Tensor2D];

      const parts: tf.Tensor2D[] = [];
      let row = 0;
      if (batchedCount > 0) {
        parts.push(batchedAttention(order.slice(0, batchedCount), l, q, k, v, row));
        row += batchedCount;
      }
      for (const s of order.slice(batchedCount)) {
        const n = s.live.length;
        parts.push(sequenceAttention(s, l, q, k, v, row, n, T));
        row += n;
      }
      const attn = parts.length === 1 ? parts[0]! : (tf.concat(parts, 0) as tf.Tensor2D); // (T, qDim)

      // New KV, per sequence, for the caller.
      if (order.length === 1) {
        order[0]!.newKv[l] = { k, v, tokenIndices: order[0]!.live };
      } else {
        const sizes = order.map((s) => s.live.length);
        const ks = tf.split(k, sizes, 0) as tf.Tensor2D[];
        const vs = tf.split(v, sizes, 0) as tf.Tensor2D[];
        order.forEach((s, i) => (s.newKv[l] = { k: ks[i]!, v: vs[i]!, tokenIndices: s.live }));
      }

      x = tf.add(x, tf.fused.matMul({ a: attn, b: P.wo, bias: P.bo ?? undefined })); // (T, hidden)

      // MLP block: down(silu(gate) · up); norm weight lives in wgu.
      const xn2 = tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))); // (T, hidden)
      const gu = tf.matMul(xn2, P.wgu); // (T, 2·inter)
      const [g, u] = tf.split(gu, 2, 1); // each (T, inter)
      x = tf.add(x, tf.matMul(tf.mul(tf.mul(g, tf.sigmoid(g)), u), P.wd)); // (T, hidden)
    }

    // Final norm and lm head over the rows that want logits (or hidden).
    const outRows: number[] = [];
    {
      let r = 0;
      for (const s of order) {
        const mode = s.seq.logits ?? 'last';
        const want = mode === 'all' ? s.live : mode === 'last' ? [s.live[s.live.length - 1]!] : [];
        const first = mode === 'all' ? r : r + s.live.length - 1;
        for (let j = 0; j < want.length; j++) outRows.push(first + j);
        outOwner.push({ s, tokenIndices: want });
        r += s.live.length;
      }
    }
    let logits: tf.Tensor2D | null = null;
    let hidden: tf.Tensor2D | null = null;
    if (outRows.length > 0) {
      const sel = outRows.length === x.shape[0] ? x : (tf.gather(x, tf.tensor1d(outRows, 'int32')) as tf.Tensor2D); // (R, hidden)
      const normed = tf.mul(tf.mul(sel, tf.rsqrt(tf.add(tf.mean(tf.square(sel), -1, true), eps))), model.weights.finalNorm) as tf.Tensor2D; // (R, hidden)
      logits = tf.matMul(normed, model.weights.lmHead) as tf.Tensor2D; // (R, vocab)
      if (order.some((s) => s.seq.returnHidden)) hidden = normed;
    }
    const kv = order.flatMap((s) => s.newKv.flatMap((e) => (e ? [e.k, e.v] : [])));
    const extra = order.flatMap((s) => [
      ...s.attention.filter((a): a is tf.Tensor1D => a !== null),
      ...s.prunedHidden.flatMap((p) => (p.rows ? [p.rows] : [])),
    ]);
    return { logits, hidden, kv, extra };

    function sequenceAttention(s: SeqState, l: number, q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, row: number, n: number, T: number): tf.Tensor2D {
      const whole = row === 0 && n === T;
      const qs = whole ? q : tf.slice(q, [row, 0], [n, qDim]); // (n, qDim)
      const ks = whole ? k : tf.slice(k, [row, 0], [n, kvDim]); // (n, kvDim)
      const vs = whole ? v : tf.slice(v, [row, 0], [n, kvDim]);
      const past = s.seq.past?.[l];
      const pk = past?.k ?? [];
      const P = chunkRows(pk);
      const S = P + n;
      const K = pk.length > 0 ? (tf.concat([...pk, ks], 0) as tf.Tensor2D) : ks; // (S, kvDim)
      const V = pk.length > 0 ? (tf.concat([...(past?.v ?? []), vs], 0) as tf.Tensor2D) : vs; // (S, kvDim)
      const KT = tf.transpose(tf.reshape(K, [S, KV, D]), [1, 2, 0]) as tf.Tensor3D; // (KV, D, S)
      const V3 = tf.transpose(tf.reshape(V, [S, KV, D]), [1, 0, 2]); // (KV, S, D)
      const q3 =
        n === 1 ? tf.reshape(qs, [KV, G, D]) : tf.reshape(tf.transpose(tf.reshape(qs, [n, KV, G, D]), [1, 2, 0, 3]), [KV, G * n, D]); // (KV, G·n, D)
      let scores = tf.matMul(q3, KT); // (KV, G·n, S)
      if (n > 1) {
        const key = `s${s.index}:${P}:${s.live.join(',')}`;
        let mask = masks.get(key);
        if (mask === undefined) {
          const m = new Float32Array(n * S);
          const tree = s.seq.treeMask;
          for (let a = 0; a < n; a++) {
            for (let b = 0; b < n; b++) {
              const i = s.live[a]!;
              const j = s.live[b]!;
              const visible = tree ? tree[i]![j]! : j <= i;
              if (!visible) m[a * S + P + b] = NEG;
            }
          }
          mask = tf.tensor2d(m, [n, S]);
          masks.set(key, mask);
        }
        scores = tf.reshape(tf.add(tf.reshape(scores, [KV, G, n, S]), mask), [KV, G * n, S]);
      }
      const probs = tf.softmax(scores); // (KV, G·n, S)
      if (s.seq.returnAttention) {
        const lastRow = n === 1 ? probs : tf.slice(tf.reshape(probs, [KV, G, n, S]), [0, 0, n - 1, 0], [KV, G, 1, S]);
        s.attention[l] = tf.reshape(tf.mean(lastRow, n === 1 ? [0, 1] : [0, 1, 2]), [S]) as tf.Tensor1D;
      }
      const out = tf.matMul(probs, V3); // (KV, G·n, D)
      return n === 1 ? tf.reshape(out, [1, qDim]) : tf.reshape(tf.transpose(tf.reshape(out, [KV, G, n, D]), [2, 0, 1, 3]), [n, qDim]); // (n, qDim)
    }

    function batchedAttention(group: SeqState[], l: number, q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, row: number): tf.Tensor2D {
      const B = group.length;
      const whole = row === 0 && B === q.shape[0];
      const qg = whole ? q : tf.slice(q, [row, 0], [B, qDim]); // (B, qDim)
      const kg = whole ? k : tf.slice(k, [row, 0], [B, kvDim]); // (B, kvDim)
      const vg = whole ? v : tf.slice(v, [row, 0], [B, kvDim]);
      const pasts = group.map((s) => s.seq.past?.[l]);
      const lens = pasts.map((p) => chunkRows(p?.k));
      const Smax = Math.max(...lens) + 1;
      // Rows of concat([pasts..., new]) that fill each sequence's padded key slots.
      const key = `b:${lens.join(',')}`;
      let idx = idxCache.get(key);
      let mask = masks.get(key);
      if (idx === undefined || mask === undefined) {
        const ix = new Int32Array(B * Smax);
        const m = new Float32Array(B * Smax);
        const total = lens.reduce((a, b) => a + b, 0);
        let off = 0;
        for (let b = 0; b < B; b++) {
          for (let j = 0; j < Smax; j++) {
            if (j < lens[b]!) ix[b * Smax + j] = off + j;
            else if (j === lens[b]!) ix[b * Smax + j] = total + b;
            else m[b * Smax + j] = NEG;
          }
          off += lens[b]!;
        }
        idx = tf.tensor1d(ix, 'int32');
        mask = tf.tensor4d(m, [B, 1, 1, Smax]);
        idxCache.set(key, idx);
        masks.set(key, mask);
      }
      const kAll = tf.concat([...pasts.flatMap((p) => p?.k ?? []), kg], 0); // (Σpast + B, kvDim)
      const vAll = tf.concat([...pasts.flatMap((p) => p?.v ?? []), vg], 0);
      const KT = tf.transpose(tf.reshape(tf.gather(kAll, idx), [B, Smax, KV, D]), [0, 2, 3, 1]); // (B, KV, D, Smax)
      const V4 = tf.transpose(tf.reshape(tf.gather(vAll, idx), [B, Smax, KV, D]), [0, 2, 1, 3]); // (B, KV, Smax, D)
      const scores = tf.add(tf.matMul(tf.reshape(qg, [B, KV, G, D]), KT), mask); // (B, KV, G, Smax)
      const probs = tf.softmax(scores); // (B, KV, G, Smax)
      if (group.some((s) => s.seq.returnAttention)) {
        const mean = tf.mean(probs, [1, 2]) as tf.Tensor2D; // (B, Smax)
        group.forEach((s, b) => {
          if (s.seq.returnAttention) s.attention[l] = tf.reshape(tf.slice(mean, [b, 0], [1, lens[b]! + 1]), [lens[b]! + 1]) as tf.Tensor1D;
        });
      }
      return tf.reshape(tf.matMul(probs, V4), [B, qDim]) as tf.Tensor2D; // (B, qDim)
    }
  });

  // Read everything back once, then free all but the KV.
  const results: ForwardSequenceResult[] = new Array(seqs.length);
  const vocab = c.vocabSize;
  const logitData = kept.logits ? (kept.logits.dataSync() as Float32Array) : null;
  const hiddenData = kept.hidden ? (kept.hidden.dataSync() as Float32Array) : null;
  let r = 0;
  for (const { s, tokenIndices } of outOwner) {
    const logits: Float32Array[] = [];
    const hidden: Float32Array[] = [];
    for (let j = 0; j < tokenIndices.length; j++, r++) {
      logits.push(logitData!.slice(r * vocab, (r + 1) * vocab));
      if (s.seq.returnHidden) hidden.push(hiddenData!.slice(r * c.hiddenSize, (r + 1) * c.hiddenSize));
    }
    const res: ForwardSequenceResult = { logits, newKv: s.newKv, logitTokenIndices: tokenIndices };
    if (s.seq.returnHidden) res.hidden = hidden;
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
