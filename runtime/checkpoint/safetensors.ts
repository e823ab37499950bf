/**
 * Reads and writes the safetensors format (an 8-byte little-endian header length, a JSON
 * header mapping tensor names to dtype/shape/byte offsets, then the raw data), converting
 * every float dtype to and from Float32Array. Files can be hundreds of MB, so reading
 * goes through a file descriptor one tensor at a time: only the bytes of the tensor asked
 * for are read, straight into the buffer that is returned (F32) or a scratch buffer that
 * is converted (F16, BF16). Every defect is a CheckpointError naming the file and tensor.
 *
 * @example
 * writeSafetensors('/tmp/a.safetensors', { w: { shape: [2], data: new Float32Array([1, 2]) } }, 'BF16');
 * const { w } = readSafetensors('/tmp/a.safetensors'); // w.data: Float32Array [1, 2]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpointFile } from './open-file.js';
import { CheckpointError } from '../../core/errors.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64';
export type WriteDtype = 'F32' | 'F16' | 'BF16';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8 };

/** Real headers are a few hundred KB; a bigger length field means a corrupt or foreign file. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte offsets [begin, end) relative to the start of the data section. */
  offsets: [number, number];
}

export interface FloatTensor {
  shape: number[];
  data: Float32Array;
}

/** A parsed safetensors header plus an open descriptor to read tensors on demand. */
export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  readonly metadata: Record<string, string>;
  private fd: number | null;
  private readonly dataStart: number;

  private constructor(
    readonly file: string,
    fd: number,
    dataStart: number,
    tensors: Map<string, TensorEntry>,
    metadata: Record<string, string>,
  ) {
    this.fd = fd;
    this.dataStart = dataStart;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /** Opens and validates a file's header; the data is read later by `read`. */
  static open(file: string): SafetensorsFile {
    const fd = openCheckpointFile(file);
    try {
      const size = fs.fstatSync(fd).size;
      if (size < 8) throw new CheckpointError({ file, reason: `file is ${size} bytes, shorter than the 8-byte header length` });
      const lenBuf = Buffer.alloc(8);
      fs.readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = lenBuf.readBigUInt64LE(0);
      if (headerLen > BigInt(MAX_HEADER_BYTES)) {
        throw new CheckpointError({ file, reason: `header length ${headerLen} bytes is too large to be real (limit ${MAX_HEADER_BYTES})` });
      }
      const n = Number(headerLen);
      if (8 + n > size) {
        throw new CheckpointError({ file, reason: `header length ${n} runs past the end of the ${size}-byte file` });
      }
      const headerBuf = Buffer.alloc(n);
      fs.readSync(fd, headerBuf, 0, n, 8);
      const { tensors, metadata } = parseHeader(file, headerBuf.toString('utf8'), size - 8 - n);
      return new SafetensorsFile(file, fd, 8 + n, tensors, metadata);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Reads one tensor as float32 (integers are converted too). */
  read(name: string): FloatTensor {
    const entry = this.tensors.get(name);
    if (entry === undefined) throw new CheckpointError({ file: this.file, tensor: name, reason: 'no such tensor in this file' });
    if (this.fd === null) throw new CheckpointError({ file: this.file, tensor: name, reason: 'file already closed' });
    const [begin, end] = entry.offsets;
    const bytes = end - begin;
    const numel = bytes / DTYPE_BYTES[entry.dtype];
    let data: Float32Array;
    if (entry.dtype === 'F32') {
      // Safetensors is little-endian, as are the hosts we run on: the bytes are the floats.
      data = new Float32Array(numel);
      this.readInto(name, new Uint8Array(data.buffer), begin);
    } else {
      // An aligned scratch buffer lets the conversion loops use typed-array views.
      const raw = new ArrayBuffer(bytes);
      this.readInto(name, new Uint8Array(raw), begin);
      data = convertToF32(entry.dtype, raw, numel);
    }
    if (entry.dtype === 'F32' || entry.dtype === 'F16' || entry.dtype === 'BF16') this.checkFinite(name, data);
    return { shape: [...entry.shape], data };
  }

  /**
   * NaN or ±Inf in a weight makes every forward through it NaN (the model then "writes"
   * NUL text); refused here, naming the tensor. `x - x` is 0 for every finite x and NaN
   * otherwise, so one subtraction and compare per weight: about 0.1 s for 135M weights.
   */
  private checkFinite(name: string, data: Float32Array): void {
    for (let i = 0; i < data.length; i++) {
      const x = data[i]!;
      if (x - x !== 0) {
        throw new CheckpointError({ file: this.file, tensor: name, reason: `holds ${Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity'} at element ${i}` });
      }
    }
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private readInto(name: string, target: Uint8Array, begin: number): void {
    let done = 0;
    while (done < target.length) {
      const got = fs.readSync(this.fd!, target, done, target.length - done, this.dataStart + begin + done);
      if (got === 0) throw new CheckpointError({ file: this.file, tensor: name, reason: 'file ended while reading tensor data' });
      done += got;
    }
  }
}

function parseHeader(
  file: string,
  text: string,
  dataLen: number,
): { tensors: Map<string, TensorEntry>; metadata: Record<string, string> } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError({ file, reason: `header is not JSON: ${(err as Error).message}` });
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new CheckpointError({ file, reason: 'header is not a JSON object' });
  }
  const tensors = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw !== null && typeof raw === 'object') metadata = raw as Record<string, string>;
      continue;
    }
    tensors.set(name, parseEntry(file, name, raw, dataLen));
  }
  // Overlap check: sorted by start, each tensor must begin at or after the previous end.
  const spans = [...tensors.entries()].sort((a, b) => a[1].offsets[0] - b[1].offsets[0]);
  for (let i = 1; i < spans.length; i++) {
    const [prevName, prev] = spans[i - 1]!;
    const [name, cur] = spans[i]!;
    if (cur.offsets[0] < prev.offsets[1] && cur.offsets[1] > cur.offsets[0]) {
      throw new CheckpointError({ file, tensor: name, reason: `data offsets ${cur.offsets.join('..')} overlap tensor ${prevName} (${prev.offsets.join('..')})` });
    }
  }
  return { tensors, metadata };
}

