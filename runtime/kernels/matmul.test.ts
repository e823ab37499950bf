import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../model/random.js';
import { dequantizeMatrix, floatToHalf, halfToFloat, permuteRows, quantizeMatrix, type BlockType } from './blocks.js';
import { MatmulKernels, relaxedModule, type KernelChunk, type KvType } from './matmul.js';
import { nativeKernels } from './native.js';

function randn(n: number, seed: number, scale = 1): Float32Array {
  const rng = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * (rng() + rng() + rng() - 1.5) * 2;
  return out;
}

/** llama.cpp's q8 activation rounding, in JS: what the kernel multiplies by. */
function roundActivations(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < x.length; b += 32) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b + i]!));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    for (let i = 0; i < 32; i++) out[b + i] = d * Math.round(Math.abs(Math.fround(x[b + i]! * id))) * Math.sign(x[b + i]!);
  }
  return out;
}

/** y = x·Wᵀ in float64 over the dequantized weights. */
function reference(w: Float32Array, rows: number, cols: number, x: Float32Array, T: number): Float64Array {
  const y = new Float64Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let i = 0; i < cols; i++) s += x[t * cols + i]! * w[r * cols + i]!;
      y[t * rows + r] = s;
    }
  }
  return y;
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** (S, heads·D) rows as a chunk of `kv` holds them: stored by head, read back and laid out by row again. */
function rounded(kernels: MatmulKernels, kv: KvType, x: Float32Array, S: number, heads: number): Float32Array {
  if (kv === 'f32') return x;
  const width = x.length / S, D = width / heads;
  const c = kernels.store(x, S, heads, kv);
  const byHead = kernels.readChunk(c, width);
  kernels.free(c);
  const out = new Float32Array(x.length);
  for (let g = 0; g < heads; g++) for (let r = 0; r < S; r++) out.set(byHead.subarray((g * S + r) * D, (g * S + r + 1) * D), r * width + g * D);
  return out;
}

