/**
 * Skein's HTTP control plane: `createApp` builds the hono app (tests use
 * `app.request()`), `startServer` binds it to a socket with an engine and the playground.
 *
 * @example
 * import { startServer } from './runtime/server/index.js';
 * const server = await startServer({ port: 8787, open: true });
 */
export { createApp, type AppOptions, type SkeinApp } from './app.js';
export { startServer, openBrowser, DEFAULT_HOST, DEFAULT_MODEL, DEFAULT_PORT, type RunningServer, type ServerOptions } from './start.js';
export { buildPlayground, playgroundDistDir, playgroundSrcDir } from './playground.js';
export { mapError, TooManyRunsError, type ErrorBody } from './errors.js';
export { RunStore, summarize, type RunRecord, type RunState, type RunSummary } from './runs.js';
export type { Dataflow, ExampleGraph } from './types.js';
