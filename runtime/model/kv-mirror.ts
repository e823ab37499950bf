/**
 * The KV cache's chunks as the attention kernel reads them: each K or V chunk (a tfjs
 * tensor a KV block holds, runtime/kv/block.ts) is copied once into the wasm kernels'
 * memory and read there in place by every later step, instead of every chunk being copied
 * again by every layer of every step. That copy grew with the context: on SmolLM2 at ~250
 * tokens the per-step copies and their JavaScript were a quarter of a decode step, and
 * they are what made a step at 1,024 tokens of context cost far more than one at 128.
 *
 * tfjs tensors are immutable, so a copy never goes stale; a chunk's copy is freed by the
 * first `sweep` after its tensor is disposed (a block consolidating its rows, a sequence
 * releasing its blocks). The forward sweeps once per call. The cost: the KV cache's bytes
 * twice, once in tfjs's heap and once here, half of them for f16 copies (the
 * KV budget counts the first only).
 *
 * @example
 * const mirror = new KvMirror(kernels, config.numKvHeads);
 * const keys = chunks.map((t) => mirror.chunk(t)); // copies only the chunks it has not seen
 */
import * as tf from '@tensorflow/tfjs-core';
import { storesGrouped, type KernelChunk, type KvType, type MatmulKernels } from '../kernels/matmul.js';
import { livePieces, pieceOf } from './kv-pieces.js';
import { sameLeading } from './same-leading.js';
import type { LoadedModel } from './types.js';
import type { WasmBackendLike } from './wasm-backend.js';

/**
 * Whether attention reads a model's KV as f16: for models whose projections run on
 * quantized blocks (Q8_0/Q4_0/Q4_1 GGUFs), as llama.cpp keeps its KV cache for the same
 * files — half the bytes a decode step reads at long contexts (the step at 1,024 tokens
 * of context was ~1.4–1.5× the step at 128), and an error (2^-11 relative) well under the
 * int8 activation rounding those products already make. Float weights (checkpoints, F32/F16
 * GGUFs) keep an f32 KV, and with it their ≤ 1e-4 agreement with the reference forward.
 */
export function kvAsF16(model: Pick<LoadedModel, 'blockWeights'>): boolean {
  const b = model.blockWeights;
  return b !== undefined && b.layers.some((L) => [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown].some((m) => m.type !== 'f32' && m.type !== 'f16'));
}

const KV_TYPES: readonly KvType[] = ['f32', 'f16', 'q8'];

/**
 * The KV cache type SKEIN_KV_CACHE asks for (`skein serve --kv-cache`, `generate
 * --kv-cache`: an environment variable so that it reaches an engine's worker thread as
 * SKEIN_THREADS does), or undefined where it is unset or `auto`.
 */
export function kvCacheFromEnv(): KvType | undefined {
  const env = process.env.SKEIN_KV_CACHE;
  if (env === undefined || env === '' || env === 'auto') return undefined;
  if (!(KV_TYPES as readonly string[]).includes(env)) throw new RangeError(`SKEIN_KV_CACHE must be one of auto, ${KV_TYPES.join(', ')}; got ${JSON.stringify(env)}`);
  return env as KvType;
}

/**
 * How the fast path keeps a model's KV cache: its `kvCache` where one was set on it, else
 * SKEIN_KV_CACHE's, else f16 for models on quantized blocks and f32 for float ones
 * (kvAsF16). q8 is lossy (an int8 row per KV head with one scale, the query quantized
 * alike for the scores, as llama.cpp's --cache-type-k/v q8_0 round): half f16's bytes,
 * which a decode step at long context reads once per layer.
 */
export function kvTypeOf(model: Pick<LoadedModel, 'blockWeights' | 'kvCache'>): KvType {
  return model.kvCache ?? kvCacheFromEnv() ?? (kvAsF16(model) ? 'f16' : 'f32');
}

/**
 * Blocks joined into one stored chunk once this many in a row have copies of their own (a
 * 128-row run of SmolLM2's 16-row blocks), and the fewest rows a block needs for it (not a
 * decode step's one-row chunks, which the block's seal replaces).
 */
const JOIN_BLOCKS = 8;
const JOIN_MIN_ROWS = 4;
/** sweepIfDue: sweep at every call while fewer copies than this are held, else every SWEEP_EVERY-th call. */
const SWEEP_ALWAYS_BELOW = 512;
const SWEEP_EVERY = 8;

