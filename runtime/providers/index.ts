/**
 * Remote model providers: an Engine over an OpenAI-compatible server and the pool that
 * shares them between runs.
 *
 * @example
 * import { ProviderPool } from './runtime/providers/index.js';
 */
export { OpenAiEngine, backoffMs, providerDefaults, type OpenAiEngineOptions } from './openai-engine.js';
export { ProviderPool, type ProviderPoolOptions } from './pool.js';
export { Limiter } from './limiter.js';