describe('blocks', () => {
  it('half floats round-trip and round to nearest', () => {
    for (const v of [0, 1, -2.5, 65504, 6.1035156e-5, 5.96e-8, 0.1]) expect(halfToFloat(floatToHalf(v))).toBeCloseTo(v, 3);
    expect(halfToFloat(floatToHalf(1 + 2 ** -11))).toBe(1); // tie to even
    expect(halfToFloat(floatToHalf(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9);
  });

  it.each(['q8_0', 'q4_0', 'q4_1', 'f16'] as BlockType[])('%s dequantizes within its step size', (type) => {
    const x = randn(64 * 32, 7);
    const err = relErr(dequantizeMatrix(quantizeMatrix(x, 64, 32, type)), x);
    expect(err).toBeLessThan({ q8_0: 0.01, q4_0: 0.12, q4_1: 0.08, f16: 0.001, f32: 0 }[type as 'q8_0']);
    expect(err).toBeGreaterThan(0);
  });

  it('permutes rows', () => {
    const m = quantizeMatrix(randn(3 * 32, 1), 3, 32, 'q4_1');
    const p = dequantizeMatrix(permuteRows(m, [2, 0, 1]));
    const d = dequantizeMatrix(m);
    expect(Array.from(p.subarray(0, 32))).toEqual(Array.from(d.subarray(64, 96)));
  });
});

describe('matmul kernels equal a plain dequantize + dot', () => {
  const rows = 72;
  const cols = 160;
  // 1, 3 and 5 rows: the single-row path, and the 4-row path with a remainder.
  it.each([
    ['f32', 1],
    ['f32', 5],
    ['f16', 1],
    ['f16', 5],
    ['q8_0', 1],
    ['q8_0', 5],
    ['q4_0', 1],
    ['q4_0', 5],
    ['q4_1', 3],
    ['q4_1', 5],
  ] as [BlockType, number][])('%s at %i rows', (type, T) => {
    for (const interleave of [true, false]) check(type, T, interleave);
  });

  function check(type: BlockType, T: number, interleave: boolean): void {
    const k = new MatmulKernels({ interleave });
    const m = quantizeMatrix(randn(rows * cols, 3, 0.05), rows, cols, type);
    const w = k.upload(m);
    const x = randn(T * cols, 4);
    const y = k.matmul(w, x, T);
    const wf = dequantizeMatrix(m);
    const quantized = type !== 'f32' && type !== 'f16';
    // Against the same maths in float64 (activations rounded as the kernel does): float
    // summation order only.
    expect(relErr(y, reference(wf, rows, cols, quantized ? roundActivations(x) : x, T))).toBeLessThan(2e-6);
    // Against f32 activations: the int8 activation rounding costs under 1%.
    expect(relErr(y, reference(wf, rows, cols, x, T))).toBeLessThan(quantized ? 0.01 : 2e-6);
    expect(w.layout).toBe(quantized && interleave ? (k.native ? 'x4h' : 'x4') : 'rows');
  }

  it.each(['q8_0', 'q4_0', 'q4_1'] as BlockType[])('%s x4 at 7 rows (passes of 4, 2 and 1 tokens)', (type) => check(type, 7, true));

  it.each(['f32', 'f16', 'q8_0', 'q4_0', 'q4_1'] as BlockType[])('%s gives a token the same bits whatever the call holds', (type) => {
    // The scheduler batches sequences and speculative decoding verifies drafts in one call:
    // each token's row must not depend on how many tokens share it (4-, 2- and 1-token passes).
    for (const interleave of [true, false]) {
      const k = new MatmulKernels({ interleave });
      const w = k.upload(quantizeMatrix(randn(rows * cols, 21, 0.05), rows, cols, type));
      const T = 11;
      const x = randn(T * cols, 22);
      const all = k.matmul(w, x, T);
      for (const [from, n] of [[0, 1], [3, 1], [10, 1], [1, 2], [5, 4], [2, 7]]) {
        const part = k.matmul(w, x.subarray(from * cols, (from + n) * cols), n);
        expect(Array.from(part), `${type} ${w.layout} tokens ${from}..${from + n - 1}`).toEqual(Array.from(all.subarray(from * rows, (from + n) * rows)));
      }
    }
  });

  it.each([64, 65])('q4_1 rows of %i blocks (widened per call up to 64, nibbles unpacked per pass above) keep their bits', (nb) => {
    const k = new MatmulKernels();
    const c = nb * 32;
    const m = quantizeMatrix(randn(8 * c, 41, 0.05), 8, c, 'q4_1');
    const w = k.upload(m);
    const x = randn(5 * c, 42);
    const all = k.matmul(w, x, 5);
    expect(relErr(all, reference(dequantizeMatrix(m), 8, c, roundActivations(x), 5))).toBeLessThan(2e-6);
    for (let t = 0; t < 5; t++) expect(Array.from(k.matmul(w, x.subarray(t * c, (t + 1) * c), 1))).toEqual(Array.from(all.subarray(t * 8, (t + 1) * 8)));
  });

  it('matmulMany shares one input across mixed types, and memory grows past its start', () => {
    const k = new MatmulKernels();
    const big = quantizeMatrix(randn(2048 * 512, 9, 0.05), 2048, 512, 'f32'); // 4 MB > the initial 1 MB
    const types: BlockType[] = ['q4_1', 'q8_0', 'f16'];
    const ms = types.map((t, i) => quantizeMatrix(randn(40 * 512, 10 + i, 0.05), 40, 512, t));
    const ws = [k.upload(big), ...ms.map((m) => k.upload(m))];
    const x = randn(2 * 512, 5);
    const ys = k.matmulMany(ws, x, 2);
    [big, ...ms].forEach((m, i) => expect(Array.from(ys[i]!)).toEqual(Array.from(k.matmul(ws[i]!, x, 2))));
    expect(relErr(ys[0]!, reference(dequantizeMatrix(big), 2048, 512, x, 2))).toBeLessThan(2e-6);
  });

  it('gatedMlp equals down(silu(gate) ⊙ up) over the kernels one by one', () => {
    const k = new MatmulKernels();
    const [gate, up] = [11, 12].map((seed) => k.upload(quantizeMatrix(randn(64 * 96, seed, 0.1), 64, 96, 'q4_1')));
    const down = k.upload(quantizeMatrix(randn(96 * 64, 13, 0.1), 96, 64, 'q8_0'));
    const x = randn(3 * 96, 14);
    const [g, u] = k.matmulMany([gate!, up!], x, 3);
    const h = g!.map((v, i) => (v / (1 + Math.exp(-v))) * u![i]!);
    // The silu inside runs on a polynomial e^x (relative error < 2e-7): the down input
    // rounds to the same int8 values but for rare ties, hence 1e-5.
    expect(relErr(k.gatedMlp(gate!, up!, down, x, 3), k.matmul(down, h, 3))).toBeLessThan(1e-5);
    expect(() => k.gatedMlp(gate!, up!, gate!, x, 3)).toThrow(/shapes disagree/);
  });

  // The JavaScript the kernels' row steps replaced (block-linear.ts before): in double,
  // rounded to f32 once per value. The kernels must give these bits exactly.
  const normRows = (x: Float32Array, cols: number, w: Float32Array, eps: number) => {
    const out = new Float32Array(x.length);
    for (let o = 0; o < x.length; o += cols) {
      let ss = 0;
      for (let i = 0; i < cols; i++) ss += x[o + i]! * x[o + i]!;
      const s = 1 / Math.sqrt(ss / cols + eps);
      for (let i = 0; i < cols; i++) out[o + i] = x[o + i]! * s * w[i]!;
    }
    return out;
  };

  it.each([
    ['q4_1', true, 1],
    ['q8_0', false, 5],
    ['f32', true, 4],
  ] as [BlockType, boolean, number][])('normalise rows and run a layer\'s MLP half in their memory with the JavaScript steps\' bits (%s, bias %s, %i rows)', (type, withBias, T) => {
    for (const native of [false, true]) {
      const k = new MatmulKernels({ native });
      const hidden = 64, inter = 96, qd = 64;
      const up = (rows: number, cols: number, seed: number) => k.upload(quantizeMatrix(randn(rows * cols, seed, 0.1), rows, cols, type));
      const w = { o: up(hidden, qd, 21), gate: up(inter, hidden, 22), up: up(inter, hidden, 23), down: up(hidden, inter, 24), bo: withBias ? randn(hidden, 25, 0.2) : null, norm: { weight: randn(hidden, 26), eps: 1e-5 } };
      const attn = randn(T * qd, 27);
      const x = randn(T * hidden, 28, 3);
      const x1 = new Float32Array(T * hidden);
      const o = k.matmul(w.o, attn, T);
      for (let i = 0; i < x1.length; i++) x1[i] = x[i]! + o[i]! + (w.bo === null ? 0 : w.bo[i % hidden]!);
      const d = k.gatedMlp(w.gate, w.up, w.down, normRows(x1, hidden, w.norm.weight, w.norm.eps), T);
      const want = x1.map((v, i) => v + d[i]!);
      expect(Array.from(k.mlpBlock(w, attn, x, T)), `native ${native}`).toEqual(Array.from(want));
      const [a, b] = k.matmulMany([w.gate, w.up], x, T, w.norm);
      const n = normRows(x, hidden, w.norm.weight, w.norm.eps);
      expect(Array.from(a!)).toEqual(Array.from(k.matmul(w.gate, n, T)));
      expect(Array.from(b!)).toEqual(Array.from(k.matmul(w.up, n, T)));
    }
  });

  it.each([false, true])('assemble projection groups (scale, bias, rotary) in their memory with the JavaScript steps\' bits (native %s)', (native) => {
    const k = new MatmulKernels({ native });
    const T = 3, cols = 64, dim = 16, half = dim / 2, width = 64;
    const w = [48, 16, 16].map((rows, i) => k.upload(quantizeMatrix(randn(rows * cols, 31 + i, 0.1), rows, cols, 'q4_1')));
    const bias = randn(16, 35, 0.3);
    const norm = { weight: randn(cols, 36), eps: 1e-6 };
    const cos = randn(T * half, 37), sin = randn(T * half, 38);
    const x = randn(T * cols, 39, 2);
    const outs = [new Float32Array(T * width), new Float32Array(T * 16)];
    k.linearGroups([[{ weight: w[0]!, scale: 0.125 }, { weight: w[1]!, bias }], [{ weight: w[2]! }]], x, T, norm, { outputs: [0], dim, cos, sin }, outs);
    // What block-linear.ts did in JavaScript before: [q·scale | k + bias], rotated head by head.
    const [y0, y1, y2] = k.matmulMany(w, normRows(x, cols, norm.weight, norm.eps), T);
    const want = new Float32Array(T * width);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < 48; i++) want[t * width + i] = y0![t * 48 + i]! * 0.125;
      for (let i = 0; i < 16; i++) want[t * width + 48 + i] = y1![t * 16 + i]! + bias[i]!;
      for (let h = t * width; h < (t + 1) * width; h += dim) {
        for (let i = 0; i < half; i++) {
          const c = cos[t * half + i]!, s = sin[t * half + i]!, x1 = want[h + i]!, x2 = want[h + half + i]!;
          want[h + i] = x1 * c - x2 * s;
          want[h + half + i] = x2 * c + x1 * s;
        }
      }
    }
    expect(Array.from(outs[0]!)).toEqual(Array.from(want));
    expect(Array.from(outs[1]!)).toEqual(Array.from(y2!));
  });

  it.each(['f32', 'f16', 'q8_0', 'q4_0', 'q4_1'] as BlockType[])('reads %s rows back out as uploaded (x4 and native x4h groups undone)', (type) => {
    const m = quantizeMatrix(randn(12 * 64, 5), 12, 64, type);
    for (const k of [new MatmulKernels(), new MatmulKernels({ native: false })]) {
      const w = k.upload(m);
      expect(w.layout).toBe(type.startsWith('q') ? (k.native ? 'x4h' : 'x4') : 'rows');
      expect(k.read(w)).toEqual(m);
      const rb = m.data.length / 12;
      expect(k.read(w, 5, 7).data).toEqual(m.data.subarray(5 * rb, 7 * rb));
      expect(() => k.read(w, 3, 13)).toThrow(/rows \[3, 13\) outside 0..12/);
    }
  });

  it('refuses shapes it cannot run, naming them', () => {
    const k = new MatmulKernels();
    expect(() => k.upload({ type: 'q8_0', rows: 2, cols: 40, data: new Uint8Array(0) })).toThrow(/divisible by 32/);
    expect(() => k.upload({ type: 'q8_0', rows: 2, cols: 32, data: new Uint8Array(3) })).toThrow(/needs 68 bytes, got 3/);
    const w = k.upload(quantizeMatrix(randn(64, 1), 2, 32, 'q8_0'));
    expect(() => k.matmul(w, new Float32Array(31), 1)).toThrow(/expected 1×32/);
  });
});