export class KvMirror {
  private readonly chunks = new Map<tf.Tensor, KernelChunk>();
  /**
   * Copies of disposed tensors that live pieces of them are still read through (views:
   * kv-pieces.ts), freed by the first sweep after the last piece is disposed.
   */
  private readonly kept = new Map<tf.Tensor, KernelChunk>();
  /** Chunks joined from blocks (see `layerChunks`), each with the tensors viewing it. */
  private readonly joined = new Map<KernelChunk, tf.Tensor[]>();
  /**
   * The blocks' own copies a join replaced, freed by the next sweep: another sequence of
   * the same forward may have been handed them already.
   */
  private retired: KernelChunk[] = [];
  /** Times a tensor's copy was swapped for another (joins, re-homing): layerChunks' last lists hold only while it stands. */
  private remaps = 0;
  /**
   * Each layer list's copies as layerChunks last gave them, by the list's first tensor, with
   * the join loop's run length after each of them.
   */
  private lastLists = new WeakMap<tf.Tensor, { remaps: number; call: number; tensors: tf.Tensor2D[]; chunks: KernelChunk[]; runs: number[] }>();
  /** Forward calls begun (sweepIfDue): a list layerChunks handed out in an earlier one is no longer read by anyone. */
  private calls = 0;
  /** Forward calls since the last sweep (sweepIfDue). */
  private callsSinceSweep = 0;

  /**
   * `kvHeads`: the model's, which the chunks are stored by (MatmulKernels.store); `kv`: how
   * the copies are kept (kvTypeOf: f16 as llama.cpp keeps its KV cache, q8 at half that).
   */
  constructor(
    private readonly kernels: MatmulKernels,
    private readonly kvHeads: number,
    readonly kv: KvType = 'f32',
  ) {}

  /**
   * The kernel-memory copy of a (rows, kvHeads·headDim) tensor, made on first sight. On the
   * wasm backend read through a view of tfjs's heap (a decode step copies 2 new chunks per
   * layer; dataSync's copy and engine bookkeeping cost ~29 µs each). A piece of a tensor
   * whose copy this mirror holds (the block table's blocks of a prefill chunk, kv-pieces.ts)
   * is a view of that copy instead: no copy, and attention reads a prompt's blocks as the one
   * run they were stored as — a decode row's attention over a 1,024-token prompt's 16-row
   * blocks, each stored apart, took ~1.5× as long as over one chunk with its KV out of
   * cache, and storing the 3,840 blocks of SmolLM2's 30 layers cost ~56 ms at the first
   * step after the prompt. `keys`: t holds keys (f16 ones are stored grouped: MatmulKernels.store).
   */
  chunk(t: tf.Tensor2D, keys = false): KernelChunk {
    let c = this.copyOf(t);
    if (c === undefined) {
      const data = tf.getBackend() === 'wasm' ? (tf.backend() as unknown as WasmBackendLike).typedArrayFromHeap(t) : (t.dataSync() as Float32Array);
      c = this.store(data, t.shape[0], keys);
      this.chunks.set(t, c);
    }
    return c;
  }

  /** t's copy where it has one, or where it is a piece of a tensor that has (then a view of that, kept as t's); else undefined. */
  private copyOf(t: tf.Tensor2D): KernelChunk | undefined {
    const c = this.chunks.get(t);
    if (c !== undefined) return c;
    const piece = pieceOf(t);
    const whole = piece === undefined ? undefined : (this.chunks.get(piece.whole) ?? this.kept.get(piece.whole));
    if (whole === undefined) return undefined;
    const view = this.kernels.view(whole, piece!.first, t.shape[0], t.shape[1] / this.kvHeads);
    this.chunks.set(t, view);
    return view;
  }

