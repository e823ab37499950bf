/**
 * The remote engines of a process, one per provider declaration: every run whose graph
 * declares the same provider (same name, same settings) shares its engine, so the
 * provider's concurrency limit holds over all of them. `forGraph` builds a graph's
 * engines when its run starts, so a missing API key variable refuses the run at once
 * (ProviderKeyMissingError naming the variable) rather than failing at its first remote
 * node; the resolver it returns is RunOptions.engineFor.
 *
 * @example
 * const providers = new ProviderPool({ local: engine });
 * runGraph(spec, input, { engine, engineFor: providers.forGraph(spec) });
 */
import type { Engine } from '../../core/engine.js';
import { NotFoundError } from '../../core/errors.js';
import type { GraphSpec, ProviderSpec } from '../../core/graph-schema.js';
import { OpenAiEngine } from './openai-engine.js';

export interface ProviderPoolOptions {
  /** The local engine: it runs compress for remote nodes. */
  local?: Engine;
  /** Where API keys are read from (default process.env). */
  env?: Record<string, string | undefined>;
}

export class ProviderPool {
  private readonly engines = new Map<string, OpenAiEngine>();

  constructor(private readonly options: ProviderPoolOptions = {}) {}

  /** The engine of one provider declaration, made on first use. */
  engine(name: string, spec: ProviderSpec): OpenAiEngine {
    const key = JSON.stringify([name, spec.type, spec.baseUrl, spec.model, spec.apiKeyEnv, spec.timeoutMs, spec.maxConcurrency, spec.retries]);
    let engine = this.engines.get(key);
    if (!engine) {
      engine = new OpenAiEngine({ name, spec, compressor: this.options.local, env: this.options.env });
      this.engines.set(key, engine);
    }
    return engine;
  }

  /** Every provider the graph declares, built now; the resolver a run takes as `engineFor`. */
  forGraph(spec: Pick<GraphSpec, 'providers'>): (provider: string) => Engine {
    const byName = new Map<string, Engine>();
    for (const [name, provider] of Object.entries(spec.providers ?? {})) byName.set(name, this.engine(name, provider));
    return (name) => {
      const engine = byName.get(name);
      if (!engine) throw new NotFoundError('provider', name);
      return engine;
    };
  }

  /** Aborts every remote request in flight. */
  async close(): Promise<void> {
    await Promise.all([...this.engines.values()].map((e) => e.close()));
    this.engines.clear();
  }
}
