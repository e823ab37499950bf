/**
 * `skein logits`: full-vocabulary logits for every input position, as one JSON object
 * `{"logits": [[...], ...]}` on stdout. No tokenizer needed; for oracle comparisons.
 *
 * @example
 * npx skein logits --model skein-mini --ids 1,2,3
 */
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import { initBackend } from '../../backend.js';
import { loadModel } from '../../checkpoint/load.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';
import { forward } from '../../model/forward.js';

/** "1,2,3" → [1, 2, 3]; every entry a non-negative integer. */
export function parseIds(value: string): number[] {
  const ids = value.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new BadRequestError('--ids', 'must be a comma-separated list of token ids');
  }
  return ids;
}

/** Writes to stdout and resolves once it is flushed (large JSON must not be cut by exit). */
export function writeOut(text: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
}

export function register(program: Command): void {
  program
    .command('logits')
    .description('Print the logits of every input position as JSON: {"logits": [[...vocab], ...]}')
    .option('-m, --model <name|dir>', MODEL_OPTION_HELP)
    .requiredOption('--ids <ids>', 'comma-separated token ids', parseIds)
    .action(async (opts: { model?: string; ids: number[] }) => {
      await initBackend({ log: true });
      const model = await loadModel((await modelOrDefault(opts.model)).model);
      try {
        const [r] = forward(model, [{ ids: opts.ids, logits: 'all' }]);
        for (const e of r!.newKv) e?.k.dispose(), e?.v.dispose();
        const rows = r!.logits.map((row) => `[${Array.from(row).join(',')}]`);
        await writeOut(`{"logits":[${rows.join(',')}]}\n`);
      } finally {
        model.dispose();
      }
    });
}
