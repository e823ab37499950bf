/**
 * `skein tokenize`: a model's token ids for a text, as `{"ids": [...]}`.
 *
 * @example
 * npx skein tokenize --model skein-mini --prompt "Hello world"
 */
import type { Command } from 'commander';
import { loadTokenizer } from '../../checkpoint/load.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';

export function register(program: Command): void {
  program
    .command('tokenize')
    .description('Print the token ids of a text as JSON: {"ids": [...]}')
    .option('-m, --model <name|dir>', MODEL_OPTION_HELP)
    .requiredOption('--prompt <text>', 'text to tokenize')
    .option('--special', "add the tokenizer's special tokens (e.g. BOS)")
    .action(async (opts: { model?: string; prompt: string; special?: boolean }) => {
      const tokenizer = loadTokenizer((await modelOrDefault(opts.model)).model);
      process.stdout.write(`${JSON.stringify({ ids: tokenizer.encode(opts.prompt, { addSpecialTokens: Boolean(opts.special) }) })}\n`);
    });
}
