/**
 * The distilled-rows cache (runtime/train/heads-cache.ts) on skein-mini: chunks are written
 * as they finish and read back instead of regenerated; asking for more rows adds chunks
 * after the cached ones; two shards fill disjoint chunks that together equal one process's
 * rows; read-only stops at what is cached. Prompts are never near-duplicates.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { loadModel, type LoadedCheckpoint } from '../checkpoint/load.js';
import { cacheFolder, fillCache, type CacheOptions } from './heads-cache.js';
import { instructionPromptTexts, jaccard, NEAR_DUPLICATE } from './heads-data.js';

let model: LoadedCheckpoint;
let prompts: ReturnType<typeof instructionPromptTexts>;

beforeAll(async () => {
  await initBackend();
  model = await loadModel('skein-mini', { eagerTokenizer: true });
  prompts = instructionPromptTexts(model.tokenizer(), 60, false, 1, 256); // builds the corpus pools, once per process (seconds)
}, 120_000);
afterAll(() => model.dispose());

const options = (dir: string, rows: number, extra: Partial<CacheOptions> = {}): CacheOptions => ({ dir, heldOut: false, rows, heads: 2, maxTokens: 4, chunkPrompts: 3, ...extra });

describe('distilled-rows cache', () => {
  it('writes chunks as they finish, reads them back, and adds chunks when more rows are asked for', () => {
    const dir = tempDir('skein-heads-data-');
    const tok = model.tokenizer();
    const first = fillCache(model, tok, options(dir, 1));
    const folder = cacheFolder(options(dir, 1));
    expect(fs.readdirSync(folder)).toEqual(['chunk-0000.safetensors']);
    expect(first.rows).toBeGreaterThan(0);
    expect(first.targets).toHaveLength(first.rows * 2);
    const mtime = fs.statSync(`${folder}/chunk-0000.safetensors`).mtimeMs;
    const more = fillCache(model, tok, options(dir, first.rows + 1));
    expect(fs.readdirSync(folder)).toEqual(['chunk-0000.safetensors', 'chunk-0001.safetensors']);
    expect(fs.statSync(`${folder}/chunk-0000.safetensors`).mtimeMs).toBe(mtime);
    expect(Array.from(more.hidden.subarray(0, first.hidden.length))).toEqual(Array.from(first.hidden));
    expect(fillCache(model, tok, options(dir, 10_000, { readOnly: true })).rows).toBe(more.rows);

    const sharded = tempDir('skein-heads-data-');
    fillCache(model, tok, options(sharded, 1, { shard: { index: 1, count: 2 } }));
    expect(fs.readdirSync(cacheFolder(options(sharded, 1)))).toEqual(['chunk-0001.safetensors']);
    const gap = fillCache(model, tok, options(sharded, 10_000, { readOnly: true })); // chunk 0 missing: chunk 1 still read
    expect(gap.rows).toBe(more.rows - first.rows);
    fillCache(model, tok, options(sharded, 1, { shard: { index: 0, count: 2 } }));
    const joined = fillCache(model, tok, options(sharded, more.rows, { readOnly: true }));
    expect(Array.from(joined.targets)).toEqual(Array.from(more.targets));
  });

  it('skips near-duplicate prompts', () => {
    expect(prompts).toHaveLength(60);
    for (let i = 0; i < prompts.length; i++) for (let j = 0; j < i; j++) expect(jaccard(prompts[i]!.words, prompts[j]!.words)).toBeLessThan(NEAR_DUPLICATE);
  });
});
