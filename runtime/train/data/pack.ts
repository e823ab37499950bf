/**
 * Packs tokenised documents into flat binaries for training and gives the trainer a fast
 * random-window sampler over them.
 *
 * Layout of `dir`:
 *   train.bin / val.bin   tokens, little-endian uint16 (uint32 when the vocabulary > 65536);
 *                         parts one after another; every document is preceded by
 *                         <|endoftext|>, which thus separates documents and acts as BOS.
 *   train.idx / val.idx   uint32 offsets of each document's leading <|endoftext|>.
 *   train.mask / val.mask uint8 per token: 1 where the token is worth predicting (all text
 *                         of plain documents; in ChatML documents only assistant replies
 *                         and their closing <|im_end|>), 0 for chat prompts and headers.
 *   manifest.json         PackManifest: dtype, vocab size, special ids, per part and split
 *                         the token range [start, end) and document range, mix weights.
 */
import { readFileSync, writeFileSync, mkdirSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import type { Rng } from './util.js';

export type SplitName = 'train' | 'val';

export interface PartRange {
  /** Token range [start, end) in the split's .bin. */
  start: number;
  end: number;
  /** Document range [docStart, docEnd) in the split's .idx. */
  docStart: number;
  docEnd: number;
}

export interface PackManifest {
  version: 1;
  dtype: 'uint16' | 'uint32';
  vocabSize: number;
  tokenizer: string;
  specialTokens: Record<string, number>;
  /** Sampling weight per part (sum 1): the share of training windows drawn from it. */
  mix: Record<string, number>;
  parts: { name: string; train: PartRange; val: PartRange }[];
  splits: Record<SplitName, { tokens: number; docs: number }>;
  /** Longest document per part and split, in tokens (e.g. QA passages up to ~1500). */
  maxDocTokens: Record<string, number>;
  createdBy: string;
}

export interface PackInput {
  name: string;
  train: Iterable<string>;
  val: Iterable<string>;
}

/** Grows a typed token buffer without holding a JS array of every token. */
class TokenSink {
  private buf: Uint32Array = new Uint32Array(1 << 20);
  private maskBuf: Uint8Array = new Uint8Array(1 << 20);
  length = 0;
  push(ids: readonly number[], mask: Uint8Array): void {
    if (this.length + ids.length > this.buf.length) {
      let n = this.buf.length;
      while (n < this.length + ids.length) n *= 2;
      const next = new Uint32Array(n);
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
      const nextMask = new Uint8Array(n);
      nextMask.set(this.maskBuf.subarray(0, this.length));
      this.maskBuf = nextMask;
    }
    for (let i = 0; i < ids.length; i++) this.buf[this.length + i] = ids[i];
    this.maskBuf.set(mask, this.length);
    this.length += ids.length;
  }
  view(): Uint32Array {
    return this.buf.subarray(0, this.length);
  }
  mask(): Uint8Array {
    return this.maskBuf.subarray(0, this.length);
  }
}

export interface Encoder {
  vocabSize: number;
  encode(text: string, out?: number[]): number[];
}

/** Token ids that delimit ChatML turns, for the loss mask. */
export interface ChatMarkers {
  imStart: number;
  imEnd: number;
  /** Ids of "assistant\n" as they follow <|im_start|>. */
  assistantHeader: number[];
}

/**
 * Loss mask of one tokenised document (ids[0] is the leading <|endoftext|>): 1 everywhere
 * for plain text; for ChatML, 1 only on assistant contents and their <|im_end|>.
 */
export function lossMask(ids: readonly number[], m: ChatMarkers): Uint8Array {
  const mask = new Uint8Array(ids.length);
  if (!ids.includes(m.imStart)) return mask.fill(1);
  mask[0] = 1;
  let inAssistant = false;
  for (let i = 1; i < ids.length; i++) {
    if (ids[i] === m.imStart) {
      inAssistant = m.assistantHeader.every((h, j) => ids[i + 1 + j] === h);
      if (inAssistant) i += m.assistantHeader.length;
      continue;
    }
    if (inAssistant) {
      mask[i] = 1;
      if (ids[i] === m.imEnd) inAssistant = false;
    }
  }
  return mask;
}

/** Tokenises and writes every part; returns the manifest (also written to dir). */
export function packDataset(
  dir: string,
  parts: PackInput[],
  enc: Encoder,
  opts: { eot: number; specialTokens: Record<string, number>; mix: Record<string, number>; tokenizer: string; chat?: ChatMarkers },
): PackManifest {
  mkdirSync(dir, { recursive: true });
  const dtype = enc.vocabSize <= 65536 ? 'uint16' : 'uint32';
  const manifest: PackManifest = {
    version: 1,
    dtype,
    vocabSize: enc.vocabSize,
    tokenizer: opts.tokenizer,
    specialTokens: opts.specialTokens,
    mix: normalise(opts.mix, parts.map((p) => p.name)),
    parts: parts.map((p) => ({ name: p.name, train: emptyRange(), val: emptyRange() })),
    splits: { train: { tokens: 0, docs: 0 }, val: { tokens: 0, docs: 0 } },
    maxDocTokens: {},
    createdBy: 'runtime/train/data/pack.ts',
  };
  for (const split of ['train', 'val'] as const) {
    const sink = new TokenSink();
    const docStarts: number[] = [];
    parts.forEach((p, i) => {
      const range = manifest.parts[i][split];
      range.start = sink.length;
      range.docStart = docStarts.length;
      let longest = 0;
      for (const text of p[split]) {
        docStarts.push(sink.length);
        const ids = enc.encode(text, [opts.eot]);
        longest = Math.max(longest, ids.length - 1);
        sink.push(ids, opts.chat ? lossMask(ids, opts.chat) : new Uint8Array(ids.length).fill(1));
      }
      range.end = sink.length;
      range.docEnd = docStarts.length;
      manifest.maxDocTokens[`${p.name}.${split}`] = longest;
    });
    const tokens = sink.view();
    const out = dtype === 'uint16' ? Uint16Array.from(tokens) : tokens;
    writeTyped(join(dir, `${split}.bin`), out);
    writeTyped(join(dir, `${split}.idx`), Uint32Array.from(docStarts));
    writeFileSync(join(dir, `${split}.mask`), sink.mask());
    manifest.splits[split] = { tokens: tokens.length, docs: docStarts.length };
  }
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  return manifest;
}

function emptyRange(): PartRange {
  return { start: 0, end: 0, docStart: 0, docEnd: 0 };
}

function normalise(mix: Record<string, number>, names: string[]): Record<string, number> {
  const total = names.reduce((s, n) => s + (mix[n] ?? 0), 0);
  if (total <= 0) throw new RangeError('mix weights must be positive for at least one part');
  return Object.fromEntries(names.map((n) => [n, (mix[n] ?? 0) / total]));
}

function writeTyped(path: string, arr: Uint16Array | Uint32Array): void {
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength));
  } finally {
    closeSync(fd);
  }
}

