/**
 * Reads GGUF files (llama.cpp's single-file checkpoint format), versions 2 and 3:
 *
 *   magic "GGUF" · u32 version · u64 tensor count · u64 metadata count
 *   metadata: (string key, u32 value type, value)*     strings are u64 length + UTF-8 bytes
 *   tensor infos: (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)*
 *   padding to `general.alignment` (default 32), then the tensor data; each offset is
 *   relative to the data start and a multiple of the alignment.
 *
 * `ne[0]` is the innermost (contiguous) dimension, so a Hugging Face (out, in) weight has
 * ne = [in, out]; `shape` below is ne reversed, i.e. row-major like safetensors.
 *
 * Written here rather than taken from @huggingface/gguf (0.4.6), which was checked first:
 * it parses only asynchronously (our tokenizer loading is synchronous, also in the worker
 * engine's main thread), reports defects as plain Errors without the key or tensor, does
 * not check tensor offsets, alignment, types or sizes against the file, accepts version 1,
 * and brings @huggingface/tasks along. Here every defect is a CheckpointError naming the
 * file and the key or tensor, and every count or length in the header is checked against
 * the bytes left in the file before anything is allocated for it.
 *
 * Tensor data is read one tensor at a time through the descriptor (`readTensorBytes`), so
 * a caller can convert it and drop the bytes before reading the next.
 *
 * @example
 * const g = GgufFile.open('model.gguf');
 * g.metadata.get('general.architecture'); // 'llama'
 * const raw = g.readTensorBytes('token_embd.weight'); // Uint8Array of Q4_1 blocks
 * g.close();
 */
import * as fs from 'node:fs';
import { openCheckpointFile } from './open-file.js';
import { CheckpointError } from '../../core/errors.js';
import { GGML_TYPES, ggmlTypeName, tensorByteSize, type GgmlType } from './ggml-quants.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32

/** Metadata value types (gguf_type in ggml's gguf.h). */
export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** Fixed byte size of each scalar type; strings are at least their 8-byte length. */
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 10: 8, 11: 8, 12: 8 };

export type GgufScalar = number | bigint | boolean | string;
export type GgufValue = GgufScalar | GgufScalar[];

export interface GgufTensorInfo {
  name: string;
  type: GgmlType;
  /** ne reversed: row-major, outermost dimension first. */
  shape: number[];
  numel: number;
  /** Offset of the first byte, relative to the data section. */
  offset: number;
  byteLength: number;
}

/**
 * Header limits (refuse before allocating). Real files: a few hundred tensors per 10B
 * parameters, vocabularies up to ~260k, chat templates of tens of KB.
 */
export const GGUF_LIMITS = {
  maxTensors: 1_000_000,
  maxMetadata: 1_000_000,
  maxStringBytes: 16 * 1024 * 1024,
  maxArrayLength: 16 * 1024 * 1024,
  maxDims: 4, // GGML_MAX_DIMS
  maxAlignment: 1 << 20,
} as const;

const CHUNK = 1 << 20;

/** A forward-only reader over the header, buffered in 1 MiB chunks, that knows the file size. */
class HeaderReader {
  pos = 0;
  private buf = Buffer.alloc(0);
  private bufStart = 0;

  constructor(
    private readonly fd: number,
    readonly file: string,
    readonly size: number,
  ) {}

