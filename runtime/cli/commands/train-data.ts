/**
 * `skein train-data`: builds the default model's training data and tokenizer from the
 * installed npm data packages (see docs/TRAIN-DATA.md).
 *
 * @example
 * npx skein train-data --out data --vocab 4096
 */
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import { buildTrainingData } from '../../train/data/build.js';

function parseIntOption(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new BadRequestError(name, `must be an integer in [${min}, ${max}]`);
    return n;
  };
}

export function register(program: Command): void {
  program
    .command('train-data')
    .description('Build the training corpus, BPE tokenizer and packed token files for the default model')
    .option('-o, --out <dir>', 'output folder', 'data')
    .option('--vocab <n>', 'tokenizer vocabulary size including 3 special tokens', parseIntOption('--vocab', 259, 65536), 4096)
    .option('--seed <n>', 'seed of the instruction generator', parseIntOption('--seed', 0, 2 ** 31 - 1), 1)
    .option('--instruct-items <n>', 'generated instruction items for training', parseIntOption('--instruct-items', 100, 10_000_000), 60_000)
    .option('--retrain-tokenizer', 'train a new tokenizer even if <out>/tokenizer/tokenizer.json exists (changes token ids)')
    .action(async (opts: { out: string; vocab: number; seed: number; instructItems: number; retrainTokenizer?: boolean }) => {
      const { stats } = await buildTrainingData({
        out: opts.out,
        vocabSize: opts.vocab,
        seed: opts.seed,
        instructItems: opts.instructItems,
        retrainTokenizer: Boolean(opts.retrainTokenizer),
      });
      process.stdout.write(`${JSON.stringify({ ...stats, sources: undefined }, null, 2)}\n`);
    });
}
