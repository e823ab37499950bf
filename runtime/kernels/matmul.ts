/**
 * The wasm matmul kernels (matmul.c, built to matmul.wasm by build.sh) behind a small
 * JavaScript API. One `MatmulKernels` owns one WebAssembly.Memory, apart from tfjs's heap:
 * weights are copied in once, in their GGUF blocks (a 135M model in Q4_1 takes 84 MB
 * here instead of 540 MB of f32 in tfjs's heap), and each call copies activations in and
 * results out — at decode sizes those are a few KB. A model owns its own instance, so
 * dropping the model frees the memory with it (wasm memory never shrinks). Where the native
 * addon was built (native.ts) its kernels run on this same memory in place of the wasm
 * ones, with the same bits.
 *
 * @example
 * const k = new MatmulKernels();
 * const w = k.upload(quantizeMatrix(weights, 1536, 576, 'q8_0'));
 * const y = k.matmul(w, x, 1); // x (1, 576) → y (1, 1536)
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { floatToHalf, GGML_TYPE_ID, halfToFloat, QK, quantizeMatrix, rowBytes, type BlockMatrix, type BlockType } from './blocks.js';
import { nativeKernels, x4hBytes, type NativeKernels } from './native.js';
import { defaultKernelThreads, kernelThread, type KernelFn } from './threads.js';

const WASM_URL = new URL('./matmul.wasm', import.meta.url);
const RELAXED_WASM_URL = new URL('./matmul-relaxed.wasm', import.meta.url);
let compiled: WebAssembly.Module | null = null;
/** The relaxed-SIMD build, null where this engine cannot compile it; undefined until tried. */
let compiledRelaxed: WebAssembly.Module | null | undefined;

/**
 * matmul-relaxed.wasm (the same matmul.c with relaxed SIMD, whose Q4 products run on 8-bit
 * dot products: matmul.c's matmul_x4r) where the engine takes it, else null. Node 20's V8
 * has relaxed SIMD behind --experimental-wasm-relaxed-simd (on by default from V8 11.4,
 * Node 22), so the flag is set first; it only adds instructions that modules may use.
 * SKEIN_RELAXED_SIMD=0 keeps the baseline build (benches compare the two).
 */
export function relaxedModule(): WebAssembly.Module | null {
  if (compiledRelaxed !== undefined) return compiledRelaxed;
  if (process.env.SKEIN_RELAXED_SIMD === '0') return (compiledRelaxed = null);
  const bytes = readFileSync(RELAXED_WASM_URL);
  try {
    setFlagsFromString('--experimental-wasm-relaxed-simd');
  } catch {
    // An engine without the flag either has relaxed SIMD on already or refuses the module below.
  }
  try {
    const module = new WebAssembly.Module(bytes);
    compiledRelaxed = relaxedAgrees(module) ? module : null;
  } catch {
    compiledRelaxed = null;
  }
  return compiledRelaxed;
}

/**
 * A kernel instance on a memory of its own, for the once-per-process checks below: space
 * handed out from the heap base up (the memory grows as needed; `reset` starts over), a
 * seeded generator, and a bit-for-bit comparison of two outputs.
 */
class KernelCheck {
  readonly memory = new WebAssembly.Memory({ initial: 16, maximum: 65536, shared: true });
  readonly fns: Exports;
  private readonly base: number;
  private p: number;

  constructor(
    module: WebAssembly.Module,
    private seed: number,
  ) {
    this.fns = new WebAssembly.Instance(module, { env: { memory: this.memory } }).exports as unknown as Exports;
    this.base = this.p = align16(this.fns.__heap_base.value as number);
  }

  reset(): void {
    this.p = this.base;
  }

