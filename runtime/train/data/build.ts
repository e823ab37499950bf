/**
 * One entry point for Skein's default-model training data:
 *
 *   npx tsx runtime/train/data/build.ts --out data/ --vocab 4096
 *
 * builds the text corpus from installed npm packages (sources.ts), generates the ChatML
 * instruction set (instruct.ts), trains the byte-level BPE tokenizer (bpe.ts), writes it in
 * Hugging Face format to <out>/tokenizer/, and packs everything into <out>/train.bin,
 * <out>/val.bin and <out>/manifest.json (pack.ts). Evaluation items go to
 * <out>/eval/*.jsonl, the plain text of every part to <out>/text/, and the sources with
 * their licences (WordNet's licence text included) to <out>/SOURCES.md.
 */
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildCorpus, partStats, type CorpusPart } from './corpus.js';
import { BpeTokenizer, countPieces, trainBpe, SPECIAL_TOKENS } from './bpe.js';
import { readBpeModel, writeTokenizerFiles } from './tokenizer-files.js';
import { packDataset, type PackManifest } from './pack.js';
import { buildInstructionPart, buildEvalItems } from './instruct.js';
import { DATA_SOURCES, sourcesMarkdown } from './sources.js';
import { wordnetDictDir } from './wordnet.js';

export interface BuildOptions {
  out: string;
  vocabSize?: number;
  seed?: number;
  /** Number of generated instruction items for training (default 60000). */
  instructItems?: number;
  /**
   * Train a new tokenizer even when <out>/tokenizer/tokenizer.json exists. By default an
   * existing tokenizer with the requested vocab size is kept, so rebuilding the data never
   * changes token ids under a model that is already being trained.
   */
  retrainTokenizer?: boolean;
  /** Share of training windows drawn from each part. */
  mix?: Record<string, number>;
  log?: (line: string) => void;
}

export const DEFAULT_MIX: Record<string, number> = { instruct: 0.5, wordnet: 0.2, sotu: 0.15, email: 0.15 };

export interface BuildResult {
  manifest: PackManifest;
  tokenizerDir: string;
  stats: Record<string, unknown>;
}

/** Whether `dir` already holds a complete build. */
export function trainingDataExists(dir: string): boolean {
  return ['manifest.json', 'train.bin', 'val.bin', 'train.mask', 'val.mask', 'tokenizer/tokenizer.json'].every((f) => existsSync(join(dir, f)));
}

export async function buildTrainingData(opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const out = resolve(opts.out);
  const vocabSize = opts.vocabSize ?? 4096;
  const seed = opts.seed ?? 1;
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
  mkdirSync(out, { recursive: true });

  const corpus = buildCorpus();
  log(`[${since()}] corpus: ${corpus.parts.map((p) => `${p.name} ${p.train.length}+${p.val.length} docs`).join(', ')}`);
  const instruct = buildInstructionPart(corpus, { seed, items: opts.instructItems ?? 60_000 });
  const parts: CorpusPart[] = [instruct, ...corpus.parts];
  log(`[${since()}] instructions: ${instruct.train.length}+${instruct.val.length} items`);

  mkdirSync(join(out, 'text'), { recursive: true });
  for (const p of parts) {
    for (const split of ['train', 'val'] as const) {
      writeFileSync(join(out, 'text', `${p.name}.${split}.jsonl`), p[split].map((d) => JSON.stringify(d)).join('\n') + '\n');
    }
  }

  const tokenizerDir = join(out, 'tokenizer');
  const existing = join(tokenizerDir, 'tokenizer.json');
  let model = existsSync(existing) && !opts.retrainTokenizer ? readBpeModel(existing) : null;
  if (model && model.vocab.length !== vocabSize) model = null;
  if (model) {
    log(`[${since()}] tokenizer: kept ${existing} (${model.vocab.length} tokens; --retrain-tokenizer to replace it)`);
  } else {
    const counts = countPieces(parts.flatMap((p) => p.train.map((d) => d.text.replace(/<\|[a-z_]+\|>/g, '\n'))));
    model = trainBpe(counts, { vocabSize, specialTokens: SPECIAL_TOKENS });
    writeTokenizerFiles(model, tokenizerDir);
    log(`[${since()}] tokenizer: trained ${model.vocab.length} tokens, ${model.merges.length} merges -> ${tokenizerDir}`);
  }
  const tok = new BpeTokenizer(model);

  const specialTokens = Object.fromEntries(SPECIAL_TOKENS.map((t) => [t, tok.id(t)]));
  const manifest = packDataset(
    out,
    parts.map((p) => ({ name: p.name, train: p.train.map((d) => d.text), val: p.val.map((d) => d.text) })),
    tok,
    {
      eot: tok.id('<|endoftext|>'),
      specialTokens,
      mix: opts.mix ?? DEFAULT_MIX,
      tokenizer: 'tokenizer/tokenizer.json',
      chat: { imStart: tok.id('<|im_start|>'), imEnd: tok.id('<|im_end|>'), assistantHeader: tok.encode('assistant\n') },
    },
  );
  log(`[${since()}] packed: train ${manifest.splits.train.tokens} tokens, val ${manifest.splits.val.tokens} tokens`);

  mkdirSync(join(out, 'eval'), { recursive: true });
  const evalItems = buildEvalItems(corpus, { seed: seed + 1000 });
  writeFileSync(join(out, 'eval', 'items.jsonl'), evalItems.map((e) => JSON.stringify(e)).join('\n') + '\n');

  const stats: Record<string, unknown> = {
    seconds: (Date.now() - t0) / 1000,
    vocabSize: model.vocab.length,
    parts: parts.map((p) => {
      const r = manifest.parts.find((x) => x.name === p.name)!;
      const s = partStats(p);
      return {
        ...s,
        trainTokens: r.train.end - r.train.start,
        valTokens: r.val.end - r.val.start,
        bytesPerToken: +(Buffer.byteLength(p.train.map((d) => d.text).join('')) / (r.train.end - r.train.start - r.train.docEnd + r.train.docStart)).toFixed(3),
      };
    }),
    evalItems: evalItems.length,
    sources: DATA_SOURCES,
  };
  writeFileSync(join(out, 'stats.json'), JSON.stringify(stats, null, 2));
  const licence = readFileSync(join(wordnetDictDir(), '..', 'LICENSE'), 'utf8');
  writeFileSync(join(out, 'SOURCES.md'), sourcesMarkdown(licence));
  log(`[${since()}] done`);
  return { manifest, tokenizerDir, stats };
}

function parseArgs(argv: string[]): BuildOptions {
  const opts: BuildOptions = { out: 'data' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--out') (opts.out = v), i++;
    else if (a === '--vocab') (opts.vocabSize = Number(v)), i++;
    else if (a === '--seed') (opts.seed = Number(v)), i++;
    else if (a === '--instruct-items') (opts.instructItems = Number(v)), i++;
    else if (a === '--retrain-tokenizer') opts.retrainTokenizer = true;
  }
  return opts;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const result = await buildTrainingData(parseArgs(process.argv.slice(2)));
  process.stdout.write(`${JSON.stringify({ ...result.stats, sources: undefined }, null, 2)}\n`);
}
