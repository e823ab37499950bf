/**
 * `skein run GRAPH.json --input '{"question": "..."}'`: runs a graph on the shared engine
 * with the given model (or the default: smollm2-135m-instruct when pulled, else skein-mini), showing live progress per node and
 * branch — redrawn in place on a terminal — or every RunEvent as a JSON line with
 * `--json`, then prints the final output. Ctrl-C cancels the run (generation stops, KV is
 * freed). Exit status: 0 ok, 1 run error, 130 cancelled.
 */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { BadRequestError, GraphValidationError, NotFoundError, checkRunInput, compileGraph, runCompiled, saveEvents, type RunEvent } from '../../../operators/index.js';
import { ProgressView } from '../../../core/progress.js';
import type { Engine } from '../../../core/engine.js';
import { ProviderPool } from '../../providers/pool.js';
import { chooseDefaultModel, MODEL_OPTION_HELP } from '../../pull/default-model.js';
import { applyKvCache, KV_CACHE_HELP, parseKvCache, type KvCacheFlag } from './kv-cache-flag.js';
import { parseStagesFlag, withStages } from './stages-flag.js';
import { readGraphFile } from './validate.js';
import type { RunPersistence } from '../../server/runs.js';

export interface RunFlags {
  input: string;
  kvCache?: KvCacheFlag;
  /** Absent: the default model (see runtime/pull/default-model.ts). */
  model?: string;
  seed?: string;
  json?: boolean;
  save?: string;
  /** `--stages JSON`: merged into the stages of every model-calling node (generate, skeleton, expand). */
  stages?: string;
  /** `--resume ID`: go on with a run a server stopped in the middle (read from --data-dir). */
  resume?: string;
  /** Where a server keeps its runs (`serve --data-dir`); default .skein. */
  dataDir?: string;
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
export async function runGraphFile(file: string | undefined, flags: RunFlags, io: RunIo = {}): Promise<number> {
  if (flags.resume !== undefined) {
    if (file !== undefined) throw new BadRequestError('--resume', 'resumes the stored graph; give no graph file with it');
    return resumeRun(flags.resume, flags, io);
  }
  if (file === undefined) throw new BadRequestError('graph', 'a graph file is required (or --resume ID)');
  const read = readGraphFile(file);
  if (read.problems.length) throw new GraphValidationError(read.problems, file);
  const seed = flags.seed === undefined ? undefined : Number(flags.seed);
  if (seed !== undefined && !Number.isInteger(seed)) throw new BadRequestError('--seed', 'must be an integer');
  return runJson(read.json, file, parseInput(flags.input), seed, flags, io);
}

/**
 * `--resume ID`: the graph, input and seed of a run that a server (`serve --data-dir`)
 * stopped in the middle, from its run database; nodes it had finished are reused and the
 * new run is written to the same database, so the server lists it after its next start.
 */
async function resumeRun(id: string, flags: RunFlags, io: RunIo): Promise<number> {
  if (flags.seed !== undefined || flags.input !== '{}') throw new BadRequestError('--resume', 'reuses the run\'s own input and seed; drop --input and --seed');
  const { RunDatabase } = await import('../../server/run-db.js');
  const { resumePlan } = await import('../../server/resume.js');
  const db = RunDatabase.open(flags.dataDir ?? '.skein');
  try {
    const record = db.load(id);
    if (!record) throw new NotFoundError('run', `${id} (in ${flags.dataDir ?? '.skein'})`);
    const plan = resumePlan(record);
    return await runJson(plan.definition, `run ${id}`, plan.input, plan.seed, flags, io, { from: id, outputs: plan.outputs }, db);
  } finally {
    db.close();
  }
}

async function runJson(
  graphJson: unknown,
  source: string,
  input: Record<string, unknown>,
  seed: number | undefined,
  flags: RunFlags,
  io: RunIo,
  resume?: { from: string; outputs: Record<string, unknown> },
  record?: RunPersistence,
): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const json = flags.stages !== undefined ? withStages(graphJson, parseStagesFlag(flags.stages)) : graphJson;
  const compiled = compileGraph(json as never, { source });
  checkRunInput(compiled.spec, input);

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
  const save = record ? databaseWriter(record, compiled.spec.name, json, engine.modelName) : undefined;
  let end: Extract<RunEvent, { type: 'run-end' }>;
  const providers = new ProviderPool({ local: engine });
  try {
    const engineFor = providers.forGraph(compiled.spec);
    end = await new Promise((resolve, reject) => {
      runCompiled(compiled, input, { engine, engineFor, seed, signal: io.signal, ...(resume ? { resume } : {}) }).subscribe({
        next(e) {
          events.push(e);
          save?.(e);
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

/** Writes a resumed run's events into the run database as the server would (runs.ts RunStore). */
function databaseWriter(db: RunPersistence, graph: string, definition: unknown, model: string): (e: RunEvent) => void {
  const createdAt = Date.now();
  let start: Extract<RunEvent, { type: 'run-start' }> | undefined;
  let tokensOut = 0;
  return (e) => {
    const base = () => ({ id: e.runId, graph, input: start?.input ?? {}, seed: start?.seed, model, definition, createdAt, events: [], tokensOut });
    if (e.type === 'run-start') {
      start = e;
      db.started({ ...base(), state: 'running' });
    }
    if (e.type === 'text-delta') tokensOut += e.tokenIds.length;
    db.event(e.runId, e);
    if (e.type === 'run-end') db.ended({ ...base(), state: e.status, endedAt: Date.now(), usage: e.usage, ...(e.error ? { error: e.error } : {}) });
  };
}

export function register(program: Command): void {
  program
    .command('run')
    .description('Run a graph on the shared engine and print its output')
    .argument('[graph]', 'graph JSON file (not with --resume)')
    .option('-i, --input <json>', 'run input as a JSON object', '{}')
    .option('-m, --model <name|dir>', MODEL_OPTION_HELP)
    .option('-s, --seed <n>', 'run seed (per-node seeds derive from it)')
    .option('--json', 'print every run event as a JSON line')
    .option('--save <file>', 'also save the events as JSON lines (replayable)')
    .option('--stages <json>', 'stages for every model call, e.g. \'{"skipLayers":{"targetSpeedup":2}}\'')
    .option('--kv-cache <type>', KV_CACHE_HELP, parseKvCache)
    .option('--resume <id>', 'go on with a run a server stopped in the middle, reusing the nodes it finished')
    .option('--data-dir <dir>', 'the server\'s run folder, for --resume', '.skein')
    .action(async (file: string | undefined, flags: RunFlags) => {
      applyKvCache(flags.kvCache);
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