describe.each([
  ['matmul.wasm', 'clang'],
  ['matmul-relaxed.wasm', 'clang-19'],
])('%s', (file, compiler) => {
  const here = new URL('.', import.meta.url).pathname;
  let clang = '';
  try {
    clang = execFileSync(compiler, ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  } catch {
    clang = '';
  }
  const recorded = readFileSync(join(here, `${file}.clang`), 'utf8').trim();
  it.skipIf(clang !== recorded)('is what build.sh makes of matmul.c', () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-kernels-'));
    try {
      for (const f of ['build.sh', 'matmul.c', 'float-kernels.inc.c']) cpSync(join(here, f), join(dir, f));
      execFileSync('sh', [join(dir, 'build.sh')], { stdio: 'pipe' });
      expect(readFileSync(join(dir, file)).equals(readFileSync(join(here, file)))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  if (clang !== recorded) console.warn(`${file} rebuild check skipped: needs ${recorded}, found ${clang || `no ${compiler}`}`);
});

describe('relaxed-SIMD build', () => {
  const available = relaxedModule() !== null;
  if (!available) console.warn('relaxed-SIMD build not tested: this engine does not run it (or its answers differ, and matmul.ts falls back)');
  it.skipIf(!available).each(['q4_0', 'q4_1'] as BlockType[])('gives %s products the baseline build\'s bits at every token count', (type) => {
    const base = new MatmulKernels({ relaxed: false });
    const relaxed = new MatmulKernels();
    expect(relaxed.relaxed).toBe(true);
    // 65 blocks: past the baseline's widening limit; saturated values: weights 0/15, activations ±127.
    for (const [rows, cols] of [[72, 160], [8, 65 * 32]] as const) {
      const w = randn(rows * cols, 51, 0.05).map((v, i) => (i % 17 === 0 ? 0.2 : i % 19 === 0 ? -0.2 : v));
      const m = quantizeMatrix(w, rows, cols, type);
      const a = base.upload(m);
      const b = relaxed.upload(m);
      for (const T of [1, 2, 3, 4, 5, 8, 11]) {
        const x = randn(T * cols, 52 + T).map((v, i) => (i % 23 === 0 ? 4 : i % 29 === 0 ? -4 : v));
        expect(Array.from(relaxed.matmul(b, x, T)), `${type} ${rows}×${cols} T=${T}`).toEqual(Array.from(base.matmul(a, x, T)));
      }
    }
  });
});

describe('silu_mul', () => {
  it('gives four-at-a-time values the bits of one at a time (the scalar tail path), for every value kind', () => {
    const memory = new WebAssembly.Memory({ initial: 17, maximum: 65536, shared: true });
    const bytes = readFileSync(new URL('./matmul.wasm', import.meta.url));
    const fns = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports as unknown as {
      silu_mul(g: number, u: number, n: number): void;
    };
    const n = 4099; // past the vectors: a scalar tail too
    const g = randn(n, 5, 30).map((v, i) => [0, -0, 87.5, -87.5, 1e-30, -1e-30, 200, -200][i % 9] ?? v);
    const u = randn(n, 6);
    const base = 65536 * 16;
    const [gA, gB, uo] = [base, base + 4 * n + 64, base + 8 * n + 128];
    const f32 = new Float32Array(memory.buffer);
    f32.set(g, gA / 4);
    f32.set(g, gB / 4);
    f32.set(u, uo / 4);
    fns.silu_mul(gA, uo, n);
    for (let i = 0; i < n; i++) fns.silu_mul(gB + 4 * i, uo + 4 * i, 1);
    const a = new Uint32Array(memory.buffer, gA, n);
    const b = new Uint32Array(memory.buffer, gB, n);
    expect(Array.from(a)).toEqual(Array.from(b));
  });
});

/** n new rows, each seeing itself and the rows before it (row-major: row i's j-th entry). */
const causalMask = (n: number) => Uint8Array.from({ length: n * n }, (_, x) => (x % n <= Math.floor(x / n) ? 1 : 0));

/** An attention call's inputs: n new rows' queries over P cached and n new keys and values, seeded seed, seed + 1, seed + 2. */
function attentionInputs(H: number, KV: number, D: number, P: number, n: number, seed: number) {
  const S = P + n;
  return { S, shape: { heads: H, kvHeads: KV, headDim: D }, q: randn(n * H * D, seed, 0.5), k: randn(S * KV * D, seed + 1, 0.5), v: randn(S * KV * D, seed + 2) };
}

describe('attention kernel', () => {
  /** Softmax attention in float64, straight from the definition. */
  function plainAttention(q: Float32Array, k: Float32Array, v: Float32Array, P: number, n: number, vis: Uint8Array, H: number, KV: number, D: number) {
    const S = P + n;
    const out = new Float64Array(n * H * D);
    const last = new Float64Array(S);
    for (let i = 0; i < n; i++) {
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KV));
        const seen = Array.from({ length: S }, (_, j) => j < P || vis[i * n + j - P] === 1);
        const s = seen.map((ok, j) => {
          if (!ok) return -Infinity;
          let d = 0;
          for (let x = 0; x < D; x++) d += q[i * H * D + h * D + x]! * k[j * KV * D + g * D + x]!;
          return d;
        });
        const mx = Math.max(...s);
        const e = s.map((x) => Math.exp(x - mx));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < S; j++) {
          const p = e[j]! / sum;
          for (let x = 0; x < D; x++) out[i * H * D + h * D + x] += p * v[j * KV * D + g * D + x]!;
          if (i === n - 1) last[j] += p / H;
        }
      }
    }
    return { out, last };
  }

  it('matches softmax attention (causal and tree masks, grouped heads, chunked keys) and reports the last row', () => {
    const H = 6, KV = 2, D = 8, P = 5, n = 4;
    const { S, q, k, v } = attentionInputs(H, KV, D, P, n, 1);
    const kernels = new MatmulKernels();
    const masks = {
      causal: causalMask(n),
      tree: Uint8Array.from([1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1]),
    };
    for (const vis of Object.values(masks)) {
      const want = plainAttention(q, k, v, P, n, vis, H, KV, D);
      // Keys and values in uneven chunks, as the paged KV pool passes them.
      const split = (x: Float32Array) => [kernels.store(x.subarray(0, 3 * KV * D), 3, KV), kernels.store(x.subarray(3 * KV * D, 7 * KV * D), 4, KV), kernels.store(x.subarray(7 * KV * D), 2, KV)];
      const got = kernels.attention(q, split(k), split(v), n, vis, { heads: H, kvHeads: KV, headDim: D }, true);
      got.out.forEach((x, i) => expect(Math.abs(x - want.out[i]!)).toBeLessThan(1e-5));
      got.last!.forEach((x, j) => expect(Math.abs(x - want.last[j]!)).toBeLessThan(1e-6));
    }
  });

  it('gives a row the same bits alone as among other rows', () => {
    const H = 4, KV = 4, D = 16, P = 7;
    const q = randn(3 * H * D, 4);
    const k = randn((P + 3) * KV * D, 5);
    const v = randn((P + 3) * KV * D, 6);
    const kernels = new MatmulKernels();
    const causal3 = Uint8Array.from([1, 0, 0, 1, 1, 0, 1, 1, 1]);
    const all = kernels.attention(q, [kernels.store(k, P + 3, KV)], [kernels.store(v, P + 3, KV)], 3, causal3, { heads: H, kvHeads: KV, headDim: D });
    // Row 1 alone, its keys (the cached ones and new keys 0..1) in other chunks.
    const rows = (x: Float32Array, a: number, b: number) => kernels.store(x.subarray(a * KV * D, b * KV * D), b - a, KV);
    const alone = kernels.attention(q.subarray(H * D, 2 * H * D), [rows(k, 0, 2), rows(k, 2, P + 2)], [rows(v, 0, 2), rows(v, 2, P + 2)], 1, Uint8Array.of(1), { heads: H, kvHeads: KV, headDim: D });
    expect(Array.from(alone.out)).toEqual(Array.from(all.out.subarray(H * D, 2 * H * D)));
  });

  it('gives every row of a causal prefill its bits alone (new keys four at a time, head groups, D not a multiple of 8)', () => {
    const H = 6, KV = 2, D = 12, P = 6, n = 11;
    const { S, shape, q, k, v } = attentionInputs(H, KV, D, P, n, 31);
    const kernels = new MatmulKernels();
    const causal = causalMask(n);
    const rows = (x: Float32Array, a: number, b: number) => kernels.store(x.subarray(a * KV * D, b * KV * D), b - a, KV);
    // The call a prefill chunk makes: cached keys in blocks of 4, then the n new ones.
    const all = kernels.attention(q, [rows(k, 0, 4), rows(k, 4, P), rows(k, P, S)], [rows(v, 0, 4), rows(v, 4, P), rows(v, P, S)], n, causal, shape, true);
    const want = plainAttention(q, k, v, P, n, causal, H, KV, D);
    all.out.forEach((x, i) => expect(Math.abs(x - want.out[i]!)).toBeLessThan(1e-5));
    all.last!.forEach((x, j) => expect(Math.abs(x - want.last[j]!)).toBeLessThan(1e-6));
    for (let i = 0; i < n; i++) {
      // Row i as a decode step: its P + i keys cached (chunked otherwise), itself new.
      const alone = kernels.attention(q.subarray(i * H * D, (i + 1) * H * D), [rows(k, 0, 3), rows(k, 3, P + i), rows(k, P + i, P + i + 1)], [rows(v, 0, 3), rows(v, 3, P + i), rows(v, P + i, P + i + 1)], 1, Uint8Array.of(1), shape);
      expect(Array.from(alone.out), `row ${i}`).toEqual(Array.from(all.out.subarray(i * H * D, (i + 1) * H * D)));
    }
  });

  it('splits a row over 256 visible keys or more in two halves merged at the end: softmax attention still, a tree row the bits of its decode step, wasm and native alike, f32, f16 and q8 keys', () => {
    const H = 6, KV = 2, D = 8;
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const pick = (x: Float32Array, keys: number[]) => {
      const out = new Float32Array(keys.length * KV * D);
      keys.forEach((j, i) => out.set(x.subarray(j * KV * D, (j + 1) * KV * D), i * KV * D));
      return out;
    };
    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
    // A tree over 300 cached keys (the split among cached keys); a causal prefill of 300 rows
    // after 10 (its last rows split among the new keys); 20 rows after 300 (the native
    // kernels' transposed keys for a call of 8 rows or more, f16).
    const cases = [
      { P: 300, n: 4, vis: Uint8Array.from([1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 1]), rows: [0, 1, 2, 3] },
      { P: 10, n: 300, vis: causalMask(300), rows: [0, 240, 244, 245, 299] },
      { P: 300, n: 20, vis: causalMask(20), rows: [0, 7, 19] },
    ];
    for (const kv of ['f32', 'f16', 'q8'] as const) {
      const outs: Float32Array[] = [];
      for (const native of [false, true]) {
        const kernels = new MatmulKernels({ native });
        for (const { P, n, vis, rows } of cases) {
          const S = P + n;
          const q = randn(n * H * D, 91 + n, 0.5);
          const k = randn(S * KV * D, 92, 0.5);
          const v = randn(S * KV * D, 93);
          const chunked = (x: Float32Array, keys: number[], sizes: number[]) => {
            let at = 0;
            return sizes.map((c) => kernels.store(pick(x, keys.slice(at, (at += c))), c, KV, kv));
          };
          const sizes = P > 157 ? [100, 57, P - 157, n] : [4, P - 4, n];
          const all = kernels.attention(q, chunked(k, range(0, S), sizes), chunked(v, range(0, S), sizes), n, vis, shape, true);
          // q8 keys score against the query quantized alike (integer dot products): a looser bound there.
          const want = plainAttention(q, rounded(kernels, kv, k, S, KV), rounded(kernels, kv, v, S, KV), P, n, vis, H, KV, D);
          all.out.forEach((x, i) => expect(Math.abs(x - want.out[i]!)).toBeLessThan(kv === 'q8' ? 2e-2 : 1e-5));
          all.last!.forEach((x, j) => expect(Math.abs(x - want.last[j]!)).toBeLessThan(kv === 'q8' ? 2e-2 : 1e-6));
          for (const i of rows) {
            // Row i as its token's decode step: the keys it sees cached (in two chunks), itself new.
            const seenKeys = [...range(0, P), ...range(0, i).filter((j) => vis[i * n + j]).map((j) => P + j)];
            const keys = [...seenKeys, P + i];
            const cut = [seenKeys.length >> 1, seenKeys.length - (seenKeys.length >> 1), 1];
            const alone = kernels.attention(q.subarray(i * H * D, (i + 1) * H * D), chunked(k, keys, cut), chunked(v, keys, cut), 1, Uint8Array.of(1), shape);
            expect(Array.from(alone.out), `${kv}, native ${native}, P ${P}, row ${i}`).toEqual(Array.from(all.out.subarray(i * H * D, (i + 1) * H * D)));
          }
          outs.push(all.out, all.last!);
        }
      }
      // The native build's bits: outputs and the last row's key weights of every case.
      const per = outs.length / 2;
      for (let i = 0; i < per; i++) expect(Array.from(outs[per + i]!), `${kv}, output ${i}`).toEqual(Array.from(outs[i]!));
    }
  });

  it('scores a call of 8 rows or more from its transposed keys with each row\'s bits alone, for head groups of 4 and 5 (a 4 + 1 split) and D not a multiple of 8', () => {
    for (const { H, KV, D } of [
      { H: 16, KV: 4, D: 64 },
      { H: 10, KV: 2, D: 20 },
    ]) {
      const P = 45, n = 10, S = P + n;
      const shape = { heads: H, kvHeads: KV, headDim: D };
      const q = randn(n * H * D, 111, 0.5);
      const k = randn(S * KV * D, 112, 0.5);
      const v = randn(S * KV * D, 113);
      const causal = causalMask(n);
      const outs = [false, true].map((native) => {
        const kernels = new MatmulKernels({ native });
        const rows = (x: Float32Array, a: number, b: number) => kernels.store(x.subarray(a * KV * D, b * KV * D), b - a, KV, 'f16');
        const all = kernels.attention(q, [rows(k, 0, 20), rows(k, 20, P), rows(k, P, S)], [rows(v, 0, 20), rows(v, 20, P), rows(v, P, S)], n, causal, shape);
        for (let i = 0; i < n; i++) {
          const alone = kernels.attention(q.subarray(i * H * D, (i + 1) * H * D), [rows(k, 0, P + i), rows(k, P + i, P + i + 1)], [rows(v, 0, P + i), rows(v, P + i, P + i + 1)], 1, Uint8Array.of(1), shape);
          expect(Array.from(alone.out), `H ${H}, native ${native}, row ${i}`).toEqual(Array.from(all.out.subarray(i * H * D, (i + 1) * H * D)));
        }
        return all.out;
      });
      expect(Array.from(outs[1]!), `H ${H}: native and wasm`).toEqual(Array.from(outs[0]!));
    }
  });

  it('gives the same bits however the keys are chunked (one chunk, one-row chunks, uneven ones)', () => {
    // Decode appends each step's key as a chunk of its own; four keys at a time must still
    // take the same path across chunk ends, and give what one chunk gives.
    const H = 9, KV = 3, D = 64, S = 23;
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const q = randn(H * D, 61, 0.5);
    const k = randn(S * KV * D, 62, 0.5);
    const v = randn(S * KV * D, 63);
    const kernels = new MatmulKernels();
    const chunked = (x: Float32Array, sizes: number[]) => {
      let at = 0;
      return sizes.map((n) => kernels.store(x.subarray(at * KV * D, (at += n) * KV * D), n, KV));
    };
    const layouts = [[S], Array<number>(S).fill(1), [5, 1, 1, 3, 1, 7, 2, 1, 2], [16, 7]];
    const [first, ...rest] = layouts.map((sizes) => kernels.attention(q, chunked(k, sizes), chunked(v, sizes), 1, Uint8Array.of(1), shape, true));
    for (const r of rest) {
      expect(Array.from(r.out)).toEqual(Array.from(first!.out));
      expect(Array.from(r.last!)).toEqual(Array.from(first!.last!));
    }

  });

  it('reads views of stored chunks in place, joined or apart, with the bits of chunks stored on their own', () => {
    // The KV mirror cuts a prompt's stored K and V into the cache's 16-row blocks as views;
    // attention joins the views that continue each other and must not change a bit.
    const H = 9, KV = 3, D = 64, S = 40;
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const q = randn(H * D, 64, 0.5);
    for (const [kv, native] of [['f32', true], ['f16', true], ['f16', false], ['q8', true], ['q8', false]] as const) {
      const k = randn(S * KV * D, 65, 0.5);
      const v = randn(S * KV * D, 66);
      const kernels = new MatmulKernels({ native });
      const store = (x: Float32Array, a: number, b: number) => kernels.store(x.subarray(a * KV * D, b * KV * D), b - a, KV, kv);
      const alone = kernels.attention(q, [store(k, 0, 16), store(k, 16, 32), store(k, 32, S)], [store(v, 0, 16), store(v, 16, 32), store(v, 32, S)], 1, Uint8Array.of(1), shape, true);
      // Rows 0..31 stored as one chunk and cut into views (in order: joined into one run);
      // rows 32.. a view of a chunk stored apart, its values a view out of a longer chunk.
      const kWhole = store(k, 0, 32);
      const vWhole = store(v, 0, 32);
      const vLonger = store(v, 30, S);
      const views = kernels.attention(
        q,
        [kernels.view(kWhole, 0, 16, D), kernels.view(kWhole, 16, 16, D), kernels.view(store(k, 32, S), 0, S - 32, D)],
        [kernels.view(vWhole, 0, 16, D), kernels.view(vWhole, 16, 16, D), kernels.view(vLonger, 2, S - 32, D)],
        1,
        Uint8Array.of(1),
        shape,
        true,
      );
      expect(Array.from(views.out)).toEqual(Array.from(alone.out));
      expect(Array.from(views.last!)).toEqual(Array.from(alone.last!));
      expect(Array.from(kernels.readChunk(kernels.view(kWhole, 16, 16, D), KV * D))).toEqual(Array.from(kernels.readChunk(store(k, 16, 32), KV * D)));
      expect(() => kernels.free(kernels.view(kWhole, 0, 16, D))).toThrow(/view/);
      expect(() => kernels.view(kWhole, 20, 16, D)).toThrow(RangeError);
    }
  });

  it('reads f16 keys kept in groups of four rows with the bits of keys kept by rows: whole groups, partial ones, views from any row, joins, prefill tiles, split rows, wasm and native', () => {
    const H = 9, KV = 3, D = 64, P = 300, n = 9;
    const { S, shape, q, k, v } = attentionInputs(H, KV, D, P, n, 91);
    const causal = causalMask(n);
    for (const native of [true, false]) {
      const kernels = new MatmulKernels({ native });
      expect(kernels.native).toBe(native && nativeKernels() !== null); // (the native kernels refuse to run where they disagree with the wasm ones)
      const store = (x: Float32Array, a: number, b: number, keys: boolean) => kernels.store(x.subarray(a * KV * D, b * KV * D), b - a, KV, 'f16', keys);
      const cut = (x: Float32Array, sizes: number[], keys: boolean) => {
        let at = 0;
        return sizes.map((m) => store(x, at, (at += m), keys));
      };
      // The values cut as the keys are (attention reads a key's chunk and its value's together), by rows.
      const call = (keys: KernelChunk[]) => kernels.attention(q, keys, cut(v, keys.map((c) => c.rows), false), n, causal, shape, true);
      const byRows = call(cut(k, [S], false));
      expect(byRows.out.every(Number.isFinite)).toBe(true);
      const grouped = cut(k, [S], true)[0]!;
      expect(grouped.grouped).toBe(true);
      expect(Array.from(kernels.readChunk(grouped, KV * D))).toEqual(Array.from(kernels.readChunk(cut(k, [S], false)[0]!, KV * D)));
      // Views that start inside groups and end in partial ones, of two stored chunks (the second from its third row).
      const whole = store(k, 0, 203, true);
      const longer = store(k, 201, S, true);
      const views = [kernels.view(whole, 0, 6, D), kernels.view(whole, 6, 17, D), kernels.view(whole, 23, 180, D), kernels.view(longer, 2, 5, D), kernels.view(longer, 7, S - 208, D)];
      const layouts: [string, KernelChunk[]][] = [
        ['one chunk', [grouped]],
        ['uneven chunks', cut(k, [5, 1, 1, 3, 7, 2, 16, 10, 255, 9], true)],
        ['one-row chunks at the end', cut(k, [290, ...Array<number>(19).fill(1)], true)],
        ['views', views],
        ['views joined', [kernels.join(views.slice(0, 3), D), kernels.join(views.slice(3), D)]],
      ];
      for (const [name, keys] of layouts) {
        const got = call(keys);
        expect(Array.from(got.out), `${name} (native ${native})`).toEqual(Array.from(byRows.out));
        expect(Array.from(got.last!), `${name} (native ${native})`).toEqual(Array.from(byRows.last!));
      }
      const joined = kernels.join(views, D);
      expect(joined.grouped).toBe(true);
      expect(Array.from(kernels.readChunk(joined, KV * D))).toEqual(Array.from(kernels.readChunk(grouped, KV * D)));
      expect(Array.from(kernels.readChunk(views[1]!, KV * D))).toEqual(Array.from(kernels.readChunk(store(k, 6, 23, false), KV * D)));
      expect(() => kernels.join([views[0]!, store(k, 6, 8, false)], D)).toThrow(/layout/);
    }
  });

  it('attends over f16 chunks as over their values rounded to f16, a row the same bits alone as in the call', () => {
    const H = 6, KV = 2, D = 12, P = 6, n = 5;
    const { S, shape, q, k, v } = attentionInputs(H, KV, D, P, n, 71);
    const half = (x: Float32Array) => x.map((a) => halfToFloat(floatToHalf(a)));
    const kernels = new MatmulKernels();
    const causal = causalMask(n);
    const rows = (x: Float32Array, a: number, b: number) => kernels.store(x.subarray(a * KV * D, b * KV * D), b - a, KV, 'f16');
    const all = kernels.attention(q, [rows(k, 0, 4), rows(k, 4, P), rows(k, P, S)], [rows(v, 0, 4), rows(v, 4, P), rows(v, P, S)], n, causal, shape, true);
    const want = plainAttention(q, half(k), half(v), P, n, causal, H, KV, D);
    all.out.forEach((x, i) => expect(Math.abs(x - want.out[i]!)).toBeLessThan(1e-5));
    for (let i = 0; i < n; i++) {
      const alone = kernels.attention(q.subarray(i * H * D, (i + 1) * H * D), [rows(k, 0, P + i), rows(k, P + i, P + i + 1)], [rows(v, 0, P + i), rows(v, P + i, P + i + 1)], 1, Uint8Array.of(1), shape);
      expect(Array.from(alone.out), `row ${i}`).toEqual(Array.from(all.out.subarray(i * H * D, (i + 1) * H * D)));
    }
    expect(() => kernels.attention(q.subarray(0, H * D), [rows(k, 0, 1)], [kernels.store(v.subarray(0, KV * D), 1, KV)], 1, Uint8Array.of(1), shape)).toThrow(/mixed/);
  });

  it('rounds f32 to f16 as floatToHalf does (ties to even, subnormals), clamping past the largest half', () => {
    const kernels = new MatmulKernels();
    const edge = [0, -0, 1, -1, 65504, 65519, 65520, 1e9, -1e9, 2 ** -14, 2 ** -15, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0.1, -123.456, 6.1e-5];
    const x = Float32Array.from([...edge, ...randn(500, 81, 3)]);
    const c = kernels.store(x, 1, 1, 'f16');
    expect(Array.from(kernels.readChunk(c, x.length))).toEqual(Array.from(x, (a) => halfToFloat(floatToHalf(Math.max(-65504, Math.min(65504, a))))));
  });

  it('stores chunks where attention reads them, and reuses the memory of freed ones', () => {
    const kernels = new MatmulKernels();
    const a = kernels.store(Float32Array.from({ length: 192 }, (_, i) => i), 1, 1);
    const b = kernels.store(new Float32Array(192 * 16), 16, 1);
    expect(kernels.storedBytes).toBe(1024 + 16384);
    kernels.free(a);
    expect(kernels.storedBytes).toBe(16384);
    const c = kernels.store(new Float32Array(200), 1, 1); // 800 B: the same 1 KiB class as a
    expect(c.offset).toBe(a.offset);
    expect(() => kernels.free(a)).not.toThrow(); // c now lives at a's offset
    expect(() => kernels.free(a)).toThrow(/no stored chunk/);
    kernels.free(b);
    expect(kernels.storedBytes).toBe(0);
  });
});

