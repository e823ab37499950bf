/**
 * Rewrites a GGUF file with its 2-D weight tensors converted to another block type — the
 * same metadata (tokenizer, config) byte for byte, so llama.cpp and Skein both load the
 * result. The decode bench uses it to run SmolLM2-135M at Q8_0 and F32 from the Q4_1 file
 * (weights dequantized, then quantized again: the same values on both sides).
 *
 * @example
 * rewriteGguf('SmolLM2-135M-Instruct.Q4_1.gguf', '/tmp/smollm2.q8_0.gguf', 'q8_0');
 */
import * as fs from 'node:fs';
import { dequantize } from '../checkpoint/ggml-quants.js';
import { GgufFile } from '../checkpoint/gguf.js';
import { GGML_TYPE_ID, quantizeMatrix, type BlockType } from '../kernels/blocks.js';

/** Byte length of the key/value section that starts at `at` (GGUF v2/v3 value types). */
function kvSectionEnd(buf: Buffer, at: number, count: number): number {
  let p = at;
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const skipValue = (type: number): void => {
    if (type === 8) {
      p += 8 + Number(buf.readBigUInt64LE(p));
    } else if (type === 9) {
      const elem = buf.readUInt32LE(p);
      const n = Number(buf.readBigUInt64LE(p + 4));
      p += 12;
      if (elem !== 8 && elem !== 9) p += n * sizes[elem]!;
      else for (let i = 0; i < n; i++) skipValue(elem);
    } else {
      const s = sizes[type];
      if (s === undefined) throw new Error(`gguf-rewrite: unknown value type ${type} at byte ${p}`);
      p += s;
    }
  };
  for (let i = 0; i < count; i++) {
    p += 8 + Number(buf.readBigUInt64LE(p)); // key
    const type = buf.readUInt32LE(p);
    p += 4;
    skipValue(type);
  }
  return p;
}

/** Writes `dst`: `src` with every 2-D tensor stored as `type`, 1-D ones (norms) as they are. */
export function rewriteGguf(src: string, dst: string, type: BlockType): void {
  const g = GgufFile.open(src);
  try {
    const head = Buffer.alloc(Math.min(g.dataStart, fs.statSync(src).size));
    const fd = fs.openSync(src, 'r');
    fs.readSync(fd, head, 0, head.length, 0);
    fs.closeSync(fd);
    const kvCount = Number(head.readBigUInt64LE(16));
    const kvEnd = kvSectionEnd(head, 24, kvCount);
    const tensors = [...g.tensors.values()].sort((a, b) => a.offset - b.offset);
    const datas = tensors.map((t) => {
      const raw = g.readTensorBytes(t.name);
      if (t.shape.length !== 2) return { type: t.type as number, data: raw };
      const [rows, cols] = t.shape as [number, number];
      const m = quantizeMatrix(dequantize(t.type, raw, t.numel), rows, cols, type);
      return { type: GGML_TYPE_ID[type], data: m.data };
    });
    const align = g.alignment;
    const pad = (n: number) => (align - (n % align)) % align;
    const infos: Buffer[] = [];
    let offset = 0;
    tensors.forEach((t, i) => {
      const name = Buffer.from(t.name, 'utf8');
      const b = Buffer.alloc(8 + name.length + 4 + 8 * t.shape.length + 4 + 8);
      let p = b.writeBigUInt64LE(BigInt(name.length), 0);
      p += name.copy(b, p);
      p = b.writeUInt32LE(t.shape.length, p);
      for (const d of [...t.shape].reverse()) p = b.writeBigUInt64LE(BigInt(d), p); // ne0 first
      p = b.writeUInt32LE(datas[i]!.type, p);
      b.writeBigUInt64LE(BigInt(offset), p);
      infos.push(b);
      offset += datas[i]!.data.length + pad(datas[i]!.data.length);
    });
    const top = Buffer.alloc(24);
    head.copy(top, 0, 0, 8); // magic, version
    top.writeBigUInt64LE(BigInt(tensors.length), 8);
    top.writeBigUInt64LE(BigInt(kvCount), 16);
    const header = Buffer.concat([top, head.subarray(24, kvEnd), ...infos]);
    const out = fs.openSync(`${dst}.partial`, 'w');
    try {
      fs.writeSync(out, header);
      fs.writeSync(out, Buffer.alloc(pad(header.length)));
      for (const d of datas) {
        fs.writeSync(out, d.data);
        fs.writeSync(out, Buffer.alloc(pad(d.data.length)));
      }
    } finally {
      fs.closeSync(out);
    }
    fs.renameSync(`${dst}.partial`, dst);
  } finally {
    g.close();
  }
}
