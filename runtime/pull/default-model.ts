/**
 * Which model a command uses when `--model` is not given: SmolLM2-135M-Instruct once it is
 * installed under models/, else skein-mini (trained in this repository, always there) with
 * the reason said out loud. Only a caller that asks (`serve --pull`, what `npm start`
 * runs) downloads the default model when it is missing; nothing else touches the network.
 *
 * @example
 * const { model, fallbackReason } = await chooseDefaultModel({ pull: false });
 * if (fallbackReason) console.error(`skein: ${fallbackReason}`);
 */
import * as fs from 'node:fs';
import { catalogueEntry } from './catalogue.js';
import { installedPath, pullModel, PullError, type PullOptions } from './pull.js';

/** The real default: a catalogue name, installed at models/<name>/. */
export const DEFAULT_MODEL = 'smollm2-135m-instruct';
/** The offline model shipped in git (models/skein-mini), used when the default is absent. */
export const FALLBACK_MODEL = 'skein-mini';

export interface ModelChoice {
  model: string;
  /** Why the fallback was chosen, when it was: for stderr and the playground. */
  fallbackReason?: string;
}

/** Whether the default model's file is in place (a file only gets its name once verified). */
export function defaultModelInstalled(to?: string): boolean {
  const entry = catalogueEntry(DEFAULT_MODEL);
  const stat = fs.statSync(installedPath(entry, to), { throwIfNoEntry: false });
  return stat?.isFile() === true && stat.size === entry.bytes;
}

export interface ChooseOptions extends PullOptions {
  /** Download the default model when it is missing (default false). */
  pull?: boolean;
}

export async function chooseDefaultModel(opts: ChooseOptions = {}): Promise<ModelChoice> {
  if (defaultModelInstalled(opts.to)) return { model: opts.to ? installedPath(catalogueEntry(DEFAULT_MODEL), opts.to) : DEFAULT_MODEL };
  if (!opts.pull) {
    return {
      model: FALLBACK_MODEL,
      fallbackReason: `${DEFAULT_MODEL} is not installed (run \`npx skein pull ${DEFAULT_MODEL}\`); using ${FALLBACK_MODEL}, a 7M-parameter model trained here that knows little`,
    };
  }
  try {
    const { file } = await pullModel(DEFAULT_MODEL, opts);
    return { model: opts.to ? file : DEFAULT_MODEL };
  } catch (err) {
    if (!(err instanceof PullError)) throw err;
    const tried = err.failures.map((f) => `${f.source}: ${f.reason}`).join('; ');
    return {
      model: FALLBACK_MODEL,
      fallbackReason: `could not download ${DEFAULT_MODEL} (${tried}); using ${FALLBACK_MODEL}, a 7M-parameter model trained here that knows little`,
    };
  }
}

/** `--model` when given, else the default choice; prints the fallback reason on stderr. */
export async function modelOrDefault(model: string | undefined, opts: ChooseOptions = {}): Promise<ModelChoice> {
  if (model !== undefined) return { model };
  const choice = await chooseDefaultModel(opts);
  if (choice.fallbackReason) process.stderr.write(`skein: ${choice.fallbackReason}\n`);
  return choice;
}

/** The `--model` help line every command shares. */
export const MODEL_OPTION_HELP = `model name under models/, a checkpoint folder or a .gguf file (default: ${DEFAULT_MODEL} when pulled, else ${FALLBACK_MODEL})`;