  get remaining(): number {
    return this.size - this.pos;
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.size) {
      throw new CheckpointError({ file: this.file, reason: `file ends inside the header (reading ${what} at byte ${this.pos}, ${this.size} bytes in all)` });
    }
    const end = this.pos + n;
    if (this.pos >= this.bufStart && end <= this.bufStart + this.buf.length) return;
    const len = Math.min(Math.max(n, CHUNK), this.size - this.pos);
    const buf = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const got = fs.readSync(this.fd, buf, done, len - done, this.pos + done);
      if (got === 0) throw new CheckpointError({ file: this.file, reason: `file ended while reading the header at byte ${this.pos + done}` });
      done += got;
    }
    this.buf = buf;
    this.bufStart = this.pos;
  }

  private at(n: number, what: string): number {
    this.need(n, what);
    const o = this.pos - this.bufStart;
    this.pos += n;
    return o;
  }

  u8(what: string): number {
    const o = this.at(1, what);
    return this.buf.readUInt8(o);
  }
  i8(what: string): number {
    const o = this.at(1, what);
    return this.buf.readInt8(o);
  }
  u16(what: string): number {
    const o = this.at(2, what);
    return this.buf.readUInt16LE(o);
  }
  i16(what: string): number {
    const o = this.at(2, what);
    return this.buf.readInt16LE(o);
  }
  u32(what: string): number {
    const o = this.at(4, what);
    return this.buf.readUInt32LE(o);
  }
  i32(what: string): number {
    const o = this.at(4, what);
    return this.buf.readInt32LE(o);
  }
  f32(what: string): number {
    const o = this.at(4, what);
    return this.buf.readFloatLE(o);
  }
  f64(what: string): number {
    const o = this.at(8, what);
    return this.buf.readDoubleLE(o);
  }
  u64(what: string): bigint {
    const o = this.at(8, what);
    return this.buf.readBigUInt64LE(o);
  }
  i64(what: string): bigint {
    const o = this.at(8, what);
    return this.buf.readBigInt64LE(o);
  }

  /** A u64 count or size that must fit a JS number and `limit`. */
  count(what: string, limit: number): number {
    const v = this.u64(what);
    if (v > BigInt(limit)) throw new CheckpointError({ file: this.file, reason: `${what} is ${v}, more than any real file has (limit ${limit})` });
    return Number(v);
  }

  string(what: string): string {
    const len = this.count(`length of ${what}`, GGUF_LIMITS.maxStringBytes);
    if (len > this.remaining) {
      throw new CheckpointError({ file: this.file, reason: `${what}: string length ${len} runs past the end of the file (${this.remaining} bytes left)` });
    }
    const o = this.at(len, what);
    return this.buf.toString('utf8', o, o + len);
  }
}

/** A parsed GGUF header plus an open descriptor to read tensor data on demand. */
export class GgufFile {
  private fd: number | null;

  private constructor(
    readonly file: string,
    fd: number,
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    /** Absolute byte offset of the data section. */
    readonly dataStart: number,
    readonly alignment: number,
    readonly fileSize: number,
  ) {
    this.fd = fd;
  }