function readTyped(path: string, dtype: 'uint16' | 'uint32'): Uint16Array | Uint32Array {
  const b = readFileSync(path);
  // Copy into an aligned buffer: Buffer slices from the pool may start at odd offsets.
  const bytes = new Uint8Array(b.byteLength);
  bytes.set(b);
  return dtype === 'uint16' ? new Uint16Array(bytes.buffer) : new Uint32Array(bytes.buffer);
}

export interface Batch {
  /** batch*seqLen token ids, row-major (batch, seqLen). */
  inputs: Int32Array;
  /** The inputs shifted by one: targets[b, t] = the token after inputs[b, t]. */
  targets: Int32Array;
  /**
   * Loss weight per target: 1 for answer/plain-text tokens, `promptWeight` (default 1)
   * for chat prompt tokens. Use a weighted mean of the per-token loss.
   */
  weights: Float32Array;
  batch: number;
  seqLen: number;
}

export interface SampleOptions {
  /** Override the manifest's mix weights (part name -> weight). */
  mix?: Record<string, number>;
  /** Probability that a window starts at a document start (default 0.5). */
  alignProb?: number;
  /** Weight of targets inside chat prompts (default 1 = plain LM loss; 0 = answers only). */
  promptWeight?: number;
}

export interface SplitView {
  tokens: Uint16Array | Uint32Array;
  docStarts: Uint32Array;
  /** 1 where a target token counts fully (see the file header). */
  mask: Uint8Array;
}

