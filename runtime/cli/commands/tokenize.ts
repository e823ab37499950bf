/**
 * `skein tokenize`: a model's token ids for a text, as `{"ids": [...]}`.
 *
 * @example
 * npx skein tokenize --model skein-mini --prompt "Hello world"
 */
import type { Command } from 'commander';
import { loadTokenizer } from '../../checkpoint/load.js';

export function register(program: Command): void {
  program
    .command('tokenize')
    .description('Print the token ids of a text as JSON: {"ids": [...]}')
    .requiredOption('-m, --model <name|dir>', 'model name under models/ or a checkpoint folder')
    .requiredOption('--prompt <text>', 'text to tokenize')
    .option('--special', "add the tokenizer's special tokens (e.g. BOS)")
    .action((opts: { model: string; prompt: string; special?: boolean }) => {
      const tokenizer = loadTokenizer(opts.model);
      process.stdout.write(`${JSON.stringify({ ids: tokenizer.encode(opts.prompt, { addSpecialTokens: Boolean(opts.special) }) })}\n`);
    });
}
