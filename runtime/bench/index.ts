/**
 * The benchmark registry behind `skein bench NAME`. Each benchmark registers itself by
 * name with a description and a `run` that returns its figures (a JSON-able object);
 * progress lines go through `opts.log` (stderr in the CLI) so that `--json` output stays
 * one clean object on the last line.
 *
 * @example
 * registerBench('noop', { description: 'does nothing', run: async () => ({ ok: 1 }) });
 * const figures = await getBench('noop')!.run({ log: () => {} });
 */

export type BenchFigures = Record<string, unknown>;

export interface BenchOptions {
  /** Progress and human-readable result lines. */
  log: (line: string) => void;
  /** Extra `--key value` options a benchmark may read (strings as given). */
  args?: Record<string, string>;
}

export interface Bench {
  description: string;
  run(opts: BenchOptions): Promise<BenchFigures>;
}

const registry = new Map<string, Bench>();

export function registerBench(name: string, bench: Bench): void {
  if (registry.has(name)) throw new Error(`bench ${name} is registered twice`);
  registry.set(name, bench);
}

export function getBench(name: string): Bench | undefined {
  return registry.get(name);
}

export function listBenches(): { name: string; description: string }[] {
  return [...registry].map(([name, b]) => ({ name, description: b.description })).sort((a, b) => a.name.localeCompare(b.name));
}
