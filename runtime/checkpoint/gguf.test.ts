import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { arr, f32, u32, u64, writeGguf, type WriteGgufOptions } from './gguf-writer.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { dequantize, GgmlType } from './ggml-quants.js';
import { GgufFile, GgufValueType, GGUF_LIMITS } from './gguf.js';

const dir = tempDir('skein-gguf-');
let n = 0;
const fileFor = () => path.join(dir, `t${n++}.gguf`);

function sample(): WriteGgufOptions {
  return {
    metadata: {
      'general.architecture': 'llama',
      'llama.block_count': u32(2),
      'llama.rope.freq_base': f32(500000),
      'general.flag': true,
      'some.big': u64(2n ** 60n),
      'some.list': arr(GgufValueType.INT32, [3, -1, 7]),
      'tokenizer.ggml.tokens': ['a', 'b', 'ü'],
    },
    tensors: [
      { name: 'a.weight', shape: [4, 32], type: GgmlType.Q8_0, data: new Float32Array(128).map((_, i) => i / 10) },
      { name: 'b.weight', shape: [3], type: GgmlType.F32, data: new Float32Array([1, 2, 3]) },
      { name: 'c.weight', shape: [2, 2, 2], type: GgmlType.F16, data: new Float32Array([1, -1, 0.5, 2, 3, 4, 5, 6]) },
    ],
  };
}

function expectCheckpointError(fn: () => unknown, tensor: string | undefined, reason: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(CheckpointError);
  const e = caught as CheckpointError;
  expect(e.tensor).toBe(tensor);
  expect(e.reason).toMatch(reason);
  expect(e.file).toMatch(/\.gguf$/);
}

describe('GgufFile', () => {
  for (const version of [2, 3]) {
    it(`reads metadata of every type and tensor infos (v${version})`, () => {
      const file = fileFor();
      const stored = writeGguf(file, { ...sample(), version });
      const g = GgufFile.open(file);
      try {
        expect(g.version).toBe(version);
        expect(g.string('general.architecture')).toBe('llama');
        expect(g.number('llama.block_count')).toBe(2);
        expect(g.number('llama.rope.freq_base')).toBe(500000);
        expect(g.bool('general.flag')).toBe(true);
        expect(g.metadata.get('some.big')).toBe(2n ** 60n);
        expect(() => g.number('some.big')).toThrow(/out of range/);
        expect(g.array('some.list')).toEqual([3, -1, 7]);
        expect(g.array('tokenizer.ggml.tokens')).toEqual(['a', 'b', 'ü']);
        expect(g.string('missing')).toBeUndefined();
        expect(() => g.string('llama.block_count')).toThrow(CheckpointError);
        const a = g.tensor('a.weight');
        expect(a).toMatchObject({ type: GgmlType.Q8_0, shape: [4, 32], numel: 128, offset: 0, byteLength: 4 * 34 });
        expect(g.tensor('b.weight').offset % 32).toBe(0);
        expect(g.tensor('c.weight').shape).toEqual([2, 2, 2]);
        expect(g.dataStart % 32).toBe(0);
        const c = g.tensor('c.weight');
        expect([...dequantize(c.type, g.readTensorBytes('c.weight'), c.numel)]).toEqual([...stored['c.weight']!]);
        expect([...dequantize(a.type, g.readTensorBytes('a.weight'), a.numel)]).toEqual([...stored['a.weight']!]);
      } finally {
        g.close();
      }
    });
  }

  it('honours general.alignment', () => {
    const file = fileFor();
    writeGguf(file, { ...sample(), alignment: 64 });
    GgufFile.inspect(file, (g) => {
      expect(g.alignment).toBe(64);
      expect(g.dataStart % 64).toBe(0);
      expect(g.tensor('b.weight').offset % 64).toBe(0);
    });
  });

  it('a missing tensor is an error naming it', () => {
    const file = fileFor();
    writeGguf(file, sample());
    GgufFile.inspect(file, (g) => expectCheckpointError(() => g.readTensorBytes('nope'), 'nope', /missing tensor/));
  });
});

