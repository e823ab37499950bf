import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../model/random.js';
import { quantizeMatrix, type BlockType } from './blocks.js';
import { MatmulKernels, relaxedModule } from './matmul.js';
import { NATIVE_ADDON, nativeKernels } from './native.js';

function randn(n: number, seed: number, scale = 1): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, () => scale * (rng() + rng() + rng() - 1.5) * 2);
}

function hasCompiler(): boolean {
  try {
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const addon = nativeKernels();
const expected = process.arch === 'x64' && process.env.SKEIN_NATIVE !== '0' && hasCompiler() && relaxedModule() !== null;
if (addon === null) console.warn(`native kernels not tested: ${existsSync(NATIVE_ADDON) ? 'this CPU lacks AVX2 or the addon did not load' : 'not built (npm run build:native)'}`);

/** Whether this Linux kernel gives transparent huge pages to regions that ask (enabled: [always] or [madvise]). */
function hugePagesOffered(): boolean {
  try {
    return !readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[never]');
  } catch {
    return false;
  }
}

/** Sizes (bytes) of this process's mappings whose flags carry `hg` (MADV_HUGEPAGE). */
function hugePageMappings(): number[] {
  const sizes: number[] = [];
  let size = 0;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) size = parseInt(range[2]!, 16) - parseInt(range[1]!, 16);
    else if (line.startsWith('VmFlags:') && line.split(/\s+/).includes('hg')) sizes.push(size);
  }
  return sizes;
}