  /** Opens a file and validates its whole header; tensor data is read later. */
  static open(file: string): GgufFile {
    const fd = openCheckpointFile(file);
    try {
      return GgufFile.parse(file, fd);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Opens a file, hands it to `fn` and closes it again. */
  static inspect<T>(file: string, fn: (g: GgufFile) => T): T {
    const g = GgufFile.open(file);
    try {
      return fn(g);
    } finally {
      g.close();
    }
  }

  private static parse(file: string, fd: number): GgufFile {
    const size = fs.fstatSync(fd).size;
    const r = new HeaderReader(fd, file, size);
    const bad = (reason: string, tensor?: string) => new CheckpointError({ file, tensor, reason });
    if (size < 4) throw bad(`file is ${size} bytes, too short to be GGUF`);
    const magic = r.u32('magic');
    if (magic !== GGUF_MAGIC) {
      throw bad(`bad magic 0x${magic.toString(16).padStart(8, '0')} (a GGUF file starts with the bytes "GGUF")`);
    }
    const version = r.u32('version');
    if (version !== 2 && version !== 3) {
      throw bad(`unsupported GGUF version ${version} (supported: 2, 3${version === 1 ? '; version 1 files predate 2023-08 and must be re-converted' : ''})`);
    }
    // Each tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes; each metadata pair 8 + 4 + 1.
    const tensorCount = r.count('tensor count', GGUF_LIMITS.maxTensors);
    const kvCount = r.count('metadata count', GGUF_LIMITS.maxMetadata);
    if (tensorCount * 32 + kvCount * 13 > r.remaining) {
      throw bad(`header claims ${tensorCount} tensors and ${kvCount} metadata entries, more than the ${size}-byte file can hold`);
    }

    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) {
      const key = r.string(`metadata key #${i}`);
      const type = r.u32(`type of ${key}`);
      if (metadata.has(key)) throw bad(`duplicate metadata key ${key}`);
      metadata.set(key, readValue(r, type, key));
    }

    const alignment = alignmentOf(metadata, file);
    const infos: { name: string; type: number; ne: number[]; offset: number }[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = r.string(`name of tensor #${i}`);
      const nDims = r.u32(`n_dims of ${name}`);
      if (nDims < 1 || nDims > GGUF_LIMITS.maxDims) throw bad(`n_dims ${nDims} (must be 1..${GGUF_LIMITS.maxDims})`, name);
      const ne: number[] = [];
      for (let d = 0; d < nDims; d++) {
        const v = r.u64(`ne[${d}] of ${name}`);
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`dimension ${d} is ${v}, too large to be real`, name);
        ne.push(Number(v));
      }
      const type = r.u32(`type of ${name}`);
      const offset = r.u64(`offset of ${name}`);
      if (offset > BigInt(size)) throw bad(`data offset ${offset} is past the end of the ${size}-byte file`, name);
      infos.push({ name, type, ne, offset: Number(offset) });
    }
    const dataStart = Math.ceil(r.pos / alignment) * alignment;
    const dataLen = size - dataStart;
    if (dataLen < 0 && tensorCount > 0) throw bad(`file ends at byte ${size}, before the data section starts at byte ${dataStart}`);

    const tensors = new Map<string, GgufTensorInfo>();
    for (const info of infos) {
      const tensor = checkTensor(file, info, alignment, dataLen);
      if (tensors.has(tensor.name)) throw bad('duplicate tensor name', tensor.name);
      tensors.set(tensor.name, tensor);
    }
    const spans = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < spans.length; i++) {
      const prev = spans[i - 1]!;
      const cur = spans[i]!;
      if (cur.offset < prev.offset + prev.byteLength) {
        throw bad(`data ${cur.offset}..${cur.offset + cur.byteLength} overlaps tensor ${prev.name} (${prev.offset}..${prev.offset + prev.byteLength})`, cur.name);
      }
    }
    return new GgufFile(file, fd, version, metadata, tensors, dataStart, alignment, size);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  tensor(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) throw new CheckpointError({ file: this.file, tensor: name, reason: 'missing tensor' });
    return t;
  }

  /** The raw bytes of one tensor (blocks as stored), in a fresh buffer. */
  readTensorBytes(name: string): Uint8Array {
    const t = this.tensor(name);
    if (this.fd === null) throw new CheckpointError({ file: this.file, tensor: name, reason: 'file already closed' });
    const out = new Uint8Array(t.byteLength);
    let done = 0;
    while (done < out.length) {
      const got = fs.readSync(this.fd, out, done, out.length - done, this.dataStart + t.offset + done);
      if (got === 0) throw new CheckpointError({ file: this.file, tensor: name, reason: 'file ended while reading tensor data' });
      done += got;
    }
    return out;
  }

  /** A metadata string, or undefined when absent; a value of another type is an error. */
  string(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new CheckpointError({ file: this.file, reason: `metadata ${key} is not a string` });
    return v;
  }

  /** A metadata number (any integer or float type), or undefined when absent. */
  number(key: string): number | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v === 'bigint') {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new CheckpointError({ file: this.file, reason: `metadata ${key} = ${v} is out of range` });
      }
      return Number(v);
    }
    if (typeof v !== 'number') throw new CheckpointError({ file: this.file, reason: `metadata ${key} is not a number` });
    return v;
  }

  bool(key: string): boolean | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw new CheckpointError({ file: this.file, reason: `metadata ${key} is not a bool` });
    return v;
  }

  /** A metadata array, or undefined when absent. */
  array(key: string): GgufScalar[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw new CheckpointError({ file: this.file, reason: `metadata ${key} is not an array` });
    return v;
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

function alignmentOf(metadata: Map<string, GgufValue>, file: string): number {
  const raw = metadata.get('general.alignment');
  if (raw === undefined) return 32;
  const a = typeof raw === 'bigint' ? Number(raw) : raw;
  if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || a > GGUF_LIMITS.maxAlignment || (a & (a - 1)) !== 0) {
    throw new CheckpointError({ file, reason: `general.alignment ${String(raw)} is not a power of two up to ${GGUF_LIMITS.maxAlignment}` });
  }
  return a;
}