  /**
   * The copies of a layer's chunks in position order (`chunk` of each), where every
   * JOIN_BLOCKS blocks in a row that have copies of their own (blocks sealed from decode
   * steps: 16 rows each, stored where they happened to land) are first joined into one
   * stored chunk that they then view: attention reads a long generated context in runs of
   * 128 rows instead of 16, as it reads a prompt's blocks (views of the prefill chunks).
   * Each row is copied once more, once; the blocks' own copies are freed by the next sweep.
   */
  layerChunks(list: readonly tf.Tensor2D[], keys = false): KernelChunk[] {
    // The same list as the last step's, but for its newest chunks (the scheduler rebuilds each
    // sequence's lists every step): the copies already found, and the join loop's state after
    // them, are taken from there as one slice — the list's tensors compared by reference —
    // instead of looked up one by one: ~3,800 lookups a step at 1,024 tokens of context in
    // 16-row blocks, each reading an object the weights' stream has evicted from the caches
    // (0.46–0.52 ms of an engine decode step there, timed; 0.35 with the slices, which read
    // the lists themselves). Valid while no copy was swapped since (remaps).
    // Where the last list is all of this one's start and was handed out in an earlier forward
    // call (which nobody reads any more), its arrays grow in place instead: a decode step at
    // 1,024 tokens of context copied ~60 lists of ~64 chunks three times over, ~0.2 MB of
    // garbage a token (V8's sampling heap profiler).
    const last = list.length > 0 ? this.lastLists.get(list[0]!) : undefined;
    const known = last !== undefined && last.remaps === this.remaps ? last : undefined;
    const same = known === undefined ? 0 : sameLeading(known.tensors, list);
    const grow = known !== undefined && same === known.tensors.length && known.call !== this.calls;
    const out: KernelChunk[] = grow ? known!.chunks : same > 0 ? known!.chunks.slice(0, same) : [];
    const runs: number[] = grow ? known!.runs : same > 0 ? known!.runs.slice(0, same) : [];
    let run = same > 0 ? runs[same - 1]! : 0;
    for (let i = same; i < list.length; i++) {
      const c = this.chunk(list[i]!, keys);
      out.push(c);
      run = c.stride === undefined && c.rows >= JOIN_MIN_ROWS ? run + 1 : 0;
      if (run === JOIN_BLOCKS) {
        this.join(list, out, i + 1 - run, i + 1);
        run = 0;
      }
      runs.push(run);
    }
    if (grow) {
      // The list's own copy of its tensors (callers may change theirs in place: test caches push onto it).
      for (let i = same; i < list.length; i++) known!.tensors.push(list[i]!);
      known!.remaps = this.remaps;
      known!.call = this.calls;
    } else if (list.length > 0) this.lastLists.set(list[0]!, { remaps: this.remaps, call: this.calls, tensors: list.slice(), chunks: out, runs });
    return out;
  }

  private join(list: readonly tf.Tensor2D[], out: KernelChunk[], a: number, b: number): void {
    this.remaps++;
    const headDim = list[a]!.shape[1] / this.kvHeads;
    const whole = this.kernels.join(out.slice(a, b), headDim);
    const members: tf.Tensor[] = [];
    let row = 0;
    for (let i = a; i < b; i++) {
      const own = out[i]!;
      const view = this.kernels.view(whole, row, own.rows, headDim);
      row += own.rows;
      this.retired.push(own);
      this.chunks.set(list[i]!, view);
      out[i] = view;
      members.push(list[i]!);
    }
    this.joined.set(whole, members);
  }

  /**
   * Stores (rows, kvHeads·headDim) values as this mirror keeps them (head by head, its kv
   * type; `keys` as `chunk`'s) without a tensor yet: blockLayer stores new rows as it makes them, and `adopt`
   * then ties the copy to their tensor.
   */
  store(data: Float32Array, rows: number, keys = false): KernelChunk {
    return this.kernels.store(data, rows, this.kvHeads, this.kv, keys);
  }

  /**
   * A filled KV block's row chunks as one tensor (the pool's JoinRows, block.ts), its copy
   * joined from the chunks' copies where each has one: a decode step's one-row chunks were
   * stored by the fused layers as they made them, so the block's rows are copied once more
   * as they are kept instead of narrowed again from the tensor at its first use. Measured in
   * the engine at 128 tokens of context, SmolLM2 (`scratch/engseal.ts`, token gaps by
   * position mod 16): the step after a seal spent 1.58 ms in layerChunks storing the 60 new
   * blocks (0.07 at other steps), its token 2.2–2.4 ms longer than the others; with the
   * joins 0.6–1.2 ms, the seal's own token ~0.7 ms longer (the joins, cold after the
   * weights' stream): ~0.9 ms less every 16 tokens. The copy holds the same values as a
   * store of the joined tensor would (each row narrowed alike).
   */
  joinRows(chunks: tf.Tensor2D[], keys: boolean): tf.Tensor2D {
    const joined = tf.concat(chunks, 0) as tf.Tensor2D;
    const grouped = storesGrouped(this.kv, keys);
    const copies: KernelChunk[] = [];
    for (const t of chunks) {
      const c = this.copyOf(t);
      // No copy yet (rows from another path), or one laid out otherwise: `chunk` stores the joined tensor when asked.
      if (c === undefined || (c.grouped === true) !== grouped) return joined;
      copies.push(c);
    }
    this.chunks.set(joined, this.kernels.join(copies, joined.shape[1] / this.kvHeads));
    return joined;
  }

