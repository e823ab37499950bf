/**
 * `skein logits`: full-vocabulary logits for every input position, as one JSON object
 * `{"logits": [[...], ...]}` on stdout, scored by the engine on this thread (Engine.score,
 * the same engine `skein generate` runs on). No tokenizer needed; for oracle comparisons.
 *
 * @example
 * npx skein logits --model skein-mini --ids 1,2,3
 */
import type { Command } from 'commander';
import { lastValueFrom } from 'rxjs';
import { BadRequestError } from '../../../core/errors.js';
import { initBackend } from '../../backend.js';
import { createEngine } from '../../engine/index.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';

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
      const engine = await createEngine({ model: (await modelOrDefault(opts.model)).model, thread: 'main' });
      try {
        const { logits } = await lastValueFrom(engine.score({ ids: opts.ids }));
        const rows = logits.map((row) => `[${Array.from(row).join(',')}]`);
        await writeOut(`{"logits":[${rows.join(',')}]}\n`);
      } finally {
        await engine.close();
      }
    });
}
