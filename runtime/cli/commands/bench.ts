/**
 * `skein bench NAME`: runs a named benchmark from the registry (runtime/bench). Progress
 * goes to stderr; with --json the last line of stdout is one JSON object of the figures.
 *
 * @example
 * npx skein bench decode --json
 */
import type { Command } from 'commander';
import { BadRequestError, NotFoundError } from '../../../core/errors.js';
import { initBackend } from '../../backend.js';
import '../../bench/all.js';
import { getBench, listBenches } from '../../bench/index.js';
import { chooseDefaultModel, DEFAULT_MODEL } from '../../pull/default-model.js';

/** `--arg key=value` settings as an object; a setting without `=` or a key is refused. */
export function parseBenchArgs(list: string[]): Record<string, string> {
  return Object.fromEntries(
    list.map((kv) => {
      const at = kv.indexOf('=');
      if (at <= 0) throw new BadRequestError('--arg', `expected key=value, got ${JSON.stringify(kv)}`);
      return [kv.slice(0, at), kv.slice(at + 1)];
    }),
  );
}

export function register(program: Command): void {
  program
    .command('bench')
    .description(`Run a benchmark by name: ${listBenches().map((b) => b.name).join(', ')}`)
    .argument('[name]', 'benchmark name (omit to list them)')
    .option('--json', 'print the figures as one JSON object on the last line')
    .option('-m, --model <name|dir>', `model for the benchmarks that load one (same as --arg model=…; default: ${DEFAULT_MODEL} when pulled, else each benchmark's own)`)
    .option('--arg <key=value>', 'benchmark-specific setting (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(async (name: string | undefined, opts: { json?: boolean; model?: string; arg: string[] }) => {
      if (name === undefined) {
        for (const b of listBenches()) process.stdout.write(`${b.name.padEnd(16)} ${b.description}\n`);
        return;
      }
      const bench = getBench(name);
      if (bench === undefined) throw new NotFoundError('benchmark', `${name} (have: ${listBenches().map((b) => b.name).join(', ')})`);
      const args = parseBenchArgs(opts.arg);
      if (opts.model) args.model = opts.model;
      else if (!args.model) {
        // Without the default model each benchmark keeps its own choice (skein-mini, or a random model).
        const choice = await chooseDefaultModel();
        if (!choice.fallbackReason) args.model = choice.model;
      }
      await initBackend({ log: true });
      const log = (line: string) => (opts.json ? process.stderr : process.stdout).write(`${line}\n`);
      const figures = await bench.run({ log, args });
      if (opts.json) process.stdout.write(`${JSON.stringify(figures)}\n`);
    });
}