  /** Takes a copy already stored by the caller (blockLayer stores new rows as it makes them) as t's. */
  adopt(t: tf.Tensor2D, c: KernelChunk): void {
    if (c.rows !== t.shape[0] || c.heads !== this.kvHeads || c.kv !== this.kv) throw new RangeError(`adopt: a chunk of ${c.rows} rows by ${c.heads} heads (${c.kv}) for a (${t.shape[0]}, …) tensor of ${this.kvHeads} (${this.kv})`);
    if (this.chunks.has(t)) throw new RangeError('adopt: this tensor has a copy already');
    this.chunks.set(t, c);
  }

  /**
   * The forward's sweep, at the start of each forward call (which also begins a new call for
   * layerChunks' lists): every call while few copies are held, else every SWEEP_EVERY-th
   * call. A sweep reads every copy's tensor (3,840 at 1,024 tokens of SmolLM2 context in
   * 16-row blocks, each evicted from the caches by the weights' stream: 0.56–0.70 ms of an
   * engine decode step there, timed), while what it frees is at most a few steps' one-row
   * chunks and blocks: their memory comes back a few calls later instead.
   */
  sweepIfDue(): void {
    this.calls++;
    if (this.chunks.size < SWEEP_ALWAYS_BELOW || ++this.callsSinceSweep >= SWEEP_EVERY) {
      this.callsSinceSweep = 0;
      this.sweep();
    }
  }

  /**
   * Frees the copies of tensors that have been disposed since the last sweep — a copy that
   * live pieces still view once the last of them is disposed; a view has no memory of its own.
   */
  sweep(): void {
    // forEach rather than for…of over the entries: each entry an array a step, ~3,800 of them at 1,024 tokens of context.
    this.chunks.forEach((c, t) => {
      if (!t.isDisposed) return;
      this.chunks.delete(t);
      if (c.stride !== undefined) return;
      if (livePieces(t).length > 0) this.kept.set(t, c);
      else this.kernels.free(c);
    });
    for (const [t, c] of this.kept) {
      if (this.release(c, livePieces(t))) this.kept.delete(t);
    }
    for (const [c, members] of this.joined) {
      if (members.every((t) => !t.isDisposed)) continue;
      const live = members.filter((t) => !t.isDisposed) as tf.Tensor2D[];
      if (this.release(c, live)) this.joined.delete(c);
      else this.joined.set(c, live);
    }
    for (const c of this.retired) this.kernels.free(c);
    this.retired = [];
  }

  /**
   * Frees a stored chunk that views of `live` tensors read, once they are gone — or once
   * they hold less than half its rows, after giving each a copy of its own: a prompt's
   * first blocks kept in the prefix cache must not pin the whole prefill chunk they were
   * cut from (up to 8× their bytes). Whether it was freed.
   */
  private release(c: KernelChunk, live: readonly tf.Tensor2D[]): boolean {
    let rows = 0;
    for (const t of live) rows += t.shape[0];
    if (2 * rows >= c.rows) return false;
    this.remaps++;
    for (const t of live) {
      const view = this.chunks.get(t);
      if (view !== undefined) this.chunks.set(t, this.kernels.join([view], t.shape[1] / this.kvHeads));
    }
    this.kernels.free(c);
    return true;
  }

  /** Chunks held, views and copies kept for them included (for leak checks and tests). */
  get size(): number {
    return this.chunks.size + this.kept.size + this.joined.size + this.retired.length;
  }

  /** Frees every copy (the model is going). */
  clear(): void {
    for (const c of [...this.chunks.values(), ...this.kept.values(), ...this.joined.keys(), ...this.retired]) if (c.stride === undefined) this.kernels.free(c);
    this.chunks.clear();
    this.kept.clear();
    this.joined.clear();
    this.retired = [];
    this.lastLists = new WeakMap();
  }
}