describe('GgufFile: bad files are CheckpointErrors naming file and tensor', () => {
  const broken = (corrupt: WriteGgufOptions['corrupt'], extra: Partial<WriteGgufOptions> = {}) => {
    const file = fileFor();
    writeGguf(file, { ...sample(), ...extra, corrupt });
    return file;
  };

  it('bad magic', () => {
    expectCheckpointError(() => GgufFile.open(broken({ magic: 0x12345678 })), undefined, /bad magic 0x12345678/);
    const notGguf = fileFor();
    fs.writeFileSync(notGguf, '{"hello": 1}');
    expectCheckpointError(() => GgufFile.open(notGguf), undefined, /bad magic/);
  });

  it('unsupported versions', () => {
    for (const version of [1, 4]) {
      const file = fileFor();
      writeGguf(file, { ...sample(), version });
      expectCheckpointError(() => GgufFile.open(file), undefined, new RegExp(`unsupported GGUF version ${version}`));
    }
  });

  it('a file shorter than its header', () => {
    const file = fileFor();
    writeGguf(file, sample());
    // Cut inside the last tensor info, two bytes into its n_dims.
    fs.truncateSync(file, fs.readFileSync(file).indexOf('c.weight') + 'c.weight'.length + 2);
    expectCheckpointError(() => GgufFile.open(file), undefined, /file ends inside the header \(reading n_dims of c.weight at byte \d+/);
    fs.truncateSync(file, 2);
    expectCheckpointError(() => GgufFile.open(file), undefined, /too short/);
  });

  it('truncated tensor data', () => {
    const file = fileFor();
    writeGguf(file, sample());
    fs.truncateSync(file, fs.statSync(file).size - 40);
    expectCheckpointError(() => GgufFile.open(file), 'c.weight', /runs past the end of the data section.*truncated/);
  });

  it('misaligned and out-of-range offsets, overlaps', () => {
    expectCheckpointError(() => GgufFile.open(broken({ offsets: { 'b.weight': 140 } })), 'b.weight', /offset 140 is not a multiple of the alignment 32/);
    expectCheckpointError(() => GgufFile.open(broken({ offsets: { 'c.weight': 224 } })), 'c.weight', /data 224..240 runs past the end of the data section \(224 bytes\)/);
    expectCheckpointError(() => GgufFile.open(broken({ offsets: { 'b.weight': 2n ** 40n as unknown as number } })), 'b.weight', /past the end of the/);
    expectCheckpointError(() => GgufFile.open(broken({ offsets: { 'b.weight': 96 } })), 'b.weight', /overlaps tensor a\.weight/);
  });

  it('an unknown or unsupported tensor type', () => {
    expectCheckpointError(() => GgufFile.open(broken({ types: { 'b.weight': 10 } })), 'b.weight', /unsupported tensor type Q2_K \(type 10\)/);
    expectCheckpointError(() => GgufFile.open(broken({ types: { 'b.weight': 77 } })), 'b.weight', /unknown type 77/);
  });

  it('a row that is not whole blocks', () => {
    const file = fileFor();
    const opts = sample();
    opts.tensors = [{ name: 'odd.weight', shape: [2, 40], type: GgmlType.F32, data: new Float32Array(80) }];
    writeGguf(file, { ...opts, corrupt: { types: { 'odd.weight': GgmlType.Q8_0 } } });
    expectCheckpointError(() => GgufFile.open(file), 'odd.weight', /row length 40 is not a multiple of Q8_0's block of 32/);
  });

  it('absurd counts are refused before anything is allocated', () => {
    expectCheckpointError(() => GgufFile.open(broken({ tensorCount: 2n ** 62n })), undefined, /tensor count is \d+, more than any real file/);
    expectCheckpointError(() => GgufFile.open(broken({ tensorCount: BigInt(GGUF_LIMITS.maxTensors) })), undefined, /more than the \d+-byte file can hold/);
    expectCheckpointError(() => GgufFile.open(broken({ kvCount: 2n ** 40n })), undefined, /metadata count/);
  });

  it('absurd string and array lengths', () => {
    const file = fileFor();
    writeGguf(file, sample());
    const bytes = fs.readFileSync(file);
    // The first key's u64 length sits right after magic, version and the two counts.
    const hugeString = Buffer.from(bytes);
    hugeString.writeBigUInt64LE(2n ** 33n, 24);
    fs.writeFileSync(file, hugeString);
    expectCheckpointError(() => GgufFile.open(file), undefined, /length of metadata key #0 is 8589934592, more than any real file/);
    const longString = Buffer.from(bytes);
    longString.writeBigUInt64LE(BigInt(GGUF_LIMITS.maxStringBytes - 1), 24);
    fs.writeFileSync(file, longString);
    expectCheckpointError(() => GgufFile.open(file), undefined, /string length \d+ runs past the end of the file/);
    // The token list: find its element count (3) after the key and the array's types.
    const key = Buffer.from('tokenizer.ggml.tokens');
    const at = bytes.indexOf(key) + key.length + 8;
    const longArray = Buffer.from(bytes);
    longArray.writeBigUInt64LE(1_000_000n, at);
    fs.writeFileSync(file, longArray);
    expectCheckpointError(() => GgufFile.open(file), undefined, /tokenizer.ggml.tokens: array of 1000000 elements cannot fit/);
  });

  it('duplicate names and a bad alignment', () => {
    const dup = fileFor();
    const opts = sample();
    writeGguf(dup, { ...opts, tensors: [opts.tensors[1]!, { ...opts.tensors[1]! }] });
    expectCheckpointError(() => GgufFile.open(dup), 'b.weight', /duplicate tensor name/);
    const align = fileFor();
    writeGguf(align, { ...opts, metadata: { ...opts.metadata, 'general.alignment': u32(48) } });
    expectCheckpointError(() => GgufFile.open(align), undefined, /general.alignment 48 is not a power of two/);
  });

  it('a path that is not there', () => {
    expectCheckpointError(() => GgufFile.open(path.join(dir, 'absent.gguf')), undefined, /cannot open/);
  });
});
