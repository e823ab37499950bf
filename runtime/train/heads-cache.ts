/**
 * The on-disk cache of self-distillation rows (heads-data.ts), in chunks: chunk i holds the
 * rows of prompts [i·C, (i+1)·C) of one seeded prompt stream (instructionPrompts is
 * prefix-stable), one safetensors file each, written when the chunk is done. A run that is
 * stopped loses at most the chunk in progress; asking for more rows adds chunks; several
 * processes can fill one cache at once (`shard`: process s of n takes chunks i ≡ s mod n),
 * since generation is single-threaded and the machine has more cores than one.
 *
 * The folder names what the rows depend on (split, seed, continuation length, heads), so a
 * change of any of them starts a new cache instead of mixing rows.
 *
 * @example
 * const rows = fillCache(model, tokenizer, { dir: '.skein/heads-data/smollm2-135m-instruct', heldOut: false, rows: 100_000, heads: 4, maxTokens: 128 });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensors, writeSafetensors } from '../checkpoint/safetensors.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import type { LoadedModel } from '../model/types.js';
import { generate, instructionPrompts, rowsOf, type DistilledRows } from './heads-data.js';

export interface CacheOptions {
  /** The model's cache folder; the split's chunks go in a subfolder named after the options. */
  dir: string;
  heldOut: boolean;
  /** Fill until at least this many rows are cached (across shards: this shard's share). */
  rows: number;
  heads: number;
  maxTokens: number;
  seed?: number;
  /** Prompts per chunk (default 64: four full batches of 16). */
  chunkPrompts?: number;
  maxPromptTokens?: number;
  maxBatch?: number;
  shard?: { index: number; count: number };
  /** Only read what is cached (every chunk present, gaps skipped), generate nothing. */
  readOnly?: boolean;
  log?: (line: string) => void;
}

export function cacheFolder(o: CacheOptions): string {
  return path.join(o.dir, `${o.heldOut ? 'heldout' : 'train'}-s${o.seed ?? 1}-t${o.maxTokens}-k${o.heads}-c${o.chunkPrompts ?? 64}`);
}

const chunkFile = (folder: string, i: number) => path.join(folder, `chunk-${String(i).padStart(4, '0')}.safetensors`);

/** Cached rows up to `o.rows` (every chunk present, in chunk order), generating the missing chunks of this shard. */
export function fillCache(model: LoadedModel, tokenizer: ModelTokenizer, o: CacheOptions): DistilledRows {
  const folder = cacheFolder(o);
  fs.mkdirSync(folder, { recursive: true });
  const C = o.chunkPrompts ?? 64;
  const shard = o.shard ?? { index: 0, count: 1 };
  const chunks: DistilledRows[] = [];
  let have = 0;
  let mine = 0;
  let prompts: number[][] = [];
  for (let i = 0; shard.count === 1 ? have < o.rows : mine * shard.count < o.rows; i++) {
    const file = chunkFile(folder, i);
    const ours = i % shard.count === shard.index;
    if (fs.existsSync(file)) {
      const r = readChunk(file);
      chunks.push(r);
      have += r.rows;
      if (ours) mine += r.rows;
      continue;
    }
    if (o.readOnly) {
      if (i >= lastCached(folder)) break;
      continue; // a shard that has not finished an earlier chunk: read the later ones
    }
    if (!ours) continue;
    if (prompts.length < (i + 1) * C) prompts = instructionPrompts(tokenizer, Math.max((i + 8) * C, Math.ceil((o.rows * shard.count) / 25)), o.heldOut, o.seed ?? 1, o.maxPromptTokens ?? 256);
    const slice = prompts.slice(i * C, (i + 1) * C);
    if (slice.length === 0) break; // the prompt stream ran dry
    const t = performance.now();
    const r = rowsOf(generate(model, tokenizer, slice, o.maxTokens, undefined, true, o.maxBatch ?? 16), model.config.hiddenSize, o.heads, slice.length);
    writeChunk(file, r);
    chunks.push(r);
    have += r.rows;
    mine += r.rows;
    o.log?.(`chunk ${i}: ${r.rows} rows from ${slice.length} prompts in ${((performance.now() - t) / 1000).toFixed(0)} s (${have} rows cached)`);
  }
  return concatRows(chunks, model.config.hiddenSize, o.heads);
}

/** One past the highest chunk index in the folder. */
function lastCached(folder: string): number {
  const ids = fs.readdirSync(folder).map((f) => /^chunk-(\d+)\.safetensors$/.exec(f)?.[1]).filter((x) => x !== undefined).map(Number);
  return ids.length === 0 ? 0 : Math.max(...ids) + 1;
}

function writeChunk(file: string, r: DistilledRows): void {
  const tmp = `${file}.tmp`;
  writeSafetensors(tmp, {
    hidden: { shape: [r.rows, r.hiddenSize], data: r.hidden },
    targets: { shape: [r.rows, r.heads], data: Float32Array.from(r.targets) },
    next: { shape: [r.rows], data: Float32Array.from(r.next) },
    prompts: { shape: [1], data: Float32Array.of(r.prompts) },
  });
  fs.renameSync(tmp, file); // a chunk file is complete or absent
}

function readChunk(file: string): DistilledRows {
  const t = readSafetensors(file);
  const [n, d] = t.hidden!.shape as [number, number];
  const K = t.targets!.shape[1]!;
  return { hidden: t.hidden!.data, targets: Int32Array.from(t.targets!.data), next: Int32Array.from(t.next!.data), rows: n, heads: K, hiddenSize: d, prompts: t.prompts!.data[0]! };
}

export function concatRows(parts: readonly DistilledRows[], hiddenSize: number, heads: number): DistilledRows {
  const rows = parts.reduce((n, p) => n + p.rows, 0);
  const hidden = new Float32Array(rows * hiddenSize);
  const targets = new Int32Array(rows * heads);
  const next = new Int32Array(rows);
  let at = 0;
  for (const p of parts) {
    hidden.set(p.hidden, at * hiddenSize);
    targets.set(p.targets, at * heads);
    next.set(p.next, at);
    at += p.rows;
  }
  return { hidden, targets, next, rows, heads, hiddenSize, prompts: parts.reduce((n, p) => n + p.prompts, 0) };
}
