/**
 * `skein generate`: generate from a prompt (or token ids) on the shared engine (the same
 * scheduler, paged KV pool and sampler every run uses, in this thread). Text streams to
 * stdout as it is generated (greedy by default); with --json one object
 * `{"ids", "text", "finishReason", "metrics": {"prefillMs", "decodeTokensPerSec"}}` is
 * printed instead, `prefillMs` being the time to the first token.
 * `--stages JSON` (a generate node's `stages`) runs those stages in the engine, and --json
 * then adds `metrics.stages`: per stage what it did and cost.
 *
 * @example
 * npx skein generate --model skein-mini --prompt "Once upon a time" --max-tokens 32
 * npx skein generate --model smollm2-135m-instruct --chat --prompt "What is a dog?"
 * npx skein generate -m skein-mini --prompt "Once" --stages '{"skipLayers":{"targetSpeedup":2}}' --json
 */
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import type { SamplingParams } from '../../../core/sampling.js';
import { lastValueFrom, tap } from 'rxjs';
import type { GenerateEvent, GenerateRequest } from '../../../core/engine.js';
import { initBackend } from '../../backend.js';
import { MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';
import type { Stages } from '../../../core/stages.js';
import { createEngine } from '../../engine/index.js';
import { applyKvCache, KV_CACHE_HELP, parseKvCache, type KvCacheFlag } from './kv-cache-flag.js';
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
  kvCache?: KvCacheFlag;
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
    .option('--prompt <text>', 'text prompt (bos prepended when the model asks for one)')
    .option('--chat', "send --prompt as a user message, rendered with the model's chat template")
    .option('--ids <ids>', 'comma-separated prompt token ids', parseIds)
    .option('--max-tokens <n>', 'tokens to generate at most', num('--max-tokens', (n) => Number.isInteger(n) && n >= 1, 'must be a positive integer'))
    .option('--temperature <t>', '0 is greedy (default)', num('--temperature', (n) => n >= 0 && n <= 10, 'must be in [0, 10]'))
    .option('--top-k <k>', '0 disables', num('--top-k', (n) => Number.isInteger(n) && n >= 0, 'must be a non-negative integer'))
    .option('--top-p <p>', '1 disables', num('--top-p', (n) => n > 0 && n <= 1, 'must be in (0, 1]'))
    .option('--repetition-penalty <r>', '1 disables', num('--repetition-penalty', (n) => n > 0 && n <= 10, 'must be in (0, 10]'))
    .option('--seed <s>', 'sampler seed', num('--seed', (n) => Number.isInteger(n), 'must be an integer'))
    .option('--stop <text>', 'stop string (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--kv-cache <type>', KV_CACHE_HELP, parseKvCache)
    .option('--json', 'print one JSON object with ids, text and metrics instead of streaming')
    .option('--stages <json>', 'inference stages, as a generate node\'s `stages` (runs on the shared engine)')
    .action(async (opts: GenerateCliOptions) => {
      applyKvCache(opts.kvCache);
      if ((opts.prompt === undefined) === (opts.ids === undefined)) throw new BadRequestError('--prompt/--ids', 'give exactly one');
      if (opts.chat === true && opts.prompt === undefined) throw new BadRequestError('--chat', 'needs --prompt');
      const stages = opts.stages !== undefined ? parseStagesFlag(opts.stages) : undefined;
      await initBackend({ log: true });
      const engine = await createEngine({ model: (await modelOrDefault(opts.model)).model, thread: 'main' });
      try {
        const done = (await lastValueFrom(
          engine.generate(generateRequest(opts, stages)).pipe(
            tap((e: GenerateEvent) => {
              if (!opts.json && e.type === 'token' && e.text !== '') process.stdout.write(e.text);
            }),
          ),
        )) as Extract<GenerateEvent, { type: 'done' }>;
        // The end-of-sequence id that ended it is not part of the answer.
        const ids = done.reason === 'eos' ? done.ids.slice(0, -1) : done.ids;
        const prefillMs = done.metrics.ttftMs;
        const { decodeTokensPerSec } = done.metrics;
        const report = stages ? { stages: done.metrics.stages ?? {} } : {};
        if (opts.json) {
          await writeOut(`${JSON.stringify({ ids, text: done.text, finishReason: done.reason, metrics: { prefillMs, decodeTokensPerSec, ...report } })}\n`);
        } else {
          await writeOut('\n');
          process.stderr.write(`skein: ${ids.length} tokens (${done.reason}), prefill ${prefillMs.toFixed(0)} ms, decode ${decodeTokensPerSec.toFixed(1)} tokens/s\n`);
          if (stages) process.stderr.write(`skein: stages ${JSON.stringify(done.metrics.stages ?? {})}\n`);
        }
      } finally {
        await engine.close();
      }
    });
}

/** One request from the flags: token ids, a chat turn, or a raw prompt; the stages when given. */
function generateRequest(opts: GenerateCliOptions, stages: Stages | undefined): GenerateRequest {
  const sampling = {
    maxTokens: opts.maxTokens,
    temperature: opts.temperature,
    topK: opts.topK,
    topP: opts.topP,
    repetitionPenalty: opts.repetitionPenalty,
    seed: opts.seed,
    stop: opts.stop,
  };
  const input =
    opts.ids !== undefined
      ? { ids: opts.ids }
      : opts.chat === true
        ? { messages: [{ role: 'user' as const, content: opts.prompt! }] }
        : { prompt: opts.prompt! };
  return { ...input, sampling, ...(stages ? { stages } : {}) };
}