describe('two threads', () => {
  it('give every product and attention the same bits as one thread', () => {
    const one = new MatmulKernels({ threads: 1 });
    const two = new MatmulKernels({ threads: 2, takeBack: false, splitMinWork: 100_000, nativePool: false });
    const rows = 256, cols = 576;
    const w = randn(rows * cols, 11, 0.05);
    for (const T of [1, 5]) {
      const x = randn(T * cols, 12 + T);
      for (const type of ['f32', 'f16', 'q8_0', 'q4_0', 'q4_1'] as BlockType[]) {
        const m = quantizeMatrix(w, rows, cols, type);
        const a = one.matmul(one.upload(m), x, T);
        const b = two.matmul(two.upload(m), x, T);
        expect(Array.from(b), `${type} T=${T}`).toEqual(Array.from(a));
      }
    }
    const H = 8, KV = 2, D = 64, S = 300, n = 2;
    const q = randn(n * H * D, 20, 0.2);
    const k = randn(S * KV * D, 21, 0.5);
    const v = randn(S * KV * D, 22);
    const causal = Uint8Array.of(1, 0, 1, 1);
    const shape = { heads: H, kvHeads: KV, headDim: D };
    const a = one.attention(q, [one.store(k, S, KV)], [one.store(v, S, KV)], n, causal, shape);
    const b = two.attention(q, [two.store(k, S, KV)], [two.store(v, S, KV)], n, causal, shape);
    expect(Array.from(b.out)).toEqual(Array.from(a.out));
    expect(one.splitCalls).toBe(0);
    expect(two.splitCalls).toBe(11); // every product (T·rows·cols ≥ 147k) and the attention
  });
});