  take(bytes: number): number {
    const at = this.p;
    this.p = align16(this.p + bytes);
    const have = this.memory.buffer.byteLength;
    if (this.p > have) this.memory.grow(Math.ceil((this.p - have) / PAGE));
    return at;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return (this.seed = (this.seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  }

  /** n values in [−0.5, 0.5) with ±1 every a-th / b-th place: the extremes quantization saturates on. */
  withExtremes(n: number, a: number, b: number): Float32Array {
    return Float32Array.from({ length: n }, (_, i) => (i % a === 0 ? 1 : i % b === 0 ? -1 : this.next() - 0.5));
  }

  /** Fills n floats at `at` with scale·[−0.5, 0.5). */
  fill(at: number, n: number, scale = 1): void {
    new Float32Array(this.memory.buffer, at, n).set(Float32Array.from({ length: n }, () => scale * (this.next() - 0.5)));
  }

  /** Whether the n 32-bit values at a and b are the same bits. */
  same(a: number, b: number, n: number): boolean {
    const x = new Uint32Array(this.memory.buffer, a, n);
    const y = new Uint32Array(this.memory.buffer, b, n);
    return x.every((v, i) => v === y[i]);
  }
}

/**
 * Whether this engine's relaxed dot products give matmul_x4r exactly matmul_x4's bits (both
 * are in the relaxed build): relaxed SIMD leaves some cases to the engine, and engines have
 * had bugs there (Node 20's fused i32x4 form returns twice the sum). Checked once per process
 * on a Q4_1 product with the extremes included (weights 0 and 15, activations ±127).
 */
function relaxedAgrees(module: WebAssembly.Module): boolean {
  const c = new KernelCheck(module, 12345);
  const { fns, memory } = c;
  const rows = 8;
  const cols = 128;
  const T = 3;
  const x = c.withExtremes(T * cols, 37, 41);
  const m = quantizeMatrix(c.withExtremes(rows * cols, 29, 31), rows, cols, 'q4_1');
  const nb = cols / QK;
  const src = c.take(m.data.length);
  const wx4 = c.take(fns.x4_bytes(GGML_TYPE_ID.q4_1, rows, cols));
  const xo = c.take(4 * T * cols);
  const qa = c.take(2 * T * cols);
  const da = c.take(4 * T * nb);
  const sa = c.take(4 * T * nb);
  const y0 = c.take(4 * T * rows);
  const y1 = c.take(4 * T * rows);
  new Uint8Array(memory.buffer, src, m.data.length).set(m.data);
  new Float32Array(memory.buffer, xo, T * cols).set(x);
  fns.repack_x4(GGML_TYPE_ID.q4_1, src, rows, cols, wx4);
  fns.quantize_rows(xo, T, cols, qa, da, sa, 0);
  fns.matmul_x4(GGML_TYPE_ID.q4_1, wx4, rows, cols, qa, da, sa, T, y0, 0, rows / 4);
  fns.quantize_rows_r8!(xo, T, cols, qa, da, sa);
  fns.matmul_x4r!(GGML_TYPE_ID.q4_1, wx4, rows, cols, qa, da, sa, T, y1, 0, rows / 4);
  return c.same(y0, y1, T * rows);
}

/** Whether the native kernels agree with this process's wasm build; undefined until checked. */
let nativeChecked: boolean | undefined;

/**
 * Whether the native kernels give the relaxed wasm build's bits (matmul_x4r on Q4_1 and
 * Q4_0, matmul_x4 on Q8_0; the addon's x4h groups of the same matrix against the wasm x4
 * ones) for 1–9 tokens over an odd number of row groups (the native
 * code pairs groups and runs a lone last one alone) with the extremes in the activations.
 * Checked once per process; a compiler or CPU that rounds differently keeps the wasm build.
 */
function nativeAgrees(module: WebAssembly.Module, native: NativeKernels): boolean {
  if (nativeChecked !== undefined) return nativeChecked;
  const c = new KernelCheck(module, 4321);
  const { fns, memory } = c;
  const id = native.register(new Uint8Array(memory.buffer));
  const rows = 20;
  const cols = 96;
  const nb = cols / QK;
  let ok = true;
  for (const type of ['q4_1', 'q4_0', 'q8_0'] as const) {
    const m = quantizeMatrix(c.withExtremes(rows * cols, 29, 31), rows, cols, type);
    for (let T = 1; T <= 9 && ok; T++) {
      const x = c.withExtremes(T * cols, 37, 41);
      c.reset();
      const src = c.take(m.data.length);
      const wx4 = c.take(fns.x4_bytes(GGML_TYPE_ID[type], rows, cols));
      const wx4h = c.take(x4hBytes(type, rows, cols));
      const xo = c.take(4 * T * cols);
      const qa = c.take(2 * T * cols);
      const da = c.take(4 * T * nb);
      const sa = c.take(4 * T * nb);
      const y0 = c.take(4 * T * rows);
      const y1 = c.take(4 * T * rows);
      new Uint8Array(memory.buffer, src, m.data.length).set(m.data);
      new Float32Array(memory.buffer, xo, T * cols).set(x);
      fns.repack_x4(GGML_TYPE_ID[type], src, rows, cols, wx4);
      native.repack_x4h(id, GGML_TYPE_ID[type], src, rows, cols, wx4h);
      const tail = [rows, cols, qa, da, sa, T] as const;
      // The addon's activations, into its own buffers: int8 in R8 order for all three types
      // (its Q8_0 groups take them too), the same blocks as the wasm build's.
      const qa1 = c.take(2 * T * cols);
      const da1 = c.take(4 * T * nb);
      const sa1 = c.take(4 * T * nb);
      native.quantize_rows_r8(id, xo, T, cols, qa1, da1, sa1);
      if (type === 'q8_0') {
        fns.quantize_rows(xo, T, cols, qa, da, sa, 0);
        fns.matmul_x4(GGML_TYPE_ID[type], wx4, ...tail, y0, 0, rows / 4);
        // Its int16 ones (Q8_0 matrices kept as file rows) against the wasm build's.
        const qa2 = c.take(2 * T * cols);
        const ds2 = c.take(8 * T * nb);
        native.quantize_rows(id, xo, T, cols, qa2, ds2, ds2 + 4 * T * nb, 0);
        if (!c.same(qa, qa2, (2 * T * cols) / 4)) return (nativeChecked = false);
      } else {
        fns.quantize_rows_r8!(xo, T, cols, qa, da, sa);
        fns.matmul_x4r!(GGML_TYPE_ID[type], wx4, ...tail, y0, 0, rows / 4);
        if (!c.same(qa, qa1, (T * cols) / 4)) return (nativeChecked = false);
      }
      if (!c.same(da, da1, T * nb) || !c.same(sa, sa1, T * nb)) return (nativeChecked = false);
      native.matmul_x4r(id, GGML_TYPE_ID[type], wx4h, rows, cols, qa1, da1, sa1, T, y1, 0, rows / 4);
      ok = c.same(y0, y1, T * rows);
    }
  }
  return (nativeChecked = ok && nativeFloatAgrees(c, native, id));
}

/**
 * nativeAgrees for the float kernels (matmul.c's own source compiled natively): F32 and
 * F16 products, the SwiGLU gate, f16 and q8 narrowing, and attention over f32, f16 and q8 chunks of
 * uneven sizes with a tree mask and the last row's key weights.
 */
function nativeFloatAgrees(c: KernelCheck, native: NativeKernels, id: number): boolean {
  const { fns, memory } = c;
  c.reset();
  const rows = 12;
  const cols = 64;
  for (const type of ['f32', 'f16'] as const) {
    const m = quantizeMatrix(Float32Array.from({ length: rows * cols }, () => c.next() - 0.5), rows, cols, type);
    const w = c.take(m.data.length);
    new Uint8Array(memory.buffer, w, m.data.length).set(m.data);
    for (const T of [1, 5]) {
      const x = c.take(4 * T * cols);
      const y0 = c.take(4 * T * rows);
      const y1 = c.take(4 * T * rows);
      c.fill(x, T * cols);
      fns.matmul_float(GGML_TYPE_ID[type], w, rows, cols, x, T, y0, 0, rows);
      native.matmul_float(id, GGML_TYPE_ID[type], w, rows, cols, x, T, y1, 0, rows);
      if (!c.same(y0, y1, T * rows)) return false;
    }
  }
  const n = 40;
  const g = c.take(4 * n);
  const u = c.take(4 * n);
  const g1 = c.take(4 * n);
  c.fill(g, n, 40);
  c.fill(u, n);
  new Uint8Array(memory.buffer, g1, 4 * n).set(new Uint8Array(memory.buffer, g, 4 * n));
  fns.silu_mul(g, u, n);
  native.silu_mul(id, g1, u, n);
  const h0 = c.take(2 * n);
  const h1 = c.take(2 * n);
  fns.store_f16(u, n, h0);
  native.store_f16(id, u, n, h1);
  if (!c.same(g, g1, n) || !c.same(h0, h1, n / 2)) return false;
  // Attention: 6 heads over 2 KV heads, D 8; 9 cached rows in chunks of 4, 1 and 4, then 3 new rows in one chunk.
  // The first chunk is a view: its 4 rows lie in storage of 6 rows a head (keys) and 5 (values).
  const H = 6, KV = 2, D = 8, sizes = [4, 1, 4, 3], kStored = [6, 1, 4, 3], vStored = [5, 1, 4, 3], newRows = 3;
  const S = sizes.reduce((a, b) => a + b, 0);
  let storedAgree = true;
  for (const kv of ['f32', 'f16', 'q8'] as const) {
    const stored = (r: number) => {
      const at = c.take(kvRowBytes(D, kv) * r * KV);
      const vals = c.take(4 * r * KV * D);
      c.fill(vals, r * KV * D, 3);
      if (kv === 'f16') fns.store_f16(vals, r * KV * D, at);
      else if (kv === 'q8') {
        const at1 = c.take(kvRowBytes(D, kv) * r * KV);
        fns.store_q8(vals, r * KV, D, at);
        native.store_q8(id, vals, r * KV, D, at1);
        if (!c.same(at, at1, (kvRowBytes(D, kv) * r * KV) / 4)) storedAgree = false;
      } else new Uint8Array(memory.buffer, at, 4 * r * KV * D).set(new Uint8Array(memory.buffer, vals, 4 * r * KV * D));
      return at;
    };
    const chunks = sizes.map((r, i) => ({ k: stored(kStored[i]!), v: stored(vStored[i]!), r }));
    // f16 keys as grouped ones (the first chunk's view from its stored chunk's first row: one whole group).
    const kFirst = sizes.map(() => (kv === 'f16' ? 0 : -1));
    const table = c.take(4 * TABLE_COLUMNS * chunks.length);
    new Int32Array(memory.buffer, table, TABLE_COLUMNS * chunks.length).set([...chunks.map((ch) => ch.k), ...chunks.map((ch) => ch.v), ...sizes, ...kStored, ...vStored, ...kFirst]);
    const q = c.take(4 * newRows * H * D);
    c.fill(q, newRows * H * D, 2);
    const vis = c.take(newRows * newRows);
    new Uint8Array(memory.buffer, vis, newRows * newRows).set([1, 0, 0, 1, 1, 0, 1, 0, 1]);
    const outs = [0, 1].map(() => ({ scores: c.take(16 * S), out: c.take(4 * newRows * H * D), last: c.take(4 * S) }));
    const args = (o: (typeof outs)[number]) =>
      [q, table, table + 4 * chunks.length, table + 8 * chunks.length, chunks.length, S - newRows, newRows, vis, H, KV + 65536 * KV_TYPE_CODE[kv], D, o.scores, o.out, o.last, 0, H] as const;
    fns.attention(...args(outs[0]!));
    native.attention(id, ...args(outs[1]!));
    if (!c.same(outs[0]!.out, outs[1]!.out, newRows * H * D) || !c.same(outs[0]!.last, outs[1]!.last, S)) return false;
  }
  return storedAgree;
}

interface Exports {
  __heap_base: WebAssembly.Global;
  quantize_rows(x: number, T: number, cols: number, qa: number, da: number, sa: number, q4Order: number): void;
  matmul_quant(type: number, w: number, rows: number, cols: number, qa: number, da: number, sa: number, T: number, y: number, r0: number, r1: number): void;
  matmul_float(type: number, w: number, rows: number, cols: number, x: number, T: number, y: number, r0: number, r1: number): void;
  repack_x4(type: number, src: number, rows: number, cols: number, dst: number): void;
  x4_bytes(type: number, rows: number, cols: number): number;
  silu_mul(g: number, u: number, n: number): void;
  matmul_x4(type: number, w: number, rows: number, cols: number, qa: number, da: number, sa: number, T: number, y: number, g0: number, g1: number): void;
  store_f16(src: number, n: number, dst: number): void;
  store_q8(src: number, rows: number, D: number, dst: number): void;
  rms_norm_rows(x: number, T: number, cols: number, w: number, eps: number, out: number): void;
  add_rows(a: number, b: number, bias: number, T: number, cols: number, out: number): void;
  place_rows(y: number, T: number, n: number, scale: number, bias: number, out: number, width: number, col: number): void;
  rotate_rows(out: number, T: number, width: number, dim: number, cos: number, sin: number): void;
  /** Relaxed build only (matmul-relaxed.wasm). */
  quantize_rows_r8?(x: number, T: number, cols: number, qa: number, da: number, sa: number): void;
  matmul_x4r?(type: number, w: number, rows: number, cols: number, qa: number, da: number, sa: number, T: number, y: number, g0: number, g1: number): void;
  attention(q: number, kc: number, vc: number, rows: number, chunks: number, P: number, n: number, vis: number, H: number, KV: number, D: number, scores: number, out: number, last: number, h0: number, h1: number): void;
}

/**
 * Multiply-adds below which a product or an attention call stays on one thread. A handover
 * costs µs where cores answer at once but up to hundreds of µs on busy or virtual ones
 * (threads.ts), so only products of milliseconds split: every product of a prefill chunk
 * and, at decode, the LM head (SmolLM2: 49,152×576 = 28M), not the 0.3–0.9M layer GEMVs.
 */
const SPLIT_MIN_WORK = 4_000_000;
/** Stack of the kernel thread's instance (attention keeps 2 KiB of accumulators on it). */
const THREAD_STACK = 65536;
const threadRegistry = new FinalizationRegistry<number>((id) => kernelThread().drop(id));

/** The shapes of one attention call (see MatmulKernels.attention). */
export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** A decoder layer's weights as `MatmulKernels.layer` takes them (the same objects every step: its plan is made once per layer). */
export interface LayerWeights {
  /** The q, k and v output groups (linearGroups' groups: parts scaled, bias added). */
  groups: readonly (readonly { weight: KernelWeight; scale?: number; bias?: Float32Array | null }[])[];
  norm: { weight: Float32Array; eps: number } | null;
  mlp: { o: KernelWeight; bo: Float32Array | null; norm: { weight: Float32Array; eps: number }; gate: KernelWeight; up: KernelWeight; down: KernelWeight };
}

/** A layer plan's words that depend on its weights only (MatmulKernels.layerPlan). */
interface LayerPlan {
  mlp: LayerWeights['mlp'];
  norm: LayerWeights['norm'];
  weights: Int32Array;
  doubles: Float64Array;
  parts: number;
  /** Σ over the q/k/v parts of align16(4·rows): their outputs' scratch per row. */
  partRows: number;
  /** The largest weight's multiply-adds per row (whether a product would split over two threads). */
  mostWork: number;
  cols: number;
  hidden: number;
  inter: number;
  qd: number;
  kvd: number;
  normW: number;
  bo: number;
  mlpNorm: number;
}

/** One decoder layer for `MatmulKernels.layer` (native/layer.inc.c): block-layer.ts's steps, as linearGroups, store, attention and mlpBlock take them. */
export interface FusedLayerOp extends LayerWeights {
  /** q and k (groups 0 and 1) rotated by it. */
  rotary: { outputs: number[]; dim: number; cos: Float32Array; sin: Float32Array } | null;
  shape: AttentionShape;
  /** Each sequence's new rows in order, its cached chunks and the new rows' visibility (attention's). */
  seqs: readonly { n: number; keys: readonly KernelChunk[]; values: readonly KernelChunk[]; visible: Uint8Array }[];
  /** How the new K/V rows are stored (store's kv). */
  kv: KvType;
}

/** Words of layer.inc.c's plan: its header, a weight, a sequence. */
const PLAN_HEADER = 20;
const PLAN_WEIGHT = 6;
const PLAN_SEQ = 6;

/**
 * How a KV chunk's rows are kept (store): f32; f16 (the KV mirror of models on quantized
 * blocks, as llama.cpp keeps its KV cache); q8 (each row of a KV head as D int8 values and
 * one f32 scale, as llama.cpp's q8_0 cache rounds them: half f16's bytes, lossy).
 */
export type KvType = 'f32' | 'f16' | 'q8';

/** The kernels' code of a KvType (above the KV head count in attention's and layer's KVf word: 65536·code). */
const KV_TYPE_CODE: Record<KvType, number> = { f32: 0, f16: 1, q8: 2 };

/** Columns of attention's chunk table (writeTable). */
const TABLE_COLUMNS = 6;

/** Bytes of one stored row of a KV head of D values (float-kernels.inc.c's kv_row_bytes). */
export function kvRowBytes(D: number, type: KvType): number {
  return type === 'q8' ? D + 4 : D * (type === 'f16' ? 2 : 4);
}

/** Rows of f32 kept in a MatmulKernels' memory by `store` (KV cache chunks). */
export interface KernelChunk {
  readonly offset: number;
  readonly rows: number;
  /** Heads it is stored by (store's layout); attention checks it against its kvHeads. */
  readonly heads: number;
  /** How its rows are kept (KvType). */
  readonly kv: KvType;
  /**
   * For a view (MatmulKernels.view): the rows per head of the stored chunk it lies in, whose
   * memory it shares; absent for a stored chunk (its own rows).
   */
  readonly stride?: number;
  /** Keys stored in groups of four rows (groupedAt: f16 keys, `store`'s `keys`); absent for rows kept side by side. */
  readonly grouped?: true;
  /** A grouped view's first row in its stored chunk (the groups count from the stored chunk's first row). */
  readonly first?: number;
}

/** Whether `store` keeps rows of this KV type grouped (groupedAt): keys, at f16. */
export function storesGrouped(kv: KvType, keys: boolean): boolean {
  return keys && kv === 'f16';
}

/**
 * Where value d (a multiple of 4) of row r lies in one KV head's `rows` rows of grouped keys,
 * in elements from the head's first: groups of four rows from the first, their four-value
 * pieces side by side (d..d+3 of each row, then d+4..d+7), a last group of fewer rows the
 * same way (float-kernels.inc.c's key_offset). The native scores then widen two keys' pieces
 * in one conversion instead of two and an insert: a decode row's scores over 1,024 f16 keys
 * in cache, a C harness, 19.0 → 13.9 k TSC ticks a KV head (the same bits).
 */
export function groupedAt(rows: number, r: number, d: number, D: number): number {
  const g0 = r & ~3;
  return g0 * D + (r - g0) * 4 + d * Math.min(4, rows - g0);
}

/**
 * Bytes a stored chunk occupies: powers of two up to 16 KiB (decode appends one row at a
 * time, 768 B for SmolLM2), multiples of 16 KiB above (blocks of 16 rows, prefill
 * pieces), so freed chunks are reused by the same kinds of chunk.
 */
function storedBytes(bytes: number): number {
  if (bytes <= 16384) return Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
  return Math.ceil(bytes / 16384) * 16384;
}

/** Weight types the kernels multiply by directly. */
export const KERNEL_TYPES: readonly BlockType[] = ['f32', 'f16', 'q4_0', 'q4_1', 'q8_0'];

/** A matrix living in a MatmulKernels' memory. */
export interface KernelWeight {
  readonly type: BlockType;
  readonly rows: number;
  readonly cols: number;
  readonly offset: number;
  /**
   * 'x4': quantized rows interleaved by four in column pairs, scales as f32 (matmul.c's
   * repack_x4); 'x4h': the same groups with the file's f16 scales, for the native kernels
   * (native/kernels.c's repack_x4h: 17 % fewer bytes for Q4_1, 25 % for Q4_0, 6 % for Q8_0
   * than 'x4'); 'rows': as in the file.
   */
  readonly layout: 'rows' | 'x4' | 'x4h';
}

export interface MatmulOptions {
  /** Interleave quantized rows by four at upload (default true; false serves comparisons). */
  interleave?: boolean;
  /** Threads (threads.ts; default SKEIN_THREADS, else 1): the native kernels run on all of them (their pool), the wasm build on at most two (threads.ts's worker). */
  threads?: number;
  /**
   * Split the native kernels' work over their own helper threads (native/pool.inc.c; default
   * true unless SKEIN_NATIVE_POOL=0). False keeps threads.ts's worker for them, as the wasm
   * build has: tests and benches compare the two.
   */
  nativePool?: boolean;
  /** The least multiply-adds of a product's piece on the native pool (default: the addon's, 32,768; tests lower it to split tiny products). */
  poolPieceWork?: number;
  /**
   * Take the kernel thread's half back when it has not started by the time ours is done
   * (default true). False always waits for it: tests use it to exercise that thread.
   */
  takeBack?: boolean;
  /** Multiply-adds from which a call splits (default SPLIT_MIN_WORK; tests lower it). */
  splitMinWork?: number;
  /**
   * Run on the relaxed-SIMD build where the engine takes it (default true; see
   * relaxedModule). The results are the same bits either way; false serves comparisons.
   */
  relaxed?: boolean;
  /**
   * Run the Q4 (relaxed) and Q8_0 x4 products on the native kernels where they were built
   * and agree with the wasm ones (default true; native.ts). Same bits either way.
   */
  native?: boolean;
  /**
   * Ask the OS for transparent huge pages for the kernels' memory (native kernels on Linux:
   * kernels.c's huge_pages; default true unless SKEIN_HUGE_PAGES=0). The memory then grows
   * in 2 MiB steps. Same results either way; a decode step runs ~7–9 % faster with them.
   */
  hugePages?: boolean;
}

/**
 * How activations meet a weight: f32 as they are, or int8 blocks in one of two orders —
 * natural ('q8': Q8_0 rows and every x4 layout) or permuted for Q4 rows as in the file
 * (matmul.c's quantize_block).
 */
function activationKind(w: { type: BlockType; layout: KernelWeight['layout'] }, relaxed: boolean): 'float' | 'q8' | 'q4' | 'r8' {
  if (w.type === 'f32' || w.type === 'f16') return 'float';
  const grouped = w.layout !== 'rows';
  // The native Q8_0 groups take the Q4 products' int8 activations too (kernels.c's x8r_tile).
  if (relaxed && grouped && (w.type !== 'q8_0' || w.layout === 'x4h')) return 'r8';
  return w.type === 'q8_0' || grouped ? 'q8' : 'q4';
}

/** Where column c & 7 of each 8 sits in quantize_rows_r8's int8 activations (matmul.c's R8_ORDER inverted). */
const R8_POSITION = [0, 2, 4, 6, 1, 3, 5, 7];

const PAGE = 65536;
/** A transparent huge page: the kernels' memory starts at one and grows by them, so that each is faulted in whole (huge_pages). */
const HUGE_PAGE = 2 * 1024 * 1024;
// Not (n + 15) & ~15: bitwise operators work on int32, and offsets pass 2 GiB in a 4 GiB memory.
const align16 = (n: number) => Math.ceil(n / 16) * 16;
const zeroVectors = new Map<number, Float32Array>();
/** One shared zero vector per length (a constant the kernels' memory keeps once). */
const zeros = (n: number) => zeroVectors.get(n) ?? zeroVectors.set(n, new Float32Array(n)).get(n)!;

/**
 * The threads (and a piece's least work) this thread last gave the addon's pool, which is
 * process-wide: each instance sets its own before its calls (syncPool), so one made for one
 * thread never runs on the helpers another one started.
 */
let poolSetting = '1:0';

export class MatmulKernels {
  private readonly memory: WebAssembly.Memory;
  private readonly module: WebAssembly.Module;
  private readonly fns: Exports;
  /** Whether Q4 x4 products run on the relaxed build's 8-bit dot products (matmul_x4r). */
  readonly relaxed: boolean;
  /** Whether the products, the SwiGLU gate and attention run on the native kernels (native.ts). */
  readonly native: boolean;
  /** The addon and this memory's id there, when native (uploads repack for it: 'x4h'). */
  private readonly addon: { kernels: NativeKernels; id: number } | null;
  /** End of the weights; scratch space for a call starts here. */
  private top: number;

  private readonly interleave: boolean;
  /** attention's runs of chunks (runsOf): the first runCount are the last call's; the objects are reused from call to call (a decode step at 1,024 tokens of context made ~3,800 of them). */
  private readonly runs: { k: number; v: number; rows: number; kStride: number; vStride: number; kFirst: number }[] = [];
  private runCount = 0;
  /** Freed stored chunks by their size (storedBytes), for reuse. */
  private readonly freeChunks = new Map<number, number[]>();
  /** Size of every live stored chunk, by offset. */
  private readonly chunkBytes = new Map<number, number>();
  /** Vectors a layer reads on every call (norm weights, biases), copied in once: their offsets. */
  private readonly constants = new WeakMap<Float32Array, number>();

  private threads: number;
  private readonly takeBack: boolean;
  private readonly splitMinWork: number;
  /** Whether `layer` runs where it can (setFusedLayers; SKEIN_FUSED_LAYER=0 starts it off, to compare). */
  private fuseLayers = process.env.SKEIN_FUSED_LAYER !== '0';
  /** Plans per layer, keyed by its q/k/v groups (layerPlan). */
  private readonly layerPlans = new WeakMap<object, LayerPlan | null>();
  /** The plan header's words, filled per call. */
  private readonly planHeader = new Int32Array(PLAN_HEADER);
  /** This memory's id on the kernel thread, once registered there (first split). */
  private threadMemory = 0;
  /** Calls whose second half the kernel thread ran (tests and benches read it). */
  splitCalls = 0;
  /** Top of the kernel thread's stack, reserved below the weights. */
  private readonly threadStackTop: number;
  /** Whether the native kernels split work over their own pool (MatmulOptions.nativePool) rather than threads.ts's worker. */
  private readonly nativePool: boolean;
  private poolPieceWork: number;
  private readonly wantsHugePages: boolean;
  private hugePagesMarked = false;

  constructor(opts: MatmulOptions = {}) {
    this.interleave = opts.interleave ?? true;
    this.threads = opts.threads ?? defaultKernelThreads();
    this.takeBack = opts.takeBack ?? true;
    this.splitMinWork = opts.splitMinWork ?? SPLIT_MIN_WORK;
    compiled ??= new WebAssembly.Module(readFileSync(WASM_URL));
    const relaxed = opts.relaxed === false ? null : relaxedModule();
    this.module = relaxed ?? compiled;
    this.relaxed = relaxed !== null;
    // Shared, so that the kernel thread's instance works on the same bytes; a shared
    // memory must declare its maximum (4 GiB: address space reserved, not committed).
    this.memory = new WebAssembly.Memory({ initial: HUGE_PAGE / PAGE, maximum: 65536, shared: true });
    const instance = new WebAssembly.Instance(this.module, { env: { memory: this.memory } });
    const fns = instance.exports as unknown as Exports;
    const native = relaxed !== null && opts.native !== false ? nativeKernels() : null;
    this.native = native !== null && nativeAgrees(relaxed!, native);
    if (this.native) {
      // The same arguments on the same memory (the kernel thread swaps its own the same way).
      const id = native!.register(new Uint8Array(this.memory.buffer));
      this.addon = { kernels: native!, id };
      // Bound to the memory's id rather than wrapped in (...a) => f(id, ...a): a decode step
      // makes ~300 of these calls, and the spread allocated an array for each.
      const n = native!;
      this.fns = {
        ...fns,
        matmul_x4r: n.matmul_x4r.bind(n, id),
        matmul_float: n.matmul_float.bind(n, id),
        silu_mul: n.silu_mul.bind(n, id),
        quantize_rows: (x, T, cols, qa, da, sa, q4Order) => (q4Order === 0 ? n.quantize_rows(id, x, T, cols, qa, da, sa, 0) : fns.quantize_rows(x, T, cols, qa, da, sa, q4Order)),
        quantize_rows_r8: n.quantize_rows_r8.bind(n, id),
        store_f16: n.store_f16.bind(n, id),
        store_q8: n.store_q8.bind(n, id),
        attention: n.attention.bind(n, id),
      };
    } else {
      this.fns = fns;
      this.addon = null;
    }
    this.nativePool = this.addon?.kernels.pool !== undefined && (opts.nativePool ?? process.env.SKEIN_NATIVE_POOL !== '0');
    this.wantsHugePages = this.addon?.kernels.huge_pages !== undefined && (opts.hugePages ?? process.env.SKEIN_HUGE_PAGES !== '0');
    this.markHugePages();
    this.poolPieceWork = opts.poolPieceWork ?? 0;
    this.top = align16(this.fns.__heap_base.value as number);
    this.threadStackTop = 0;
    if (this.threads > 1) {
      this.threadStackTop = this.top + THREAD_STACK;
      this.ensure(this.threadStackTop);
      this.top = this.threadStackTop;
    }
  }

  /**
   * Runs fn over [lo, hi) split in two: [mid, hi) on the kernel thread, [lo, mid) here
   * (`args(a, b)` gives the call's arguments for a range). One thread when the work is small
   * or threads is 1.
   */
  private split(fn: KernelFn, lo: number, hi: number, work: number, args: (a: number, b: number) => number[]): void {
    const call = this.fns[fn] as (...a: number[]) => void;
    this.syncPool();
    if (this.nativePool && (fn === 'matmul_x4r' || fn === 'matmul_float' || fn === 'attention')) {
      // The addon cuts the call into parts for its pool's threads itself (pool.inc.c), whatever its size.
      call(...args(lo, hi));
      return;
    }
    // threads.ts's worker runs on a stack reserved at construction (threadStackTop).
    if (this.threads < 2 || this.threadStackTop === 0 || work < this.splitMinWork || hi - lo < 2) {
      call(...args(lo, hi));
      return;
    }
    const thread = kernelThread();
    if (this.takeBack && !thread.available()) {
      call(...args(lo, hi));
      return;
    }
    if (this.threadMemory === 0) {
      this.threadMemory = thread.add(this.module, this.memory, this.threadStackTop, this.native);
      threadRegistry.register(this, this.threadMemory);
    }
    const mid = lo + Math.floor((hi - lo) / 2);
    thread.start(this.threadMemory, fn, args(mid, hi));
    let mine = true;
    try {
      call(...args(lo, mid));
    } finally {
      mine = this.takeBack && thread.takeBack();
      if (!mine) thread.join();
    }
    if (mine) call(...args(mid, hi));
    else this.splitCalls++;
  }

  /**
   * Sets the threads for the calls that follow (`skein bench decode --arg threads=best`
   * measures one and two on one loaded model): any count on the native pool; on
   * threads.ts's worker, two only where this instance was made with two (its stack is
   * reserved then).
   */
  setThreads(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`setThreads: a whole number of threads ≥ 1, got ${n}`);
    if (n > 1 && this.threadStackTop === 0 && !this.nativePool) throw new RangeError(`setThreads(${n}): this instance was made for one thread (threads ≥ 2 at construction reserves the kernel thread its stack)`);
    this.threads = n;
  }

  /** Gives the addon's pool this instance's thread count, where another instance (or setThreads) left a different one. */
  private syncPool(): void {
    if (this.addon?.kernels.pool === undefined) return;
    const threads = this.nativePool ? this.threads : 1;
    const setting = `${threads}:${this.poolPieceWork}`;
    if (poolSetting === setting) return;
    this.addon.kernels.pool(threads, this.poolPieceWork);
    poolSetting = setting;
  }

  /** The least multiply-adds of a product's piece on the native pool (0: the addon's default; tests lower it to split tiny products). */
  setPoolPieceWork(work: number): void {
    this.poolPieceWork = work;
  }

  /** Parts of this process's native calls posted to the pool's helpers so far, and how many of them the helpers ran (zeros without a pool). */
  poolCounts(): { posted: number; helped: number } {
    const [posted, helped] = this.addon?.kernels.pool_counts?.() ?? [0, 0];
    return { posted, helped };
  }

  /** Threads the native pool runs this instance's work on (1 without it). */
  get poolWidth(): number {
    return this.nativePool ? this.threads : 1;
  }

  /** Bytes of this instance's wasm memory (it only grows: weights, KV copies, scratch). */
  get memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /**
   * Bytes of wasm memory below the scratch space: the module's own stack and statics, the
   * kernel thread's stack, weights, and stored KV chunks (freed ones included: their memory
   * is reused by later chunks, never given back). Right after a model loads, its weights.
   */
  get weightBytes(): number {
    return this.top;
  }

  private ensure(end: number): void {
    const have = this.memory.buffer.byteLength;
    if (end <= have) return;
    this.memory.grow((Math.ceil(end / HUGE_PAGE) * HUGE_PAGE - have) / PAGE);
    this.markHugePages();
  }

  /** Marks all of the memory for huge pages (hugePages), before its new pages are first touched. */
  private markHugePages(): void {
    if (this.wantsHugePages) this.hugePagesMarked = this.addon!.kernels.huge_pages!(this.addon!.id, this.memory.buffer.byteLength);
  }

  /** Whether the OS took this memory's request for transparent huge pages (MatmulOptions.hugePages). */
  get hugePages(): boolean {
    return this.hugePagesMarked;
  }

  /** Copies a matrix in; it stays for the life of this instance. */
  upload(m: BlockMatrix): KernelWeight {
    if (!KERNEL_TYPES.includes(m.type)) throw new RangeError(`no matmul kernel for ${m.type}`);
    if (m.cols % QK !== 0) throw new RangeError(`matmul kernels need cols divisible by ${QK}, got ${m.cols}`);
    const bytes = m.rows * rowBytes(m.type, m.cols);
    const data = m.data; // once: an UploadedMatrix copies its blocks out on every read
    if (data.length !== bytes) throw new RangeError(`${m.type} ${m.rows}×${m.cols} needs ${bytes} bytes, got ${data.length}`);
    const offset = this.top;
    const x4 = this.interleave && m.type !== 'f32' && m.type !== 'f16' && m.rows % 4 === 0;
    const layout = !x4 ? 'rows' : this.addon !== null ? 'x4h' : 'x4';
    const held = layout === 'x4h' ? x4hBytes(m.type as 'q4_0' | 'q4_1' | 'q8_0', m.rows, m.cols) : x4 ? this.fns.x4_bytes(GGML_TYPE_ID[m.type], m.rows, m.cols) : bytes;
    // Interleaving reads the file's blocks from scratch space just past the destination.
    const src = x4 ? align16(offset + held) : offset;
    this.ensure(src + bytes);
    new Uint8Array(this.memory.buffer, src, bytes).set(data);
    if (layout === 'x4h') this.addon!.kernels.repack_x4h(this.addon!.id, GGML_TYPE_ID[m.type], src, m.rows, m.cols, offset);
    else if (x4) this.fns.repack_x4(GGML_TYPE_ID[m.type], src, m.rows, m.cols, offset);
    this.top = align16(offset + held);
    return { type: m.type, rows: m.rows, cols: m.cols, offset, layout };
  }

  /**
   * Rows [r0, r1) of an uploaded matrix, copied back out in the file's layout (x4 groups
   * undone): what a model reads instead of keeping a second copy of its weights in
   * JavaScript memory — the tied token embedding gathers its rows here, and tests or
   * training that want f32 projections dequantize them from here.
   */
  read(w: KernelWeight, r0 = 0, r1 = w.rows): BlockMatrix {
    if (!(Number.isInteger(r0) && Number.isInteger(r1) && 0 <= r0 && r0 <= r1 && r1 <= w.rows)) throw new RangeError(`read: rows [${r0}, ${r1}) outside 0..${w.rows}`);
    const rb = rowBytes(w.type, w.cols);
    const data = new Uint8Array((r1 - r0) * rb);
    const mem = new Uint8Array(this.memory.buffer);
    if (w.layout === 'rows') {
      data.set(mem.subarray(w.offset + r0 * rb, w.offset + r1 * rb));
      return { type: w.type, rows: r1 - r0, cols: w.cols, data };
    }
    // matmul.c's repack_x4: per group of 4 rows and block b, the 4 scales as f32, the 4
    // offsets (Q4 only; for Q4_1 its mins), then the 4 rows' quants by column pairs (Q4
    // nibbles as repack_x4 packs them); a file block is scale [, min] as f16, quants (Q4:
    // value c in byte c & 15, low nibble for c < 16). The scales came from f16, so
    // converting back is exact. x4h (native/kernels.c): the 4 scales as f16, Q4_1's 4 mins
    // as f16, no Q4_0 offsets, then the same quants — but for Q8_0, whose quants go as 8
    // vectors of 4 rows × 4 columns (each row's 4 bytes together), the columns in the
    // order of the int8 activations (R8_POSITION).
    const nb = w.cols / QK;
    const bs = rb / nb;
    const q8 = w.type === 'q8_0';
    const head = w.type === 'q4_1' ? 4 : 2;
    const half = w.layout === 'x4h';
    const gb = half ? x4hBytes(w.type as 'q4_0' | 'q4_1' | 'q8_0', 4, QK) : this.fns.x4_bytes(GGML_TYPE_ID[w.type], 4, QK);
    const quantsAt = half ? (w.type === 'q4_1' ? 16 : 8) : q8 ? 16 : 32;
    const f32 = new Float32Array(this.memory.buffer);
    const putHalf = (at: number, x: number) => {
      const h = floatToHalf(x);
      data[at] = h & 0xff;
      data[at + 1] = h >> 8;
    };
    const putScale = (at: number, src: number, i: number) => {
      if (!half) return putHalf(at, f32[src / 4 + i]!);
      data[at] = mem[src + 2 * i]!;
      data[at + 1] = mem[src + 2 * i + 1]!;
    };
    for (let r = r0; r < r1; r++) {
      const g = r >> 2;
      const k = r & 3;
      for (let b = 0; b < nb; b++) {
        // x4h: groups stored two by two with their blocks interleaved (kernels.c x4h_block_at), an odd last one alone.
        const pairEnd = (w.rows >> 2) & ~1;
        const at = half && g < pairEnd ? (g & ~1) * nb + 2 * b + (g & 1) : g * nb + b;
        const src = w.offset + at * gb;
        const quants = src + quantsAt;
        const dst = (r - r0) * rb + b * bs;
        putScale(dst, src, k);
        if (head === 4) putScale(dst + 2, src, 4 + k);
        for (let c = 0; c < QK; c++) {
          const pair = c >> 1;
          const lane = 2 * k + (c & 1);
          if (q8 && half) {
            const p = (c & ~7) + R8_POSITION[c & 7]!;
            data[dst + head + c] = mem[quants + 16 * (p >> 2) + 4 * k + (p & 3)]!;
          } else if (q8) data[dst + head + c] = mem[quants + pair * 8 + lane]!;
          else {
            const e = pair & 3;
            const q = (mem[quants + (pair >> 2) * 16 + 2 * lane + (e >> 1)]! >> (4 * (e & 1))) & 15;
            data[dst + head + (c & 15)]! |= q << (c < 16 ? 0 : 4);
          }
        }
      }
    }
    return { type: w.type, rows: r1 - r0, cols: w.cols, data };
  }

  /** y (T, rows) = x (T, cols)·Wᵀ. */
  matmul(w: KernelWeight, x: Float32Array, T: number): Float32Array {
    return this.matmulMany([w], x, T)[0]!;
  }

  /**
   * Several products of one input (q/k/v, gate/up): the activations are copied and
   * quantized once for all of them. Weights must share cols. With `norm`, the rows are
   * RMS-normalised here first (rms_norm_rows: block-linear.ts's JavaScript arithmetic).
   */
  matmulMany(ws: KernelWeight[], x: Float32Array, T: number, norm: { weight: Float32Array; eps: number } | null = null): Float32Array[] {
    const cols = ws[0]!.cols;
    if (x.length !== T * cols) throw new RangeError(`matmul: x has ${x.length} values, expected ${T}×${cols}`);
    const { input, end } = this.rowsIn(x, T, cols, norm);
    const ys = this.multiply(ws, input, T, end);
    return ws.map((w, i) => new Float32Array(this.memory.buffer, ys[i]!, T * w.rows).slice());
  }

  /**
   * down(silu(x·gateᵀ) ⊙ x·upᵀ) without leaving wasm memory between the three products
   * (x is the normalised MLP input, (T, hidden)).
   */
  gatedMlp(gate: KernelWeight, up: KernelWeight, down: KernelWeight, x: Float32Array, T: number): Float32Array {
    const cols = gate.cols;
    if (x.length !== T * cols) throw new RangeError(`gatedMlp: x has ${x.length} values, expected ${T}×${cols}`);
    if (up.cols !== cols || up.rows !== gate.rows || down.cols !== gate.rows) throw new RangeError('gatedMlp: gate, up and down shapes disagree');
    const { input, end } = this.rowsIn(x, T, cols, null);
    const y = this.gatedMlpAt(gate, up, down, input, T, end);
    return new Float32Array(this.memory.buffer, y, T * down.rows).slice();
  }

  /**
   * Copies (T, cols) rows in at the top of the scratch space and, with `norm`, RMS-normalises
   * them into the space after (rms_norm_rows: block-linear.ts's JavaScript arithmetic):
   * where the products' input lies, and where free space starts after it.
   */
  private rowsIn(x: Float32Array, T: number, cols: number, norm: { weight: Float32Array; eps: number } | null): { input: number; end: number } {
    if (norm !== null && norm.weight.length !== cols) throw new RangeError(`matmul: norm weight has ${norm.weight.length} values, rows have ${cols}`);
    // Before taking the top: a norm weight seen for the first time is copied in there.
    const normW = norm === null ? 0 : this.constant(norm.weight);
    const xOff = this.top;
    const normed = align16(xOff + 4 * T * cols);
    const end = norm === null ? normed : align16(normed + 4 * T * cols);
    this.ensure(end);
    new Float32Array(this.memory.buffer, xOff, T * cols).set(x);
    if (norm === null) return { input: xOff, end };
    this.fns.rms_norm_rows(xOff, T, cols, normW, norm.eps, normed);
    return { input: normed, end };
  }

  /** gatedMlp on rows already at `x`, scratch from `from` on: the offset of down's output. */
  private gatedMlpAt(gate: KernelWeight, up: KernelWeight, down: KernelWeight, x: number, T: number, from: number): number {
    const [g, u] = this.multiply([gate, up], x, T, from) as [number, number];
    this.fns.silu_mul(g, u, T * gate.rows);
    // Past u's end: g stays where it is as the next input.
    return this.multiply([down], g, T, align16(u + 4 * T * up.rows))[0]!;
  }

  /**
   * The rest of a decoder layer after attention, its activations kept in this memory
   * throughout: x1 = x + attn·oᵀ (+ bo), then out = x1 + down(silu(n·gateᵀ) ⊙ n·upᵀ) with
   * n = RMSNorm(x1)·norm.weight. The same bits as block-linear.ts's JavaScript steps
   * around matmul and gatedMlp (matmul.c's rms_norm_rows and add_rows are that arithmetic),
   * with one copy in and one out instead of five, and no JavaScript loops over the rows.
   */
  mlpBlock(w: { o: KernelWeight; bo: Float32Array | null; norm: { weight: Float32Array; eps: number }; gate: KernelWeight; up: KernelWeight; down: KernelWeight }, attn: Float32Array, x: Float32Array, T: number): Float32Array {
    const { o, gate, up, down } = w;
    const hidden = o.rows;
    if (attn.length !== T * o.cols || x.length !== T * hidden) throw new RangeError(`mlpBlock: attn has ${attn.length} values and x ${x.length}, expected ${T}×${o.cols} and ${T}×${hidden}`);
    if (gate.cols !== hidden || up.cols !== hidden || up.rows !== gate.rows || down.cols !== gate.rows || down.rows !== hidden) throw new RangeError('mlpBlock: o, gate, up and down shapes disagree');
    // Zeros stand for a missing bias: JavaScript added 0 there (so −0 sums became +0).
    const bias = this.constant(w.bo ?? zeros(hidden));
    const normW = this.constant(w.norm.weight);
    const attnOff = this.top;
    const xOff = align16(attnOff + 4 * T * o.cols);
    const x1Off = align16(xOff + 4 * T * hidden);
    const nOff = align16(x1Off + 4 * T * hidden);
    const scratch = align16(nOff + 4 * T * hidden);
    this.ensure(scratch);
    new Float32Array(this.memory.buffer, attnOff, T * o.cols).set(attn);
    new Float32Array(this.memory.buffer, xOff, T * hidden).set(x);
    const [yo] = this.multiply([o], attnOff, T, scratch);
    this.fns.add_rows(xOff, yo!, bias, T, hidden, x1Off);
    this.fns.rms_norm_rows(x1Off, T, hidden, normW, w.norm.eps, nOff);
    const yd = this.gatedMlpAt(gate, up, down, nOff, T, scratch);
    this.fns.add_rows(x1Off, yd, 0, T, hidden, x1Off);
    return new Float32Array(this.memory.buffer, x1Off, T * hidden).slice();
  }

  /**
   * A layer's input projections as block-linear.ts computes them, in this memory: the rows
   * RMS-normalised (with `norm`), every weight multiplied, each output group assembled from
   * its parts (scaled, bias added: place_rows) and the groups `rotary` names rotated
   * (rotate_rows: cos/sin (T, dim/2) per row), then copied into `outs` (T × the group's width).
   */
  linearGroups(groups: readonly (readonly { weight: KernelWeight; scale?: number; bias?: Float32Array | null }[])[], x: Float32Array, T: number, norm: { weight: Float32Array; eps: number } | null, rotary: { outputs: number[]; dim: number; cos: Float32Array; sin: Float32Array } | null, outs: Float32Array[]): void {
    const parts = groups.flat();
    const cols = parts[0]!.weight.cols;
    if (x.length !== T * cols) throw new RangeError(`linearGroups: x has ${x.length} values, expected ${T}×${cols}`);
    const biases = parts.map((p) => (p.bias ? this.constant(p.bias) : 0));
    const widths = groups.map((g) => g.reduce((n, p) => n + p.weight.rows, 0));
    const { input, end } = this.rowsIn(x, T, cols, norm);
    let at = end;
    const take = (bytes: number) => ((at = align16(at + bytes)), at - align16(bytes));
    const outOffs = widths.map((w) => take(4 * T * w));
    const half = rotary === null ? 0 : rotary.dim / 2;
    const cosOff = take(4 * T * half);
    const sinOff = take(4 * T * half);
    this.ensure(at);
    const buf = this.memory.buffer;
    const ys = this.multiply(
      parts.map((p) => p.weight),
      input,
      T,
      at,
    );
    if (rotary !== null) {
      new Float32Array(buf, cosOff, T * half).set(rotary.cos);
      new Float32Array(buf, sinOff, T * half).set(rotary.sin);
    }
    let k = 0;
    groups.forEach((group, g) => {
      let col = 0;
      for (const p of group) {
        this.fns.place_rows(ys[k]!, T, p.weight.rows, p.scale ?? 1, biases[k]!, outOffs[g]!, widths[g]!, col);
        col += p.weight.rows;
        k++;
      }
      if (rotary?.outputs.includes(g)) this.fns.rotate_rows(outOffs[g]!, T, widths[g]!, rotary.dim, cosOff, sinOff);
      outs[g]!.set(new Float32Array(this.memory.buffer, outOffs[g]!, T * widths[g]!));
    });
  }

  /**
   * Whether `layer` can run op: native kernels with block_layers, q/k/v in three groups,
   * every weight in the native groups (x4h) or F32/F16. On the native pool's threads always
   * (the call splits its own products and attention); on threads.ts's worker
   * (SKEIN_NATIVE_POOL=0) only where the per-call path would split nothing over it (every
   * product and attention call below splitMinWork: a decode step's layers, not a prefill
   * chunk's), so the second thread keeps what it gains there; without `seqs` the weights
   * alone are judged.
   */
  fusesLayer(op: LayerWeights & { shape?: AttentionShape; seqs?: readonly { n: number; keys: readonly KernelChunk[] }[] }): boolean {
    return this.fusedPlan(op) !== null;
  }

  /** The plan `layer` runs op by, where it can (fusesLayer), else null. */
  private fusedPlan(op: LayerWeights & { shape?: AttentionShape; seqs?: readonly { n: number; keys: readonly KernelChunk[] }[] }): LayerPlan | null {
    const plan = this.fuseLayers ? this.layerPlan(op) : null;
    if (plan === null || this.threads === 1 || this.nativePool || op.seqs === undefined || op.shape === undefined) return plan;
    let T = 0;
    for (const s of op.seqs) T += s.n;
    if (T * plan.mostWork >= this.splitMinWork) return null;
    const { heads: H, headDim: D } = op.shape;
    for (const s of op.seqs) {
      let S = s.n;
      for (const c of s.keys) S += c.rows;
      if (2 * s.n * S * H * D >= this.splitMinWork) return null;
    }
    return plan;
  }

  /** Whether `layer` is taken where it can run (default true, unless SKEIN_FUSED_LAYER=0; off, block-layer.ts runs the same steps call by call — tests and benches compare the two). */
  setFusedLayers(on: boolean): void {
    this.fuseLayers = on;
  }

  /**
   * The words of layer.inc.c's plan that depend only on the layer's weights (its weights'
   * descriptors, the q/k/v scales, the norms' and biases' constants), made once per layer:
   * a decode step runs `layer` for every layer, and building them each time was ~40 µs of
   * JavaScript a call. null where the layer cannot be fused.
   */
  private layerPlan(op: LayerWeights): LayerPlan | null {
    const cached = this.layerPlans.get(op.groups);
    if (cached !== undefined && (cached === null || (cached.mlp === op.mlp && cached.norm === op.norm))) return cached;
    const plan = this.makeLayerPlan(op);
    this.layerPlans.set(op.groups, plan);
    return plan;
  }

  private makeLayerPlan(op: LayerWeights): LayerPlan | null {
    if (this.addon?.kernels.block_layers === undefined || op.groups.length !== 3) return null;
    const fits = (w: KernelWeight) => w.type === 'f32' || w.type === 'f16' || w.layout === 'x4h';
    const { o, gate, up, down } = op.mlp;
    if (!op.groups.every((g) => g.length >= 1 && g.every((p) => fits(p.weight))) || ![o, gate, up, down].every(fits)) return null;
    const parts = op.groups.flatMap((g, group) => g.map((p) => ({ ...p, group })));
    const cols = parts[0]!.weight.cols;
    const hidden = o.rows;
    const inter = gate.rows;
    const widths = op.groups.map((g) => g.reduce((n, p) => n + p.weight.rows, 0)) as [number, number, number];
    if (parts.some((p) => p.weight.cols !== cols) || widths[1] !== widths[2] || o.cols !== widths[0]) throw new RangeError(`layer: q/k/v groups ${widths.join('/')} wide over ${cols} columns do not fit o (${o.rows}×${o.cols})`);
    if (gate.cols !== hidden || up.cols !== hidden || up.rows !== inter || down.cols !== inter || down.rows !== hidden || hidden !== cols) throw new RangeError('layer: o, gate, up and down shapes disagree');
    const weights = new Int32Array((parts.length + 4) * PLAN_WEIGHT);
    let w = 0;
    const weight = (k: KernelWeight, group: number, bias: number) => {
      weights.set([GGML_TYPE_ID[k.type], k.offset, k.rows, k.cols, group, bias], w);
      w += PLAN_WEIGHT;
    };
    for (const p of parts) weight(p.weight, p.group, p.bias ? this.constant(p.bias) : 0);
    for (const k of [o, gate, up, down]) weight(k, 0, 0);
    const doubles = new Float64Array([op.norm?.eps ?? 0, op.mlp.norm.eps, ...parts.map((p) => p.scale ?? 1)]);
    return {
      mlp: op.mlp,
      norm: op.norm,
      weights,
      doubles,
      parts: parts.length,
      partRows: parts.reduce((n, p) => n + align16(4 * p.weight.rows), 0),
      mostWork: Math.max(...parts.map((p) => p.weight.rows * p.weight.cols), ...[o, gate, up, down].map((k) => k.rows * k.cols)),
      cols,
      hidden,
      inter,
      qd: widths[0],
      kvd: widths[1],
      normW: op.norm === null ? 0 : this.constant(op.norm.weight),
      // Zeros stand for a missing o bias, as mlpBlock passes them.
      bo: this.constant(op.mlp.bo ?? zeros(hidden)),
      mlpNorm: this.constant(op.mlp.norm.weight),
    };
  }

  /**
   * A whole decoder layer in one native call (native/layer.inc.c) — the steps block-layer.ts
   * otherwise runs through linearGroups, store, attention and mlpBlock, with the same bits:
   * x (T, hidden) → xOut, the new K/V rows into kOut/vOut (T × kvHeads·headDim each), and
   * each sequence's new rows stored for attention (as `store` does), returned for the KV
   * mirror. Only where `fusesLayer(op)`.
   */
  layer(op: FusedLayerOp, x: Float32Array, T: number, xOut: Float32Array, kOut: Float32Array, vOut: Float32Array): { kChunks: KernelChunk[]; vChunks: KernelChunk[] } {
    return this.layers([op], x, T, xOut, [[kOut, vOut]])[0]!;
  }

  /**
   * Consecutive decoder layers in one native call: `layer` for each op in turn, the rows
   * staying in this memory from one layer to the next; kvOut[i] receives layer i's new K
   * and V rows. A decode step's 30 layers then cost one call instead of 30, each with its
   * tfjs dispatch, scope and copies of the rows in and out (forward.ts takes this where no
   * sequence prunes, revives or wants attention rows).
   */
  layers(ops: readonly FusedLayerOp[], x: Float32Array, T: number, xOut: Float32Array, kvOut: readonly (readonly [Float32Array, Float32Array])[]): { kChunks: KernelChunk[]; vChunks: KernelChunk[] }[] {
    const plans = ops.map((op) => this.fusedPlan(op));
    if (ops.length === 0 || plans.some((p) => p === null)) throw new RangeError('layer: these weights or this instance take the per-call path (fusesLayer)');
    if (kvOut.length !== ops.length) throw new RangeError(`layers: ${kvOut.length} K/V outputs for ${ops.length} layers`);
    const first = plans[0]!;
    // Checks, then each layer's new chunks (each may take memory at the top), then the call's own space past the top.
    const out = ops.map((op, l) => {
      const plan = plans[l]!;
      const { heads: H, kvHeads: KV, headDim: D } = op.shape;
      const { cols, hidden, qd, kvd } = plan;
      const [kOut, vOut] = kvOut[l]!;
      if (qd !== H * D || kvd !== KV * D) throw new RangeError(`layer: q/k/v groups ${qd}/${kvd} wide, the shape needs ${H * D}/${KV * D}`);
      if (cols !== first.cols || hidden !== first.hidden || x.length !== T * cols || xOut.length !== T * hidden || kOut.length !== T * kvd || vOut.length !== T * kvd) throw new RangeError(`layer: rows disagree (x ${x.length}, T ${T}, cols ${cols})`);
      let rows = 0;
      for (const s of op.seqs) rows += s.n;
      if (rows !== T) throw new RangeError(`layer: sequences hold ${rows} rows, x has ${T}`);
      if (op.rotary !== null && op.rotary.cos.length !== (T * op.rotary.dim) / 2) throw new RangeError('layer: rotary tables for other than T rows');
      return { kChunks: [] as KernelChunk[], vChunks: [] as KernelChunk[] };
    });
    ops.forEach((op, l) => {
      for (const s of op.seqs) {
        out[l]!.kChunks.push(this.reserveChunk(s.n, plans[l]!.kvd, op.shape.kvHeads, op.kv, true));
        out[l]!.vChunks.push(this.reserveChunk(s.n, plans[l]!.kvd, op.shape.kvHeads, op.kv));
      }
    });
    const { cols, hidden } = first;
    let at = this.top;
    const take = (bytes: number) => {
      const o = at;
      at = align16(at + bytes);
      return o;
    };
    // The rows: in at the first buffer, each layer's out at the other.
    const xs = [take(4 * T * cols), take(4 * T * hidden)];
    const chain = take(4 * ops.length);
    // Tables shared by every layer are written once: the rotary rows, each sequence's mask.
    const shared = new Map<Float32Array | Uint8Array, number>();
    const once = (v: Float32Array | Uint8Array) => {
      let o = shared.get(v);
      if (o === undefined) {
        o = take(v.byteLength);
        this.ensure(at);
        (v instanceof Float32Array ? new Float32Array(this.memory.buffer, o, v.length) : new Uint8Array(this.memory.buffer, o, v.length)).set(v);
        shared.set(v, o);
      }
      return o;
    };
    let scratchBytes = 0;
    const planAt = ops.map((op, l) => {
      const plan = plans[l]!;
      const { qd, kvd, inter } = plan;
      const nseq = op.seqs.length;
      const planWords = PLAN_HEADER + plan.weights.length + nseq * PLAN_SEQ;
      const planOff = take(4 * planWords);
      const doublesOff = take(plan.doubles.byteLength);
      const kOff = take(4 * T * kvd);
      const vOff = take(4 * T * kvd);
      const cosOff = op.rotary === null ? 0 : once(op.rotary.cos);
      const sinOff = op.rotary === null ? 0 : once(op.rotary.sin);
      const seqWords: number[] = [];
      op.seqs.forEach((s, i) => {
        this.runsOf(s.keys, s.values, s.n, s.visible, op.shape, out[l]!.kChunks[i], out[l]!.vChunks[i]);
        const table = take(4 * TABLE_COLUMNS * this.runCount);
        this.ensure(at);
        this.writeTable(table);
        seqWords.push(s.n, this.runCount, table, once(s.visible), out[l]!.kChunks[i]!.offset, out[l]!.vChunks[i]!.offset);
      });
      // layer.inc.c's scratch (16-byte steps): normed rows, q, the parts' outputs, attention's output, the store's f32
      // rows, the MLP's rows; besides them one product's int8 activations at a time (attention's scores are each
      // thread's own, outside this memory).
      const nb = Math.max(cols, qd, inter) / QK;
      scratchBytes = Math.max(
        scratchBytes,
        align16(4 * T * cols) + 2 * align16(4 * T * qd) + T * plan.partRows + align16(4 * T * kvd) + 4 * align16(4 * T * hidden) + 2 * align16(4 * T * inter) + align16(T * nb * QK) + 2 * align16(4 * T * nb),
      );
      return { planOff, planWords, doublesOff, kOff, vOff, cosOff, sinOff, seqWords };
    });
    const scratch = take(scratchBytes);
    this.ensure(at);
    const buf = this.memory.buffer;
    new Float32Array(buf, xs[0]!, T * cols).set(x);
    const chainWords = new Int32Array(buf, chain, ops.length);
    const header = this.planHeader;
    ops.forEach((op, l) => {
      const plan = plans[l]!;
      const p = planAt[l]!;
      chainWords[l] = p.planOff;
      new Float64Array(buf, p.doublesOff, plan.doubles.length).set(plan.doubles);
      const words = new Int32Array(buf, p.planOff, p.planWords);
      const { heads: H, kvHeads: KV, headDim: D } = op.shape;
      header[0] = T;
      header[1] = plan.cols;
      header[2] = H;
      header[3] = KV + 65536 * KV_TYPE_CODE[op.kv];
      header[4] = D;
      header[5] = op.seqs.length;
      header[6] = xs[l % 2]!;
      header[7] = xs[(l + 1) % 2]!;
      header[8] = p.kOff;
      header[9] = p.vOff;
      header[10] = scratch;
      header[11] = p.doublesOff;
      header[12] = plan.normW;
      header[13] = plan.parts;
      header[14] = p.cosOff;
      header[15] = p.sinOff;
      header[16] = op.rotary?.dim ?? 0;
      let rotated = 0;
      for (const g of op.rotary?.outputs ?? []) rotated |= 1 << g;
      header[17] = rotated;
      header[18] = plan.bo;
      header[19] = plan.mlpNorm;
      words.set(header);
      words.set(plan.weights, PLAN_HEADER);
      words.set(p.seqWords, PLAN_HEADER + plan.weights.length);
    });
    this.syncPool();
    this.addon!.kernels.block_layers!(this.addon!.id, chain, ops.length);
    xOut.set(new Float32Array(buf, xs[ops.length % 2]!, T * hidden));
    ops.forEach((_, l) => {
      const [kOut, vOut] = kvOut[l]!;
      kOut.set(new Float32Array(buf, planAt[l]!.kOff, kOut.length));
      vOut.set(new Float32Array(buf, planAt[l]!.vOff, vOut.length));
    });
    return out;
  }

  /** Where `v` lies in this memory (copied in on first use; its values must not change after). */
  private constant(v: Float32Array): number {
    let at = this.constants.get(v);
    if (at === undefined) {
      at = this.top;
      this.ensure(at + v.byteLength);
      new Float32Array(this.memory.buffer, at, v.length).set(v);
      this.top = align16(at + v.byteLength);
      this.constants.set(v, at);
    }
    return at;
  }

  /**
   * Copies f32 rows (rows, heads·D) into this memory, where they stay until `free`: KV cache
   * chunks that attention then reads in place, step after step (kv-mirror.ts). Stored head
   * by head — head g's D values of row r at (g·rows + r)·D — the layout matmul.c's
   * attention reads sequentially; `heads` must be the kvHeads the attention calls give.
   * `keys` (with kv 'f16'): each head's rows in groups of four instead (groupedAt).
   */
  store(data: Float32Array, rows: number, heads: number, kv: KvType = 'f32', keys = false): KernelChunk {
    const width = data.length / rows;
    if (!(Number.isInteger(width) && Number.isInteger(heads) && heads >= 1 && width % heads === 0)) throw new RangeError(`store: ${data.length} values are not ${rows} rows of ${heads} heads`);
    const D = width / heads;
    const chunk = this.reserveChunk(rows, width, heads, kv, keys);
    const { offset } = chunk;
    // f16, q8: laid out in f32 in the scratch space past the weights first, then narrowed into place.
    const narrowed = kv !== 'f32';
    const at = narrowed ? this.top : offset;
    if (narrowed) this.ensure(at + data.byteLength);
    const dst = new Float32Array(this.memory.buffer, at, data.length);
    // Grouped keys value by value rather than a `set` of a `subarray` per four-value piece:
    // a 16-row block of SmolLM2's keys is 768 pieces, 38–50 µs with the subarrays against
    // 2.5–2.7 (30 such blocks every 16 decode steps). A row's head by rows is one `set`.
    if (chunk.grouped && rows > 1) {
      for (let g = 0; g < heads; g++) {
        for (let r = 0; r < rows; r++) {
          const from = r * width + g * D;
          for (let d = 0; d < D; d += 4) {
            const to = g * rows * D + groupedAt(rows, r, d, D);
            dst[to] = data[from + d]!;
            dst[to + 1] = data[from + d + 1]!;
            dst[to + 2] = data[from + d + 2]!;
            dst[to + 3] = data[from + d + 3]!;
          }
        }
      }
    } else if (rows === 1 || heads === 1) dst.set(data);
    else for (let g = 0; g < heads; g++) for (let r = 0; r < rows; r++) dst.set(data.subarray(r * width + g * D, r * width + (g + 1) * D), (g * rows + r) * D);
    if (kv === 'f16') this.fns.store_f16(at, data.length, offset);
    if (kv === 'q8') this.fns.store_q8(at, rows * heads, D, offset);
    return chunk;
  }

  /** A stored chunk's memory for rows of `width` values (as `store` lays them out: f16 keys grouped), not yet written. */
  private reserveChunk(rows: number, width: number, heads: number, kv: KvType, keys = false): KernelChunk {
    const offset = this.allocChunk(storedBytes(rows * heads * kvRowBytes(width / heads, kv)));
    return storesGrouped(kv, keys) ? { offset, rows, heads, kv, grouped: true } : { offset, rows, heads, kv };
  }

  /** Memory for a stored chunk of `bytes` (storedBytes): a freed one of that size, else past the top. */
  private allocChunk(bytes: number): number {
    let offset = this.freeChunks.get(bytes)?.pop();
    if (offset === undefined) {
      offset = this.top;
      this.ensure(offset + bytes);
      this.top = align16(offset + bytes);
    }
    this.chunkBytes.set(offset, bytes);
    return offset;
  }

  /**
   * Rows first..first+rows-1 of a stored chunk (or of a view) as a chunk that shares its
   * memory: attention reads it in place through its stride. The KV mirror cuts a prompt's
   * stored K and V into the cache's blocks this way instead of storing every block again,
   * and attention joins views that follow each other into one run (see attention).
   */
  view(c: KernelChunk, first: number, rows: number, headDim: number): KernelChunk {
    if (!(Number.isInteger(first) && Number.isInteger(rows) && first >= 0 && rows >= 1 && first + rows <= c.rows)) throw new RangeError(`view: rows ${first}..${first + rows - 1} of a chunk of ${c.rows}`);
    const offset = c.offset + first * kvRowBytes(headDim, c.kv), stride = c.stride ?? c.rows;
    return c.grouped ? { offset, rows, heads: c.heads, kv: c.kv, stride, grouped: true, first: (c.first ?? 0) + first } : { offset, rows, heads: c.heads, kv: c.kv, stride };
  }

  /**
   * One stored chunk holding the rows of `chunks` in order (chunks or views of one head
   * count and type), copied within this memory head by head: the KV mirror joins a
   * sequence's sealed blocks so that attention reads them as one run, and gives a view
   * that outlived most of its stored chunk a copy of its own.
   */
  join(chunks: readonly KernelChunk[], headDim: number): KernelChunk {
    const first = chunks[0];
    if (first === undefined) throw new RangeError('join: no chunks');
    let rows = 0;
    for (const c of chunks) {
      if (c.heads !== first.heads || c.kv !== first.kv || c.grouped !== first.grouped) throw new RangeError('join: chunks of one head count, type and layout only');
      rows += c.rows;
    }
    const rowBytes = kvRowBytes(headDim, first.kv);
    const bytes = storedBytes(rows * first.heads * rowBytes);
    const offset = this.allocChunk(bytes);
    if (first.grouped) {
      this.joinGrouped(chunks, headDim, offset, rows);
      return { offset, rows, heads: first.heads, kv: first.kv, grouped: true };
    }
    const mem = new Uint8Array(this.memory.buffer);
    for (let g = 0; g < first.heads; g++) {
      let at = offset + g * rows * rowBytes;
      for (const c of chunks) {
        const from = c.offset + g * (c.stride ?? c.rows) * rowBytes;
        mem.copyWithin(at, from, from + c.rows * rowBytes);
        at += c.rows * rowBytes;
      }
    }
    return { offset, rows, heads: first.heads, kv: first.kv };
  }

  /**
   * join's copy of grouped keys (f16) into the stored chunk at `offset` of `rows` rows: whole
   * groups where a source group and a destination group line up (a 16-row block's four),
   * else a piece (four values) at a time.
   */
  private joinGrouped(chunks: readonly KernelChunk[], D: number, offset: number, rows: number): void {
    const mem = new Uint16Array(this.memory.buffer);
    for (let g = 0; g < chunks[0]!.heads; g++) {
      const to = offset / 2 + g * rows * D;
      let row = 0;
      for (const c of chunks) {
        const first = c.first ?? 0, stride = c.stride ?? c.rows;
        const from = (c.offset - first * D * 2) / 2 + g * stride * D;
        for (let i = 0; i < c.rows; ) {
          const r = first + i, at = row + i;
          if ((r & 3) === 0 && (at & 3) === 0 && i + 4 <= c.rows && r + 4 <= stride && at + 4 <= rows) {
            mem.copyWithin(to + at * D, from + r * D, from + (r + 4) * D);
            i += 4;
            continue;
          }
          // Value by value, as `store` lays grouped keys out: a copyWithin per four values
          // made joining a decode block's sixteen one-row chunks cost as much as storing it.
          for (let d = 0; d < D; d += 4) {
            const src = from + groupedAt(stride, r, d, D), dst = to + groupedAt(rows, at, d, D);
            mem[dst] = mem[src]!;
            mem[dst + 1] = mem[src + 1]!;
            mem[dst + 2] = mem[src + 2]!;
            mem[dst + 3] = mem[src + 3]!;
          }
          i++;
        }
        row += c.rows;
      }
    }
  }

  /** A chunk's values as stored (head by head, rows in order; f16 ones widened back to f32, q8 ones as q·scale). */
  readChunk(c: KernelChunk, width: number): Float32Array {
    const D = width / c.heads;
    const stride = c.stride ?? c.rows;
    const rowBytes = kvRowBytes(D, c.kv);
    const out = new Float32Array(c.rows * width);
    for (let g = 0; g < c.heads; g++) {
      const at = c.offset + g * stride * rowBytes;
      const n = c.rows * D;
      if (c.grouped) {
        const first = c.first ?? 0;
        const head = new Uint16Array(this.memory.buffer, c.offset - first * rowBytes + g * stride * rowBytes, stride * D);
        for (let r = 0; r < c.rows; r++) for (let d = 0; d < D; d += 4) for (let e = 0; e < 4; e++) out[g * n + r * D + d + e] = halfToFloat(head[groupedAt(stride, first + r, d, D) + e]!);
      } else if (c.kv === 'f16') out.set(Array.from(new Uint16Array(this.memory.buffer, at, n), halfToFloat), g * n);
      else if (c.kv === 'f32') out.set(new Float32Array(this.memory.buffer, at, n), g * n);
      else {
        const bytes = new DataView(this.memory.buffer, at, c.rows * rowBytes);
        for (let r = 0; r < c.rows; r++) {
          const scale = bytes.getFloat32(r * rowBytes + D, true);
          for (let d = 0; d < D; d++) out[g * n + r * D + d] = Math.fround(bytes.getInt8(r * rowBytes + d) * scale);
        }
      }
    }
    return out;
  }

  /** Gives a stored chunk's memory back for reuse (not a view's: it has none of its own). */
  free(chunk: KernelChunk): void {
    if (chunk.stride !== undefined) throw new RangeError('free: a view holds no memory of its own; free the chunk it lies in');
    const bytes = this.chunkBytes.get(chunk.offset);
    if (bytes === undefined) throw new RangeError(`free: no stored chunk at ${chunk.offset}`);
    this.chunkBytes.delete(chunk.offset);
    const list = this.freeChunks.get(bytes);
    if (list) list.push(chunk.offset);
    else this.freeChunks.set(bytes, [chunk.offset]);
  }

  /** Bytes held by stored chunks (live ones). */
  get storedBytes(): number {
    let n = 0;
    for (const b of this.chunkBytes.values()) n += b;
    return n;
  }

  /**
   * Attention of n new query rows (n, heads·headDim), already scaled, over keys and values
   * stored in this memory (`store`) as chunks in position order: P cached rows, then the n
   * new ones (each row kvHeads·headDim). `visible[i·n + j]` says whether new row i sees new
   * key j; every cached key is visible. Each row's result depends only on its own query
   * and the keys it sees (matmul.c's attention), never on the other rows or on how the keys
   * are chunked. With `wantLast`, also the last row's probabilities over all S keys,
   * averaged over heads.
   */
  attention(q: ArrayLike<number> & { length: number }, keys: readonly KernelChunk[], values: readonly KernelChunk[], n: number, visible: Uint8Array, shape: AttentionShape, wantLast = false): { out: Float32Array; last: Float32Array | null } {
    const { heads: H, kvHeads: KV, headDim: D } = shape;
    if (D % 4 !== 0 || D > 512) throw new RangeError(`attention kernel needs headDim a multiple of 4 up to 512, got ${D}`);
    if (H % KV !== 0) throw new RangeError(`attention: ${H} heads do not group over ${KV} kv heads`);
    const qd = H * D;
    if (q.length !== n * qd) throw new RangeError(`attention: shapes disagree (q ${q.length}, n ${n})`);
    const { S, P, kv } = this.runsOf(keys, values, n, visible, shape);
    const chunks = this.runCount;
    const qOff = this.top;
    const tableOff = align16(qOff + 4 * n * qd); // writeTable's columns, int32 each
    const visOff = align16(tableOff + 4 * TABLE_COLUMNS * chunks);
    const scoresOff = align16(visOff + n * n);
    // Scores of up to HEADS_AT_ONCE (4) heads per thread; the kernel thread's after ours.
    const scores2Off = align16(scoresOff + 16 * S);
    const outOff = align16(scores2Off + 16 * S);
    const lastOff = align16(outOff + 4 * n * qd);
    this.ensure(lastOff + 4 * S);
    const buf = this.memory.buffer;
    new Float32Array(buf, qOff, n * qd).set(q);
    this.writeTable(tableOff);
    new Uint8Array(buf, visOff, n * n).set(visible);
    // The kernel takes the KV type above the KV head count (65536·code + KV).
    const args = (scores: number, h0: number, h1: number) => [qOff, tableOff, tableOff + 4 * chunks, tableOff + 8 * chunks, chunks, P, n, visOff, H, KV + 65536 * KV_TYPE_CODE[kv], D, scores, outOff, wantLast ? lastOff : 0, h0, h1];
    // The last row's key weights sum over every head in one call; otherwise heads split.
    if (wantLast) this.fns.attention(...(args(scoresOff, 0, H) as Parameters<Exports['attention']>));
    else this.split('attention', 0, H, 2 * n * S * H * D, (a, b) => args(a === 0 ? scoresOff : scores2Off, a, b));
    return {
      out: new Float32Array(buf, outOff, n * qd).slice(),
      last: wantLast ? new Float32Array(buf, lastOff, S).slice() : null,
    };
  }

  /**
   * Checks an attention call's chunks and fills `this.runs` with them as the kernel reads
   * them. Chunks that continue each other in memory — views of one stored chunk in order,
   * keys and values alike — go to the kernel as one run: a 1,024-token prompt cut into
   * 16-row blocks is read in 128-row runs again (a decode row's attention over 16-row
   * blocks took ~1.5× as long as over one chunk, its KV out of cache). Plain loops: an
   * engine step makes this call per layer over every block of the sequence (64 of them at
   * 1,024 tokens), and spreads of the chunk lists were garbage.
   */
  private runsOf(keys: readonly KernelChunk[], values: readonly KernelChunk[], n: number, visible: Uint8Array, shape: AttentionShape, lastKey?: KernelChunk, lastValue?: KernelChunk): { S: number; P: number; kv: KvType } {
    const { kvHeads: KV, headDim: D } = shape;
    // With lastKey/lastValue: the chunks after keys/values (a layer's new rows), as if appended.
    const count = keys.length + (lastKey === undefined ? 0 : 1);
    const keyAt = (c: number) => (c < keys.length ? keys[c]! : lastKey!);
    const valueAt = (c: number) => (c < values.length ? values[c]! : lastValue!);
    let S = 0;
    for (let c = 0; c < count; c++) S += keyAt(c).rows;
    const P = S - n;
    const kv: KvType = count > 0 ? keyAt(0).kv : 'f32';
    let rowsAgree = values.length === keys.length && (lastKey === undefined) === (lastValue === undefined);
    for (let c = 0; c < count; c++) {
      const k = keyAt(c);
      const v = valueAt(c);
      if (k.heads !== KV || v.heads !== KV) throw new RangeError(`attention: chunks stored by other than ${KV} heads`);
      if (k.kv !== kv || v.kv !== kv) throw new RangeError(`attention: chunks of KV types ${kv} and ${k.kv !== kv ? k.kv : v.kv} mixed`);
      if (rowsAgree) rowsAgree = v.rows === k.rows;
    }
    if (P < 0 || !rowsAgree || visible.length !== n * n) throw new RangeError(`attention: shapes disagree (${S} keys, n ${n})`);
    const rowBytes = kvRowBytes(D, kv);
    const runs = this.runs;
    let used = 0;
    for (let c = 0; c < count; c++) {
      const k = keyAt(c);
      const v = valueAt(c);
      const last = used > 0 ? runs[used - 1]! : undefined;
      const ks = k.stride ?? k.rows;
      const vs = v.stride ?? v.rows;
      // Grouped keys' groups count from their stored chunk's first row: a run stays within one stored chunk.
      const kFirst = k.grouped ? (k.first ?? 0) : -1;
      if (last !== undefined && last.kStride === ks && last.vStride === vs && k.offset === last.k + last.rows * rowBytes && v.offset === last.v + last.rows * rowBytes && (kFirst < 0 ? last.kFirst < 0 : last.kFirst >= 0 && kFirst === last.kFirst + last.rows)) last.rows += k.rows;
      else {
        const run = runs[used] ?? (runs[used] = { k: 0, v: 0, rows: 0, kStride: 0, vStride: 0, kFirst: -1 });
        run.k = k.offset;
        run.v = v.offset;
        run.rows = k.rows;
        run.kStride = ks;
        run.vStride = vs;
        run.kFirst = kFirst;
        used++;
      }
    }
    this.runCount = used;
    return { S, P, kv };
  }

  /** `this.runs` as the attention kernel's chunk table at `at`: kc | vc | rows | key strides | value strides | grouped keys' first rows (−1: by rows), int32 each. */
  private writeTable(at: number): void {
    const runs = this.runs;
    const chunks = this.runCount;
    const table = new Int32Array(this.memory.buffer, at, TABLE_COLUMNS * chunks);
    for (let c = 0; c < chunks; c++) {
      const r = runs[c]!;
      table[c] = r.k;
      table[chunks + c] = r.v;
      table[2 * chunks + c] = r.rows;
      table[3 * chunks + c] = r.kStride;
      table[4 * chunks + c] = r.vStride;
      table[5 * chunks + c] = r.kFirst;
    }
  }

  /**
   * Runs every weight on the (T, cols) f32 rows at `xOff`, using memory from `from` on for
   * outputs and quantized activations; returns the outputs' offsets.
   */
  private multiply(ws: KernelWeight[], xOff: number, T: number, from: number): number[] {
    const cols = ws[0]!.cols;
    for (const w of ws) if (w.cols !== cols) throw new RangeError(`matmulMany: weights disagree on cols (${w.cols} vs ${cols})`);
    const nb = cols / QK;
    // Scratch layout: y per weight | q8 activations (qa, da, sa) | q4-ordered ones | int8 ones (r8).
    let p = from;
    const yOffs = ws.map((w) => {
      const o = p;
      p = align16(p + 4 * T * w.rows);
      return o;
    });
    const kindOf = (w: KernelWeight) => activationKind(w, this.relaxed);
    const kinds = new Set(ws.map(kindOf));
    const act: Partial<Record<'q8' | 'q4' | 'r8', [number, number, number]>> = {};
    for (const kind of ['q8', 'q4', 'r8'] as const) {
      if (!kinds.has(kind)) continue;
      const qa = p;
      const da = align16(qa + (kind === 'r8' ? 1 : 2) * T * cols);
      const sa = align16(da + 4 * T * nb);
      p = align16(sa + 4 * T * nb);
      act[kind] = [qa, da, sa];
    }
    this.ensure(p);
    for (const kind of ['q8', 'q4', 'r8'] as const) {
      const a = act[kind];
      if (a === undefined) continue;
      if (kind === 'r8') this.fns.quantize_rows_r8!(xOff, T, cols, a[0], a[1], a[2]);
      else this.fns.quantize_rows(xOff, T, cols, a[0], a[1], a[2], kind === 'q4' ? 1 : 0);
    }
    ws.forEach((w, i) => {
      const y = yOffs[i]!;
      const kind = kindOf(w);
      const id = GGML_TYPE_ID[w.type];
      const work = w.rows * cols * T;
      if (kind === 'float') this.split('matmul_float', 0, w.rows, work, (a, b) => [id, w.offset, w.rows, cols, xOff, T, y, a, b]);
      else if (kind === 'r8') {
        const [qa, da, sa] = act.r8!;
        this.split('matmul_x4r', 0, w.rows / 4, work, (a, b) => [id, w.offset, w.rows, cols, qa, da, sa, T, y, a, b]);
      } else {
        const [qa, da, sa] = act[kind]!;
        if (w.layout !== 'rows') this.split('matmul_x4', 0, w.rows / 4, work, (a, b) => [id, w.offset, w.rows, cols, qa, da, sa, T, y, a, b]);
        else this.split('matmul_quant', 0, w.rows, work, (a, b) => [id, w.offset, w.rows, cols, qa, da, sa, T, y, a, b]);
      }
    });
    return yOffs;
  }
}

/**
 * A matrix that lives only in a MatmulKernels' memory: uploaded as it was read from the
 * file, its JavaScript bytes dropped, so a model holds its weights once. It is still a
 * BlockMatrix — reading `data` copies the blocks back out (`MatmulKernels.read`), which
 * only tests, the reference forward and training do.
 */
export class UploadedMatrix implements BlockMatrix {
  readonly type: BlockType;
  readonly rows: number;
  readonly cols: number;

  constructor(
    readonly kernels: MatmulKernels,
    readonly weight: KernelWeight,
  ) {
    this.type = weight.type;
    this.rows = weight.rows;
    this.cols = weight.cols;
  }

  /** Uploads `m` into `kernels`. */
  static upload(kernels: MatmulKernels, m: BlockMatrix): UploadedMatrix {
    return new UploadedMatrix(kernels, kernels.upload(m));
  }

  get data(): Uint8Array {
    return this.kernels.read(this.weight).data;
  }
}