describe('native kernels', () => {
  it.runIf(expected)('are built by the install where a C compiler and x86-64 are (npm run build:native)', () => {
    expect(existsSync(NATIVE_ADDON), `${NATIVE_ADDON} missing`).toBe(true);
    expect(new MatmulKernels().native).toBe(true);
  });

  it.runIf(addon !== null && addon.huge_pages !== undefined && hugePagesOffered())('ask for huge pages for the kernels\' memory, grown in whole 2 MiB pages, unless told not to', () => {
    const before = hugePageMappings().length;
    const m = quantizeMatrix(randn(1024 * 4096, 81, 0.05), 1024, 4096, 'q8_0');
    const off = new MatmulKernels({ hugePages: false });
    off.upload(m);
    expect(off.hugePages).toBe(false);
    expect(hugePageMappings().length).toBe(before);
    const on = new MatmulKernels();
    const w = on.upload(m);
    expect(on.hugePages).toBe(true);
    // The weight's 4+ MiB lie in one mapping marked for huge pages, a whole number of them long.
    const marked = hugePageMappings();
    expect(marked.length).toBeGreaterThan(before);
    expect(Math.max(...marked)).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(marked.every((bytes) => bytes % (2 * 1024 * 1024) === 0)).toBe(true);
    const x = randn(2 * 4096, 82);
    expect(Array.from(on.matmul(w, x, 2))).toEqual(Array.from(off.matmul(off.upload(m), x, 2)));
  });

  it.runIf(addon !== null)('quantize activations to the wasm build\'s bytes (ties, zero blocks, saturated and tiny values)', () => {
    const memory = new WebAssembly.Memory({ initial: 16, maximum: 64, shared: true });
    const wasm = new WebAssembly.Instance(relaxedModule()!, { env: { memory } }).exports as unknown as Record<string, (...a: number[]) => void> & { __heap_base: WebAssembly.Global };
    const id = addon!.register(new Uint8Array(memory.buffer));
    const T = 3, cols = 128, nb = cols / 32;
    // Block by block: exact ties after scaling (max 127, values k + 0.5), zeros, random, tiny and signed extremes.
    const x = Float32Array.from({ length: T * cols }, (_, i) => {
      const b = Math.floor(i / 32) % nb, c = i % 32;
      if (b === 0) return c === 0 ? 127 : (c % 2 ? -1 : 1) * ((c % 11) + 0.5);
      if (b === 1) return 0;
      if (b === 2) return randn(1, i)[0]! * (i % 7 === 0 ? 1e-30 : 1);
      return c % 3 === 0 ? -3e38 : c % 3 === 1 ? 3e38 : 1e-3;
    });
    let at = ((wasm.__heap_base.value as number) + 15) & ~15;
    const take = (bytes: number) => ((at = (at + bytes + 15) & ~15) - ((bytes + 15) & ~15));
    const xo = take(4 * x.length);
    new Float32Array(memory.buffer, xo, x.length).set(x);
    const bytes = (off: number, n: number) => Array.from(new Uint8Array(memory.buffer, off, n));
    for (const kind of ['q8', 'r8'] as const) {
      const width = kind === 'q8' ? 2 : 1;
      const outs = [0, 1].map(() => ({ qa: take(width * T * cols), da: take(4 * T * nb), sa: take(4 * T * nb) }));
      const [a, b] = outs as [(typeof outs)[number], (typeof outs)[number]];
      if (kind === 'q8') {
        wasm.quantize_rows!(xo, T, cols, a.qa, a.da, a.sa, 0);
        addon!.quantize_rows(id, xo, T, cols, b.qa, b.da, b.sa, 0);
      } else {
        wasm.quantize_rows_r8!(xo, T, cols, a.qa, a.da, a.sa);
        addon!.quantize_rows_r8(id, xo, T, cols, b.qa, b.da, b.sa);
      }
      expect(bytes(b.qa, width * T * cols), kind).toEqual(bytes(a.qa, width * T * cols));
      expect(bytes(b.da, 4 * T * nb), kind).toEqual(bytes(a.da, 4 * T * nb));
      expect(bytes(b.sa, 4 * T * nb), kind).toEqual(bytes(a.sa, 4 * T * nb));
    }
    expect(() => addon!.quantize_rows(id, xo, T, cols, 0, 0, 0, 1)).toThrow(/q4_order 0 only/);
  });

  // Both builds of the quantized products where the CPU has AVX-512 VNNI (isa), else AVX2's.
  const isas = addon === null ? [] : (['avx2', 'avx512'] as const).filter((isa) => isa === 'avx2' || addon.isa() === 'avx512');
  const productCases = (['q4_0', 'q4_1', 'q8_0'] as BlockType[]).flatMap((type) => isas.map((isa) => ({ type, isa })));
  it.runIf(addon !== null).each(productCases)('give products the wasm build\'s bits (%o; odd and even row groups, 1–17 tokens, saturated values, Q8_0 quants of −128)', ({ type, isa }) => {
    const before = addon!.isa();
    addon!.isa(isa);
    try {
      productsMatchWasm(type);
    } finally {
      addon!.isa(before);
    }
  });

  it.runIf(addon !== null)('say which build of the products runs, and refuse one that does not exist', () => {
    expect(['avx2', 'avx512']).toContain(addon!.isa());
    expect(() => (addon!.isa as (n: string) => string)('avx9')).toThrow(/takes "avx2" or "avx512"/);
  });

  function productsMatchWasm(type: BlockType) {
    const wasm = new MatmulKernels({ native: false });
    const native = new MatmulKernels();
    expect(native.native).toBe(true);
    expect(wasm.native).toBe(false);
    // 4 rows: one lone group; 36: pairs and a lone last one; 65 blocks: a long row.
    for (const [rows, cols] of [[4, 64], [36, 576], [8, 65 * 32]] as const) {
      const w = randn(rows * cols, 61, 0.05).map((v, i) => (i % 17 === 0 ? 0.2 : i % 19 === 0 ? -0.2 : v));
      const m = quantizeMatrix(w, rows, cols, type);
      // Q8_0 files may hold −128 (a quantizer's clamp, not llama.cpp's): the 8-bit products take its magnitude as 128.
      if (type === 'q8_0') for (let at = 2; at < m.data.length; at += 34 * 3 + 5) m.data[at] = 0x80;
      const a = wasm.upload(m);
      const b = native.upload(m);
      for (const T of [1, 2, 3, 4, 5, 7, 9, 17]) {
        const x = randn(T * cols, 62 + T).map((v, i) => (i % 23 === 0 ? 4 : i % 29 === 0 ? -4 : v));
        expect(Array.from(native.matmul(b, x, T)), `${type} ${rows}×${cols} T=${T}`).toEqual(Array.from(wasm.matmul(a, x, T)));
      }
    }
  }

  it.runIf(addon !== null)('give F32/F16 products and the gated MLP the wasm build\'s bits', () => {
    const wasm = new MatmulKernels({ native: false });
    const native = new MatmulKernels();
    const rows = 25, cols = 96, inner = 64; // an odd row count: the row pairs and a last row alone
    for (const type of ['f32', 'f16'] as BlockType[]) {
      const m = quantizeMatrix(randn(rows * cols, 81, 0.1), rows, cols, type);
      const a = wasm.upload(m);
      const b = native.upload(m);
      for (const T of [1, 2, 3, 4, 9]) {
        const x = randn(T * cols, 82 + T);
        expect(Array.from(native.matmul(b, x, T)), `${type} T=${T}`).toEqual(Array.from(wasm.matmul(a, x, T)));
      }
    }
    const [gate, up, down] = [[inner, cols], [inner, cols], [cols, inner]].map(([r, c], i) => quantizeMatrix(randn(r! * c!, 90 + i, 0.3), r!, c!, 'q4_1'));
    const x = randn(3 * cols, 95, 2);
    const viaWasm = wasm.gatedMlp(wasm.upload(gate!), wasm.upload(up!), wasm.upload(down!), x, 3);
    const viaNative = native.gatedMlp(native.upload(gate!), native.upload(up!), native.upload(down!), x, 3);
    expect(Array.from(viaNative)).toEqual(Array.from(viaWasm));
  });

  // Shapes that take every path of the native attention: 8-value passes of 4, 3, 2 and 1
  // vectors (by heads per KV head), a 4-value tail (D 12, 20), head groups split over calls
  // (5 heads per KV head: 4, then 1), f32 and f16 chunks, decode rows and a tree mask; rows
  // over SPLIT_KEYS keys or more (two parts merged, the softmax's four-vector passes in each).
  const attentionCases = [
    { H: 9, KV: 3, D: 64, n: 4 },
    { H: 9, KV: 3, D: 64, n: 1 },
    { H: 9, KV: 3, D: 64, n: 1, long: 301 },
    { H: 4, KV: 2, D: 32, n: 4, long: 259 },
    { H: 8, KV: 2, D: 12, n: 4 },
    { H: 16, KV: 4, D: 64, n: 4 },
    { H: 5, KV: 5, D: 8, n: 1 },
    { H: 10, KV: 2, D: 20, n: 4 },
    { H: 4, KV: 2, D: 32, n: 1 },
  ].flatMap((c) => (['f32', 'f16', 'q8'] as const).map((kv) => ({ ...c, kv })));
  it.runIf(addon !== null).each(attentionCases)('attend with the wasm build\'s bits (%o; uneven chunks, key weights of the last row)', ({ H, KV, D, n, kv, long }) => {
    const wasm = new MatmulKernels({ native: false });
    const native = new MatmulKernels();
    expect(native.native).toBe(true);
    const sizes = [...(long ? [long] : []), 16, 16, 1, 1, 7, 16, 3, 1, n];
    const S = sizes.reduce((a, b) => a + b, 0);
    const k = randn(S * KV * D, 101, 0.5);
    const v = randn(S * KV * D, 102);
    const q = randn(n * H * D, 103, 0.3);
    const mask = n === 4 ? Uint8Array.of(1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 1) : Uint8Array.of(1);
    const run = (K: MatmulKernels) => {
      let at = 0;
      const chunks = sizes.map((r) => {
        const c = { k: K.store(k.subarray(at * KV * D, (at + r) * KV * D), r, KV, kv), v: K.store(v.subarray(at * KV * D, (at + r) * KV * D), r, KV, kv) };
        at += r;
        return c;
      });
      return [true, false].map((last) => K.attention(q, chunks.map((c) => c.k), chunks.map((c) => c.v), n, mask, { heads: H, kvHeads: KV, headDim: D }, last));
    };
    const [a, b] = [run(wasm), run(native)];
    for (const i of [0, 1]) expect(Array.from(b[i]!.out)).toEqual(Array.from(a[i]!.out));
    expect(Array.from(b[0]!.last!)).toEqual(Array.from(a[0]!.last!));
  });

  it.runIf(addon !== null)('split a product with the kernel thread (native there too) with the same bits', () => {
    const one = new MatmulKernels({ native: false });
    const two = new MatmulKernels({ threads: 2, takeBack: false, splitMinWork: 10_000, nativePool: false });
    // 27 groups: split at group 13, the second of a stored pair, so each thread has half a pair alone; the last group is stored alone.
    const rows = 108, cols = 192;
    for (const type of ['q4_1', 'q8_0'] as BlockType[]) {
      const m = quantizeMatrix(randn(rows * cols, 71, 0.05), rows, cols, type);
      const wa = one.upload(m);
      const wb = two.upload(m);
      for (const T of [1, 6, 9]) {
        const x = randn(T * cols, 72 + T);
        expect(Array.from(two.matmul(wb, x, T)), `${type} T=${T}`).toEqual(Array.from(one.matmul(wa, x, T)));
      }
    }
    expect(two.splitCalls).toBe(6);
  });

  it.runIf(addon?.pool !== undefined)('share their pool between two threads without mixing their jobs (each keeps one thread\'s bits)', async () => {
    // A worker and this thread multiply at once, each taking the pool over before every call.
    const url = new URL('../../test/fixtures/pool-hammer.ts', import.meta.url).href;
    const worker = new Worker(`import('tsx/esm/api').then((m) => m.tsImport(${JSON.stringify(url)}, ${JSON.stringify(url)}))`, { eval: true, workerData: { rounds: 3000, seed: 7 } });
    const messages: unknown[] = [];
    let wake = () => {};
    worker.on('message', (m) => {
      messages.push(m);
      wake();
    });
    const next = () => new Promise<unknown>((resolve, reject) => {
      worker.once('error', reject);
      const check = () => (messages.length > 0 ? resolve(messages.shift()) : (wake = check));
      check();
    });
    const { hammer } = await import('../../test/fixtures/pool-hammer.js');
    const run = hammer(11);
    expect(await next()).toBe('ready');
    worker.postMessage('go');
    expect(run(3000)).toBe(0);
    expect(await next()).toBe(0);
    await worker.terminate();
  }, 60_000);

  it.runIf(addon !== null)('refuse arguments they cannot use, saying what is wrong', () => {
    expect(() => addon!.register(new Uint8Array(16).subarray(4))).toThrow(/Uint8Array over a whole shared memory/);
    expect(() => addon!.matmul_x4r(1e6, 3, 0, 4, 32, 0, 0, 0, 1, 0, 0, 1)).toThrow(/unknown memory id/);
    expect(() => (addon!.matmul_x4r as (...a: number[]) => void)(0, 3)).toThrow(/wrong argument count/);
    const id = addon!.register(new Uint8Array(new WebAssembly.Memory({ initial: 1, maximum: 2, shared: true }).buffer));
    expect(() => addon!.matmul_x4r(id, 1, 0, 4, 32, 0, 0, 0, 1, 0, 0, 1)).toThrow(/Q4_0, Q4_1 and Q8_0 groups/);
    expect(() => addon!.repack_x4h(id, 1, 0, 4, 32, 0)).toThrow(/repack_x4h takes Q4_0, Q4_1 or Q8_0 rows/);
    expect(() => addon!.repack_x4h(id, 3, 0, 6, 32, 0)).toThrow(/a multiple of 4/);
  });
});
