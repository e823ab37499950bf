import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { rewriteHeader, setHeaderLength, truncateFile } from '../../test/fixtures/checkpoints.js';
import {
  MAX_HEADER_BYTES,
  readSafetensors,
  readShardedSafetensors,
  SafetensorsCheckpoint,
  SafetensorsFile,
  writeSafetensors,
  type FloatTensor,
} from './safetensors.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skein-st-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function sample(): Record<string, FloatTensor> {
  const a = new Float32Array(6 * 5);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i * 1.7) * 3 + (i % 3) * 1e-3;
  return {
    a: { shape: [6, 5], data: a },
    b: { shape: [3], data: new Float32Array([1, -0.5, 1234.5]) },
    scalar: { shape: [], data: new Float32Array([7]) },
  };
}

function checkpointError(fn: () => unknown): CheckpointError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    return err as CheckpointError;
  }
  throw new Error('expected a CheckpointError');
}

describe('round trip', () => {
  it('F32 is exact and keeps metadata', () => {
    const file = path.join(dir, 'f32.safetensors');
    writeSafetensors(file, sample(), 'F32', { format: 'pt' });
    const st = SafetensorsFile.open(file);
    expect(st.metadata).toEqual({ format: 'pt' });
    expect(st.names()).toEqual(['a', 'b', 'scalar']);
    st.close();
    const back = readSafetensors(file);
    for (const [name, t] of Object.entries(sample())) {
      expect(back[name]!.shape).toEqual(t.shape);
      expect(Array.from(back[name]!.data)).toEqual(Array.from(t.data));
    }
  });

  it.each([
    ['F16', 2 ** -11],
    ['BF16', 2 ** -8],
  ] as const)('%s is within its precision', (dtype, relTol) => {
    const file = path.join(dir, `${dtype}.safetensors`);
    writeSafetensors(file, sample(), dtype);
    const back = readSafetensors(file);
    for (const [name, t] of Object.entries(sample())) {
      expect(back[name]!.shape).toEqual(t.shape);
      t.data.forEach((v, i) => {
        expect(Math.abs(back[name]!.data[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * relTol + 1e-7);
      });
    }
  });

  it('header is padded to 8 bytes and data follows it', () => {
    const file = path.join(dir, 'pad.safetensors');
    writeSafetensors(file, sample(), 'BF16');
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(buf.length).toBe(8 + n + (30 + 3 + 1) * 2);
  });

  it('reads I32 and I64 as floats', () => {
    const file = path.join(dir, 'ints.safetensors');
    const i32 = Buffer.from(new Int32Array([1, -2, 3]).buffer);
    const i64 = Buffer.from(new BigInt64Array([5n, -6n]).buffer);
    const header = Buffer.from(
      JSON.stringify({ i: { dtype: 'I32', shape: [3], data_offsets: [0, 12] }, l: { dtype: 'I64', shape: [2], data_offsets: [12, 28] } }),
    );
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(file, Buffer.concat([len, header, i32, i64]));
    const back = readSafetensors(file);
    expect(Array.from(back.i!.data)).toEqual([1, -2, 3]);
    expect(Array.from(back.l!.data)).toEqual([5, -6]);
  });

  it('writer rejects data that does not match the shape', () => {
    const e = checkpointError(() => writeSafetensors(path.join(dir, 'x.safetensors'), { w: { shape: [2, 2], data: new Float32Array(3) } }));
    expect(e.tensor).toBe('w');
  });
});

describe('bad files', () => {
  function fresh(name: string): string {
    const file = path.join(dir, name);
    writeSafetensors(file, sample(), 'F32');
    return file;
  }

  it('file shorter than 8 bytes', () => {
    const file = fresh('short.safetensors');
    truncateFile(file, 5);
    const e = checkpointError(() => readSafetensors(file));
    expect(e.file).toBe(file);
    expect(e.reason).toMatch(/shorter than/);
  });

  it('header length past the end', () => {
    const file = fresh('past.safetensors');
    setHeaderLength(file, 1_000_000);
    const e = checkpointError(() => readSafetensors(file));
    expect(e.file).toBe(file);
    expect(e.reason).toMatch(/past the end/);
  });

  it('huge header length', () => {
    const file = fresh('huge.safetensors');
    setHeaderLength(file, BigInt(MAX_HEADER_BYTES) + 1n);
    expect(checkpointError(() => readSafetensors(file)).reason).toMatch(/too large to be real/);
    setHeaderLength(file, 2n ** 63n);
    expect(checkpointError(() => readSafetensors(file)).reason).toMatch(/too large to be real/);
  });

  it('header not JSON', () => {
    const file = fresh('notjson.safetensors');
    const buf = fs.readFileSync(file);
    buf.write('{"a":', 8, 'utf8');
    buf.write('!', 9, 'utf8');
    fs.writeFileSync(file, buf);
    const e = checkpointError(() => readSafetensors(file));
    expect(e.file).toBe(file);
    expect(e.reason).toMatch(/not JSON/);
  });

  it('truncated data: offsets out of range', () => {
    const file = fresh('trunc.safetensors');
    truncateFile(file, fs.statSync(file).size - 4);
    const e = checkpointError(() => readSafetensors(file));
    expect(e.file).toBe(file);
    expect(e.tensor).toBe('scalar');
    expect(e.reason).toMatch(/out of range/);
  });

  it('offsets out of range', () => {
    const file = fresh('range.safetensors');
    rewriteHeader(file, (h) => {
      h.b.data_offsets = [1_000_000, 1_000_012];
    });
    const e = checkpointError(() => readSafetensors(file));
    expect(e.tensor).toBe('b');
    expect(e.reason).toMatch(/out of range/);
  });

  it('overlapping offsets', () => {
    const file = fresh('overlap.safetensors');
    rewriteHeader(file, (h) => {
      h.b.data_offsets = [8, 20];
    });
    const e = checkpointError(() => readSafetensors(file));
    expect(e.tensor).toBe('b');
    expect(e.reason).toMatch(/overlap/);
  });

  it('offsets that do not match shape × dtype', () => {
    const file = fresh('size.safetensors');
    rewriteHeader(file, (h) => {
      h.b.shape = [4];
    });
    const e = checkpointError(() => readSafetensors(file));
    expect(e.tensor).toBe('b');
    expect(e.reason).toMatch(/needs 16/);
  });

  it('unsupported dtype', () => {
    const file = fresh('dtype.safetensors');
    rewriteHeader(file, (h) => {
      h.a.dtype = 'F8_E4M3';
    });
    const e = checkpointError(() => readSafetensors(file));
    expect(e.file).toBe(file);
    expect(e.tensor).toBe('a');
    expect(e.reason).toMatch(/unsupported dtype "F8_E4M3"/);
  });

  it('missing file', () => {
    const file = path.join(dir, 'nope.safetensors');
    expect(checkpointError(() => readSafetensors(file)).file).toBe(file);
  });
});

describe('sharded', () => {
  function writeSharded(sub: string): string {
    const d = path.join(dir, sub);
    fs.mkdirSync(d, { recursive: true });
    const s = sample();
    writeSafetensors(path.join(d, 'model-00001-of-00002.safetensors'), { a: s.a! }, 'F16');
    writeSafetensors(path.join(d, 'model-00002-of-00002.safetensors'), { b: s.b!, scalar: s.scalar! }, 'F16');
    const index = path.join(d, 'model.safetensors.index.json');
    fs.writeFileSync(
      index,
      JSON.stringify({
        metadata: { total_size: 68 },
        weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', scalar: 'model-00002-of-00002.safetensors' },
      }),
    );
    return index;
  }

  it('reads every shard through the index', () => {
    const index = writeSharded('sh1');
    const all = readShardedSafetensors(index);
    expect(Object.keys(all).sort()).toEqual(['a', 'b', 'scalar']);
    // F16 spacing at 1024–2048 is 1: 1234.5 rounds to even.
    expect(all.b!.data[2]).toBe(1234);
    const cp = SafetensorsCheckpoint.openDir(path.dirname(index));
    expect(cp.expectedFile('b')).toBe(path.join(path.dirname(index), 'model-00002-of-00002.safetensors'));
    cp.close();
  });

  it('a missing shard is a CheckpointError naming it', () => {
    const index = writeSharded('sh2');
    const shard = path.join(path.dirname(index), 'model-00002-of-00002.safetensors');
    fs.rmSync(shard);
    const e = checkpointError(() => SafetensorsCheckpoint.openDir(path.dirname(index)));
    expect(e.file).toBe(shard);
    expect(e.reason).toMatch(/missing/);
  });

  it('a tensor named in the index but absent from its shard', () => {
    const index = writeSharded('sh3');
    const shard = path.join(path.dirname(index), 'model-00002-of-00002.safetensors');
    rewriteHeader(shard, (h) => {
      delete h.scalar;
    });
    const cp = SafetensorsCheckpoint.openDir(path.dirname(index));
    const e = checkpointError(() => cp.read('scalar'));
    cp.close();
    expect(e.file).toBe(shard);
    expect(e.tensor).toBe('scalar');
  });

  it('no weights at all', () => {
    const d = path.join(dir, 'empty');
    fs.mkdirSync(d);
    const e = checkpointError(() => SafetensorsCheckpoint.openDir(d));
    expect(e.file).toBe(path.join(d, 'model.safetensors'));
  });
});