function checkTensor(file: string, info: { name: string; type: number; ne: number[]; offset: number }, alignment: number, dataLen: number): GgufTensorInfo {
  const bad = (reason: string) => new CheckpointError({ file, tensor: info.name, reason });
  if (!(info.type in GGML_TYPES)) {
    throw bad(`unsupported tensor type ${ggmlTypeName(info.type)} (supported: ${Object.values(GGML_TYPES).map((t) => t.name).join(', ')})`);
  }
  const type = info.type as GgmlType;
  const { blockSize, name: typeName } = GGML_TYPES[type];
  let numel = 1;
  for (const d of info.ne) {
    numel *= d;
    if (!Number.isSafeInteger(numel)) throw bad(`dimensions [${info.ne.join(', ')}] are too large to be real`);
  }
  if (info.ne[0]! % blockSize !== 0) {
    throw bad(`row length ${info.ne[0]} is not a multiple of ${typeName}'s block of ${blockSize}`);
  }
  if (info.offset % alignment !== 0) throw bad(`data offset ${info.offset} is not a multiple of the alignment ${alignment}`);
  const byteLength = tensorByteSize(type, numel);
  if (info.offset + byteLength > dataLen) {
    throw bad(`data ${info.offset}..${info.offset + byteLength} runs past the end of the data section (${Math.max(0, dataLen)} bytes): the file is truncated`);
  }
  return { name: info.name, type, shape: [...info.ne].reverse(), numel, offset: info.offset, byteLength };
}

function readScalar(r: HeaderReader, type: number, what: string): GgufScalar {
  switch (type) {
    case GgufValueType.UINT8:
      return r.u8(what);
    case GgufValueType.INT8:
      return r.i8(what);
    case GgufValueType.UINT16:
      return r.u16(what);
    case GgufValueType.INT16:
      return r.i16(what);
    case GgufValueType.UINT32:
      return r.u32(what);
    case GgufValueType.INT32:
      return r.i32(what);
    case GgufValueType.FLOAT32:
      return r.f32(what);
    case GgufValueType.BOOL: {
      const b = r.u8(what);
      if (b > 1) throw new CheckpointError({ file: r.file, reason: `${what}: bool byte ${b} is neither 0 nor 1` });
      return b === 1;
    }
    case GgufValueType.STRING:
      return r.string(what);
    case GgufValueType.UINT64: {
      const v = r.u64(what);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case GgufValueType.INT64: {
      const v = r.i64(what);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case GgufValueType.FLOAT64:
      return r.f64(what);
    default:
      throw new CheckpointError({ file: r.file, reason: `${what}: unknown value type ${type}` });
  }
}

function readValue(r: HeaderReader, type: number, key: string): GgufValue {
  if (type !== GgufValueType.ARRAY) return readScalar(r, type, key);
  const elemType = r.u32(`element type of ${key}`);
  if (elemType === GgufValueType.ARRAY) throw new CheckpointError({ file: r.file, reason: `${key}: nested arrays are not supported` });
  if (!(elemType in SCALAR_BYTES)) throw new CheckpointError({ file: r.file, reason: `${key}: unknown array element type ${elemType}` });
  const n = r.count(`length of ${key}`, GGUF_LIMITS.maxArrayLength);
  if (n * SCALAR_BYTES[elemType]! > r.remaining) {
    throw new CheckpointError({ file: r.file, reason: `${key}: array of ${n} elements cannot fit in the ${r.remaining} bytes left in the file` });
  }
  const out: GgufScalar[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = readScalar(r, elemType, key);
  return out;
}