export interface Dataset {
  manifest: PackManifest;
  train: SplitView;
  val: SplitView;
  /** Random windows of seqLen+1 tokens: parts drawn by mix weight, positions uniformly. */
  sample(rng: Rng, batch: number, seqLen: number, opts?: SampleOptions & { split?: SplitName }): Batch;
  /** Deterministic windows spread evenly over each part of a split, for evaluation loss. */
  evalBatches(seqLen: number, opts?: { split?: SplitName; perPart?: number; batch?: number; promptWeight?: number }): Batch[];
}

export function openDataset(dir: string): Dataset {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as PackManifest;
  const load = (s: SplitName): SplitView => ({
    tokens: readTyped(join(dir, `${s}.bin`), manifest.dtype),
    docStarts: readTyped(join(dir, `${s}.idx`), 'uint32') as Uint32Array,
    mask: new Uint8Array(readFileSync(join(dir, `${s}.mask`))),
  });
  const views: Record<SplitName, SplitView> = { train: load('train'), val: load('val') };

  function windowStart(view: SplitView, r: PartRange, span: number, rng: Rng, alignProb: number): number {
    const total = view.tokens.length;
    if (r.end - r.start < span) {
      // A part shorter than one window: start at its beginning and run into what follows.
      return Math.max(0, Math.min(r.start, total - span));
    }
    if (r.docEnd > r.docStart && rng() < alignProb) {
      const d = r.docStart + Math.floor(rng() * (r.docEnd - r.docStart));
      return Math.min(view.docStarts[d], r.end - span);
    }
    return r.start + Math.floor(rng() * (r.end - r.start - span + 1));
  }

  function fill(view: SplitView, starts: number[], seqLen: number, promptWeight = 1): Batch {
    const batch = starts.length;
    const inputs = new Int32Array(batch * seqLen);
    const targets = new Int32Array(batch * seqLen);
    const weights = new Float32Array(batch * seqLen);
    starts.forEach((s, b) => {
      const w = view.tokens.subarray(s, s + seqLen + 1);
      const m = view.mask.subarray(s, s + seqLen + 1);
      for (let t = 0; t < seqLen; t++) {
        inputs[b * seqLen + t] = w[t];
        targets[b * seqLen + t] = w[t + 1];
        weights[b * seqLen + t] = m[t + 1] ? 1 : promptWeight;
      }
    });
    return { inputs, targets, weights, batch, seqLen };
  }

  return {
    manifest,
    train: views.train,
    val: views.val,
    sample(rng, batch, seqLen, opts = {}) {
      const split = opts.split ?? 'train';
      const view = views[split];
      const span = seqLen + 1;
      if (view.tokens.length < span) throw new RangeError(`split ${split} has ${view.tokens.length} tokens, fewer than seqLen+1`);
      const mix = opts.mix ? normalise(opts.mix, manifest.parts.map((p) => p.name)) : manifest.mix;
      const parts = manifest.parts.filter((p) => (mix[p.name] ?? 0) > 0 && p[split].end > p[split].start);
      const weights = parts.map((p) => mix[p.name]);
      const wsum = weights.reduce((a, b) => a + b, 0);
      const starts: number[] = [];
      for (let b = 0; b < batch; b++) {
        let u = rng() * wsum;
        let k = 0;
        while (k < parts.length - 1 && u >= weights[k]) u -= weights[k++];
        starts.push(windowStart(view, parts[k][split], span, rng, opts.alignProb ?? 0.5));
      }
      return fill(view, starts, seqLen, opts.promptWeight ?? 1);
    },
    evalBatches(seqLen, opts = {}) {
      const split = opts.split ?? 'val';
      const view = views[split];
      const perPart = opts.perPart ?? 16;
      const batchSize = opts.batch ?? 8;
      const span = seqLen + 1;
      const starts: number[] = [];
      for (const p of manifest.parts) {
        const r = p[split];
        if (r.end - r.start < span) continue;
        const room = r.end - r.start - span;
        for (let i = 0; i < perPart; i++) starts.push(r.start + Math.floor((room * i) / Math.max(1, perPart - 1)));
      }
      const out: Batch[] = [];
      for (let i = 0; i < starts.length; i += batchSize) out.push(fill(view, starts.slice(i, i + batchSize), seqLen, opts.promptWeight ?? 1));
      return out;
    },
  };
}
