/**
 * `skein generate`: generate from a prompt (or token ids) with the simple engine. Text
 * streams to stdout as it is generated (greedy by default); with --json one object
 * `{"ids", "text", "metrics": {"prefillMs", "decodeTokensPerSec"}}` is printed instead.
 * `--stages JSON` (a generate node's `stages`) runs on the shared engine's scheduler, where
 * the stages live, and --json then adds `metrics.stages`: per stage what it did and cost.
 *
 * @example
 * npx skein generate --model skein-mini --prompt "Once upon a time" --max-tokens 32
 * npx skein generate --model smollm2-135m-instruct --chat --prompt "What is a dog?"
 * npx skein generate -m skein-mini --prompt "Once" --stages '{"skipLayers":{"targetSpeedup":2}}' --json
 */
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import type { SamplingParams } from '../../../core/sampling.js';
import { initBackend } from '../../backend.js';
import { loadModel } from '../../checkpoint/load.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';
import { generateAll, type GenerateTokenizer } from '../../generate/generate.js';
import { lastValueFrom, tap, toArray } from 'rxjs';
import type { Stages } from '../../../core/stages.js';
import type { StageOptions } from '../../engine/types.js';
import { parseIds, writeOut } from './logits.js';
import { parseStagesFlag } from './stages-flag.js';

function num(name: string, check: (n: number) => boolean, what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !check(n)) throw new BadRequestError(name, what);
    return n;
  };
}

/** The sampling flags are SamplingParams' fields; --stop always holds a list (default []). */
interface GenerateCliOptions extends Partial<SamplingParams> {
  model?: string;
  prompt?: string;
  chat?: boolean;
  ids?: number[];
  stop: string[];
  json?: boolean;
  stages?: string;
}

export function register(program: Command): void {
  program
    .command('generate')
    .description('Generate text from a prompt or token ids (streams to stdout; --json prints one object)')
    .option('-m, --model <name|path>', MODEL_OPTION_HELP)
    .option('--prompt <text>', 'text prompt (encoded without special tokens)')
    .option('--chat', "send --prompt as a user message, rendered with the model's chat template")
    .option('--ids <ids>', 'comma-separated prompt token ids', parseIds)
    .option('--max-tokens <n>', 'tokens to generate at most', num('--max-tokens', (n) => Number.isInteger(n) && n >= 1, 'must be a positive integer'))
    .option('--temperature <t>', '0 is greedy (default)', num('--temperature', (n) => n >= 0 && n <= 10, 'must be in [0, 10]'))
    .option('--top-k <k>', '0 disables', num('--top-k', (n) => Number.isInteger(n) && n >= 0, 'must be a non-negative integer'))
    .option('--top-p <p>', '1 disables', num('--top-p', (n) => n > 0 && n <= 1, 'must be in (0, 1]'))
    .option('--repetition-penalty <r>', '1 disables', num('--repetition-penalty', (n) => n > 0 && n <= 10, 'must be in (0, 10]'))
    .option('--seed <s>', 'sampler seed', num('--seed', (n) => Number.isInteger(n), 'must be an integer'))
    .option('--stop <text>', 'stop string (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--json', 'print one JSON object with ids, text and metrics instead of streaming')
    .option('--stages <json>', 'inference stages, as a generate node\'s `stages` (runs on the shared engine)')
    .action(async (opts: GenerateCliOptions) => {
      if ((opts.prompt === undefined) === (opts.ids === undefined)) throw new BadRequestError('--prompt/--ids', 'give exactly one');
      if (opts.chat === true && opts.prompt === undefined) throw new BadRequestError('--chat', 'needs --prompt');
      if (opts.stages !== undefined) return generateWithStages(opts, parseStagesFlag(opts.stages));
      await initBackend({ log: true });
      const model = await loadModel((await modelOrDefault(opts.model)).model);
      try {
        const tokenizer: GenerateTokenizer | null =
          model.hasTokenizer || opts.prompt !== undefined ? model.tokenizer() : null;
        const prompt = opts.chat === true ? model.tokenizer().renderChat([{ role: 'user', content: opts.prompt! }]) : opts.prompt;
        const [r] = await generateAll(
          model,
          tokenizer,
          [opts.ids !== undefined ? { ids: opts.ids } : { prompt: prompt! }],
          samplingFlags(opts),
          opts.json ? undefined : (e) => {
            if (e.type === 'token' && e.text !== '') process.stdout.write(e.text);
          },
        );
        const { prefillMs, decodeTokensPerSec } = r!.metrics;
        if (opts.json) {
          await writeOut(`${JSON.stringify({ ids: r!.ids, text: r!.text, finishReason: r!.finishReason, metrics: { prefillMs, decodeTokensPerSec } })}\n`);
        } else {
          await writeOut('\n');
          process.stderr.write(
            `skein: ${r!.ids.length} tokens (${r!.finishReason}), prefill ${prefillMs.toFixed(0)} ms, decode ${decodeTokensPerSec.toFixed(1)} tokens/s\n`,
          );
        }
      } finally {
        model.dispose();
      }
    });
}

/** The sampling fields the command's flags set (both generation paths take the same ones). */
function samplingFlags(opts: GenerateCliOptions) {
  const { maxTokens, temperature, topK, topP, repetitionPenalty, seed, stop } = opts;
  return { maxTokens, temperature, topK, topP, repetitionPenalty, seed, stop };
}

/** The --stages path: one request on an in-process engine (the scheduler runs the stages). */
async function generateWithStages(opts: GenerateCliOptions, stages: Stages): Promise<void> {
  const { createEngine } = await import('../../engine/index.js');
  const engine = await createEngine({ model: (await modelOrDefault(opts.model)).model, thread: 'main' });
  try {
    const events = await lastValueFrom(
      engine
        .generate({
          ...(opts.ids !== undefined
            ? { ids: opts.ids }
            : opts.chat === true
              ? { messages: [{ role: 'user' as const, content: opts.prompt! }] }
              : { prompt: opts.prompt! }),
          sampling: samplingFlags(opts),
          stages: stages as StageOptions,
        })
        .pipe(
          tap((e) => {
            if (!opts.json && e.type === 'token' && e.text !== '') process.stdout.write(e.text);
          }),
          toArray(),
        ),
    );
    const done = events.at(-1)!;
    if (done.type !== 'done') throw new Error('generation ended without a result');
    const { ttftMs, decodeTokensPerSec, stages: report } = done.metrics;
    if (opts.json) {
      await writeOut(
        `${JSON.stringify({ ids: done.ids, text: done.text, finishReason: done.reason, metrics: { prefillMs: ttftMs, ttftMs, decodeTokensPerSec, stages: report ?? {} } })}\n`,
      );
    } else {
      await writeOut('\n');
      process.stderr.write(`skein: ${done.ids.length} tokens (${done.reason}), TTFT ${ttftMs.toFixed(0)} ms, decode ${decodeTokensPerSec.toFixed(1)} tokens/s\n`);
      process.stderr.write(`skein: stages ${JSON.stringify(report ?? {})}\n`);
    }
  } finally {
    await engine.close();
  }
}
