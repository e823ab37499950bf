/**
 * `skein run GRAPH.json --input '{"question": "..."}'`: runs a graph on the shared engine
 * with the given model (or the default: smollm2-135m-instruct when pulled, else skein-mini), showing live progress per node and
 * branch — redrawn in place on a terminal — or every RunEvent as a JSON line with
 * `--json`, then prints the final output. Ctrl-C cancels the run (generation stops, KV is
 * freed). Exit status: 0 ok, 1 run error, 130 cancelled.
 */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { BadRequestError, GraphValidationError, checkRunInput, compileGraph, runCompiled, saveEvents, type RunEvent } from '../../../operators/index.js';
import { ProgressView } from '../../../core/progress.js';
import type { Engine } from '../../../core/engine.js';
import { ProviderPool } from '../../providers/pool.js';
import { chooseDefaultModel, MODEL_OPTION_HELP } from '../../pull/default-model.js';
import { parseStagesFlag, withStages } from './stages-flag.js';
import { readGraphFile } from './validate.js';

export interface RunFlags {
  input: string;
  /** Absent: the default model (see runtime/pull/default-model.ts). */
  model?: string;
  seed?: string;
  json?: boolean;
  save?: string;
  /** `--stages JSON`: merged into the stages of every model-calling node (generate, skeleton, expand). */
  stages?: string;
}

function parseInput(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new BadRequestError('--input', `not JSON: ${(err as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new BadRequestError('--input', 'must be a JSON object');
  return value as Record<string, unknown>;
}

/** The real engine, loaded on demand so `validate` and `--help` never load a model. */
async function openEngine(model: string): Promise<Engine> {
  const { createEngine } = await import('../../engine/index.js');
  return createEngine({ model });
}

export interface RunIo {
  /** Opens the engine for a model name or folder (default: the real one, loaded on demand). */
  openEngine?: (model: string) => Promise<Engine>;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Aborting it cancels the run (the command wires Ctrl-C to it). */
  signal?: AbortSignal;
}

/** The body of `skein run`, with its I/O injectable for tests; resolves to the exit status. */
export async function runGraphFile(file: string, flags: RunFlags, io: RunIo = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const read = readGraphFile(file);
  if (read.problems.length) throw new GraphValidationError(read.problems, file);
  const json = flags.stages !== undefined ? withStages(read.json, parseStagesFlag(flags.stages)) : read.json;
  const compiled = compileGraph(json as never, { source: file });
  const input = parseInput(flags.input);
  checkRunInput(compiled.spec, input);
  const seed = flags.seed === undefined ? undefined : Number(flags.seed);
  if (seed !== undefined && !Number.isInteger(seed)) throw new BadRequestError('--seed', 'must be an integer');

  const choice = flags.model !== undefined ? { model: flags.model } : await chooseDefaultModel();
  if (choice.fallbackReason) stderr.write(`skein: ${choice.fallbackReason}\n`);
  const engine = await (io.openEngine ?? openEngine)(choice.model);
  const events: RunEvent[] = [];
  const view = new ProgressView();
  const tty = !flags.json && stderr.isTTY === true;
  let drawn = 0;
  const draw = (now: number) => {
    const lines = view.lines(now);
    stderr.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((l) => `\x1b[2K${l}\n`).join('')}`);
    drawn = lines.length;
  };
  let end: Extract<RunEvent, { type: 'run-end' }>;
  const providers = new ProviderPool({ local: engine });
  try {
    const engineFor = providers.forGraph(compiled.spec);
    end = await new Promise((resolve, reject) => {
      runCompiled(compiled, input, { engine, engineFor, seed, signal: io.signal }).subscribe({
        next(e) {
          events.push(e);
          if (e.type === 'run-end') resolve(e);
          if (flags.json) return void stdout.write(`${JSON.stringify(e)}\n`);
          if (e.type === 'run-start') stderr.write(`run ${e.runId}: ${e.graph} on ${engine.modelName}, seed ${e.seed}\n`);
          const changed = view.apply(e);
          if (tty && (changed || e.type === 'text-delta')) draw(e.t);
          else if (changed) stderr.write(`${changed}\n`);
        },
        error: reject,
      });
    });
  } finally {
    await providers.close();
    await engine.close();
  }
  if (flags.save) writeFileSync(flags.save, saveEvents(events));
  const status = end.status === 'ok' ? 0 : end.status === 'cancelled' ? 130 : 1;
  if (flags.json) return status;
  if (end.status === 'ok') {
    const out = end.output ?? {};
    const keys = Object.keys(out);
    for (const k of keys) {
      const v = out[k];
      stdout.write(`${keys.length > 1 ? `── ${k}\n` : ''}${typeof v === 'string' ? v : JSON.stringify(v, null, 2)}\n`);
    }
  } else if (end.status === 'cancelled') stderr.write('cancelled\n');
  else stderr.write(`skein: ${end.error?.node ? `node ${end.error.node} failed: ` : ''}${end.error?.message ?? 'run failed'}\n`);
  return status;
}

export function register(program: Command): void {
  program
    .command('run')
    .description('Run a graph on the shared engine and print its output')
    .argument('<graph>', 'graph JSON file')
    .option('-i, --input <json>', 'run input as a JSON object', '{}')
    .option('-m, --model <name|dir>', MODEL_OPTION_HELP)
    .option('-s, --seed <n>', 'run seed (per-node seeds derive from it)')
    .option('--json', 'print every run event as a JSON line')
    .option('--save <file>', 'also save the events as JSON lines (replayable)')
    .option('--stages <json>', 'stages for every model call, e.g. \'{"skipLayers":{"targetSpeedup":2}}\'')
    .action(async (file: string, flags: RunFlags) => {
      const abort = new AbortController();
      const onSigint = () => abort.abort();
      process.once('SIGINT', onSigint);
      try {
        process.exitCode = await runGraphFile(file, flags, { signal: abort.signal });
      } finally {
        process.off('SIGINT', onSigint);
      }
    });
}
