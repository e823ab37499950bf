/**
 * The native kernels (native/kernels.c, built at install time by native/build.mjs into
 * native/build/skein-kernels.node) where they were built and this CPU runs them; null
 * otherwise, and the wasm build runs instead. SKEIN_NATIVE=0 keeps the wasm build.
 * matmul.ts checks their answers against the wasm ones before using them. They are the Q4
 * and Q8_0 x4 products written for AVX2, and matmul.c's float kernels (F32/F16 products,
 * the SwiGLU gate, f16 narrowing, attention) compiled from the same source. The quantized
 * products run on AVX-512 VNNI where the CPU has it (isa; SKEIN_NATIVE_AVX512=0 keeps them
 * on AVX2): the same bits.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The addon's functions: the wasm exports' arguments after the id of a registered memory. */
export interface NativeKernels {
  supported(): boolean;
  /** Registers a shared wasm memory (a Uint8Array over all of it) and returns its id. */
  register(view: Uint8Array): number;
  /** Marks the first `bytes` of a registered memory for transparent huge pages (Linux madvise); whether the OS took it. Absent from addons built before it. */
  huge_pages?(id: number, bytes: number): boolean;
  /** A file's Q4_0 / Q4_1 / Q8_0 rows at src into the addon's x4h groups at dst (x4hBytes of them): matmul.c's x4 groups with f16 scales, Q8_0's quants ordered for 8-bit products. */
  repack_x4h(id: number, type: number, src: number, rows: number, cols: number, dst: number): void;
  /** matmul_x4r on x4h groups: Q4_0, Q4_1, and Q8_0 on the same int8 activations (quantize_rows_r8). */
  matmul_x4r(id: number, type: number, w: number, rows: number, cols: number, qa: number, da: number, sa: number, T: number, y: number, g0: number, g1: number): void;
  matmul_float(id: number, type: number, w: number, rows: number, cols: number, x: number, T: number, y: number, r0: number, r1: number): void;
  silu_mul(id: number, g: number, u: number, n: number): void;
  /** matmul.c's quantize_rows with q4Order 0 (throws for 1) and quantize_rows_r8: the same bytes. */
  quantize_rows(id: number, x: number, T: number, cols: number, qa: number, da: number, sa: number, q4Order: number): void;
  quantize_rows_r8(id: number, x: number, T: number, cols: number, qa: number, da: number, sa: number): void;
  store_f16(id: number, src: number, n: number, dst: number): void;
  store_q8(id: number, src: number, rows: number, D: number, dst: number): void;
  /** Which build of the quantized products runs ("avx512": AVX-512 F/BW/VL/VNNI where the CPU has them, else "avx2"); with a name, switches to it (the same bits; throws for one the CPU lacks). */
  isa(name?: 'avx2' | 'avx512'): 'avx2' | 'avx512';
  attention(id: number, q: number, kc: number, vc: number, rows: number, chunks: number, P: number, n: number, vis: number, H: number, KV: number, D: number, scores: number, out: number, last: number, h0: number, h1: number): void;
  /** Whole decoder layers, one after another, as the `count` plans whose offsets are at `plans` describe them (native/layer.inc.c; MatmulKernels.layers writes them). Absent from addons built before it. */
  block_layers?(id: number, plans: number, count: number): void;
  /** Sets the threads the calling thread's products, attention and layers split over (native/pool.inc.c: threads − 1 helpers; 1 runs them alone) and a product piece's least multiply-adds (0: the addon's default), and returns how many threads it has. Absent from addons built before it. */
  pool?(threads: number, pieceWork?: number): number;
  /** [parts posted to the pool's helpers so far, parts they ran] (process-wide). */
  pool_counts?(): [number, number];
}

/** Bytes of the addon's x4h groups for a rows × cols matrix (kernels.c: 72, 80 and 136 bytes per 4 rows × 32 columns). */
export function x4hBytes(type: 'q4_0' | 'q4_1' | 'q8_0', rows: number, cols: number): number {
  return (rows / 4) * (cols / 32) * { q4_0: 72, q4_1: 80, q8_0: 136 }[type];
}

export const NATIVE_ADDON = fileURLToPath(new URL('./native/build/skein-kernels.node', import.meta.url));

let loaded: NativeKernels | null | undefined;

/**
 * Whether this CPU has AVX2 and F16C, read from /proc/cpuinfo before the addon is loaded:
 * it is compiled for them throughout (its load-time code included), so it must not even
 * be loaded on a CPU without them. Where there is no /proc/cpuinfo (not Linux), no.
 */
function cpuRunsAddon(): boolean {
  try {
    const flags = new Set(/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim().split(/\s+/));
    return flags.has('avx2') && flags.has('f16c');
  } catch {
    return false;
  }
}

/** The addon, or null (not built, SKEIN_NATIVE=0, no AVX2/F16C, or it fails to load). */
export function nativeKernels(): NativeKernels | null {
  if (loaded !== undefined) return loaded;
  if (process.env.SKEIN_NATIVE === '0' || !existsSync(NATIVE_ADDON) || !cpuRunsAddon()) return (loaded = null);
  try {
    const addon = createRequire(import.meta.url)(NATIVE_ADDON) as NativeKernels;
    loaded = addon.supported() ? addon : null;
    // SKEIN_NATIVE_AVX512=0: the AVX2 products on a CPU with AVX-512 (to compare the two).
    if (loaded !== null && process.env.SKEIN_NATIVE_AVX512 === '0') loaded.isa('avx2');
  } catch {
    loaded = null;
  }
  return loaded;
}