function parseEntry(file: string, name: string, raw: unknown, dataLen: number): TensorEntry {
  const bad = (reason: string) => new CheckpointError({ file, tensor: name, reason });
  if (raw === null || typeof raw !== 'object') throw bad('header entry is not an object');
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
    throw bad(`unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw bad(`data_offsets ${JSON.stringify(offsets)} is not an ordered [begin, end] pair`);
  }
  if (offsets[1] > dataLen) throw bad(`data offsets ${offsets[0]}..${offsets[1]} out of range (data section is ${dataLen} bytes)`);
  const expected = shape.reduce((a: number, d: number) => a * d, 1) * DTYPE_BYTES[dtype as SafetensorsDtype];
  if (offsets[1] - offsets[0] !== expected) {
    throw bad(`data offsets span ${offsets[1] - offsets[0]} bytes but shape [${shape.join(', ')}] × ${dtype} needs ${expected}`);
  }
  return { dtype: dtype as SafetensorsDtype, shape: shape as number[], offsets: [offsets[0], offsets[1]] };
}

/** All 65536 half-precision values as float32: a table lookup beats bit-twiddling per element. */
let f16Table: Float32Array | null = null;

function halfTable(): Float32Array {
  if (f16Table !== null) return f16Table;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) table[h] = sign * mant * 2 ** -24;
    else if (exp === 31) table[h] = mant === 0 ? sign * Infinity : NaN;
    else table[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  f16Table = table;
  return table;
}

/** IEEE half bits → float32. */
export function f16BitsToF32(h: number): number {
  return halfTable()[h & 0xffff]!;
}

function convertToF32(dtype: SafetensorsDtype, raw: ArrayBuffer, numel: number): Float32Array {
  const out = new Float32Array(numel);
  switch (dtype) {
    case 'F16': {
      const src = new Uint16Array(raw);
      const table = halfTable();
      for (let i = 0; i < numel; i++) out[i] = table[src[i]!]!;
      return out;
    }
    case 'BF16': {
      // bf16 is the top half of an f32: shift into place and reinterpret.
      const src = new Uint16Array(raw);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < numel; i++) bits[i] = src[i]! << 16;
      return out;
    }
    case 'I32':
      out.set(new Int32Array(raw));
      return out;
    case 'I64': {
      const src = new BigInt64Array(raw);
      for (let i = 0; i < numel; i++) out[i] = Number(src[i]!);
      return out;
    }
    case 'F32':
      out.set(new Float32Array(raw));
      return out;
  }
}

/** Reads every tensor of a file as float32. For big files prefer `SafetensorsFile.open`. */
export function readSafetensors(file: string): Record<string, FloatTensor> {
  const st = SafetensorsFile.open(file);
  try {
    // Tensor names come from the file: no prototype to write through.
    const out: Record<string, FloatTensor> = Object.create(null);
    for (const name of st.names()) out[name] = st.read(name);
    return out;
  } finally {
    st.close();
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 → bfloat16 bits, rounding to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → IEEE half bits, rounding to nearest even, overflow to ±Infinity. */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit-1 mantissa right, rounding to even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, which is the right answer (up to Inf).
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

function encode(dtype: WriteDtype, data: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint16Array(data.length);
  if (dtype === 'BF16') for (let i = 0; i < data.length; i++) out[i] = f32ToBf16Bits(data[i]!);
  else for (let i = 0; i < data.length; i++) out[i] = f32ToF16Bits(data[i]!);
  return new Uint8Array(out.buffer);
}

/**
 * Writes tensors (in the given key order) as one safetensors file in `dtype`. The header
 * is padded with spaces to a multiple of 8 bytes, as the reference implementation does,
 * so that the data section starts aligned. Written to a temporary name and renamed, so a
 * crash never leaves a half-written checkpoint under the final name.
 */
export function writeSafetensors(
  file: string,
  tensors: Record<string, FloatTensor>,
  dtype: WriteDtype = 'F32',
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = Object.create(null);
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      // The reference readers reject non-string metadata values.
      if (typeof v !== 'string') throw new CheckpointError({ file, reason: `metadata ${k} is not a string` });
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const numel = t.shape.reduce((a, d) => a * d, 1);
    if (numel !== t.data.length) {
      throw new CheckpointError({ file, tensor: name, reason: `data has ${t.data.length} values but shape [${t.shape.join(', ')}] needs ${numel}` });
    }
    const bytes = numel * DTYPE_BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerText = JSON.stringify(header);
  const headerBytes = Buffer.byteLength(headerText, 'utf8');
  headerText += ' '.repeat((8 - (headerBytes % 8)) % 8);
  const headerBuf = Buffer.from(headerText, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));

  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, headerBuf);
    for (const t of Object.values(tensors)) {
      const bytes = encode(dtype, t.data);
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
    }
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

/** model.safetensors.index.json: which shard file holds each tensor. */
export interface ShardIndex {
  /** Tensor name → shard file name (relative to the index's folder). */
  weightMap: Record<string, string>;
  metadata: Record<string, unknown>;
}

export function readShardIndex(indexFile: string): ShardIndex {
  let text: string;
  try {
    text = fs.readFileSync(indexFile, 'utf8');
  } catch (err) {
    throw new CheckpointError({ file: indexFile, reason: `cannot read: ${(err as Error).message}` });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError({ file: indexFile, reason: `not JSON: ${(err as Error).message}` });
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new CheckpointError({ file: indexFile, reason: 'no weight_map object' });
  }
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) {
      throw new CheckpointError({ file: indexFile, tensor: name, reason: `weight_map entry ${JSON.stringify(shard)} is not a shard file name` });
    }
  }
  return {
    weightMap: weightMap as Record<string, string>,
    metadata: ((json as { metadata?: Record<string, unknown> }).metadata ?? {}) as Record<string, unknown>,
  };
}

/**
 * The tensors of one checkpoint, whether in a single file or sharded: looks a name up in
 * the right shard, opening each shard once. `expectedFile(name)` says where a tensor
 * should be, for error messages about missing tensors.
 */
export class SafetensorsCheckpoint {
  private readonly open = new Map<string, SafetensorsFile>();

  private constructor(
    readonly dir: string,
    /** The file that describes the weights: the single file, or the index. */
    readonly describedBy: string,
    private readonly weightMap: Map<string, string> | null,
    single: SafetensorsFile | null,
  ) {
    if (single !== null) this.open.set(single.file, single);
  }

  /** Opens `dir/model.safetensors`, or `dir/model.safetensors.index.json` and its shards. */
  static openDir(dir: string): SafetensorsCheckpoint {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    if (fs.existsSync(single)) return new SafetensorsCheckpoint(dir, single, null, SafetensorsFile.open(single));
    if (fs.existsSync(index)) return SafetensorsCheckpoint.openIndex(index);
    throw new CheckpointError({ file: single, reason: 'no weights: neither model.safetensors nor model.safetensors.index.json exists' });
  }

  /** Opens a model.safetensors.index.json and every shard it names. */
  static openIndex(indexFile: string): SafetensorsCheckpoint {
    const dir = path.dirname(indexFile);
    const { weightMap } = readShardIndex(indexFile);
    const map = new Map<string, string>();
    for (const [name, shard] of Object.entries(weightMap)) map.set(name, path.join(dir, shard));
    const cp = new SafetensorsCheckpoint(dir, indexFile, map, null);
    // Open every shard now so that a missing one fails the load before any conversion work.
    try {
      for (const [name, shard] of map) cp.shard(shard, name);
    } catch (err) {
      cp.close();
      throw err;
    }
    return cp;
  }

  /** The file a tensor is (or would be) found in. */
  expectedFile(name: string): string {
    if (this.weightMap === null) return this.describedBy;
    return this.weightMap.get(name) ?? this.describedBy;
  }

  has(name: string): boolean {
    if (this.weightMap === null) return this.open.get(this.describedBy)!.has(name);
    const shard = this.weightMap.get(name);
    return shard !== undefined && this.shard(shard, name).has(name);
  }

  /** Reads a tensor; a missing one is a CheckpointError naming it and its expected file. */
  read(name: string): FloatTensor {
    const file = this.expectedFile(name);
    if (!this.has(name)) throw new CheckpointError({ file, tensor: name, reason: 'missing tensor' });
    return this.shard(file, name).read(name);
  }

  names(): string[] {
    if (this.weightMap === null) return this.open.get(this.describedBy)!.names();
    return [...this.weightMap.keys()];
  }

  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }

  private shard(file: string, forTensor: string): SafetensorsFile {
    let f = this.open.get(file);
    if (f === undefined) {
      if (!fs.existsSync(file)) {
        throw new CheckpointError({ file, tensor: forTensor, reason: `shard named in ${path.basename(this.describedBy)} is missing` });
      }
      f = SafetensorsFile.open(file);
      this.open.set(file, f);
    }
    return f;
  }
}

/** Reads every tensor of a sharded checkpoint through its index file. */
export function readShardedSafetensors(indexFile: string): Record<string, FloatTensor> {
  const cp = SafetensorsCheckpoint.openIndex(indexFile);
  try {
    // Tensor names come from the file: no prototype to write through.
    const out: Record<string, FloatTensor> = Object.create(null);
    for (const name of cp.names()) out[name] = cp.read(name);
    return out;
  } finally {
    cp.close();
  }
}
