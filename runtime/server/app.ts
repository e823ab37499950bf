/**
 * The HTTP control plane as a hono app: graph validation, runs (start, list, inspect,
 * stream as SSE with Last-Event-ID resume, cancel), models, example graphs, health,
 * Prometheus metrics, the OpenAI-compatible routes (chat and text completions, embeddings, models),
 * and the playground page.
 * No socket here: `startServer` binds it, tests call `app.request()`.
 *
 * @example
 * const app = createApp({ engine, token: 'secret', maxConcurrentRuns: 4 });
 * const res = await app.request('/healthz');
 */
import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { Hono, type Context } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { HTTPException } from 'hono/http-exception';
import { streamSSE } from 'hono/streaming';
import { BadRequestError, NotFoundError } from '../../core/errors.js';
import { DEFAULT_SHAPE_LIMITS, type ShapeLimits } from '../../core/json-shape.js';
import { checkRequest, compileRequestSchemas, runRequestSchema } from '../../core/requests.js';
import type { RunEvent } from '../../core/events.js';
import type { Engine } from '../../core/engine.js';
import type { GraphSpec } from '../../core/graph-schema.js';
import { ProviderPool } from '../providers/pool.js';
import { foreignProvider, withServerProviders, type ServerProviders } from './providers.js';
import { coreDataflow } from './dataflow.js';
import { requireJson } from './content-type.js';
import { Drain } from './drain.js';
import { errorHandler, RunFinishedError } from './errors.js';
import { hostCheck } from './host-check.js';
import { methodNotAllowed } from './method-not-allowed.js';
import { loadExampleGraphs } from './graphs.js';
import { jsonShapeLimit } from './limits.js';
import { createMetrics } from './metrics.js';
import { orderedWrites } from './ordered.js';
import { chatCompletionsRoute } from './openai.js';
import { completionsRoute } from './openai-completions.js';
import { embeddingsRoute } from './openai-embeddings.js';
import { modelsRoute } from './openai-models.js';
import { playgroundRoute } from './playground.js';
import type { RunDatabase } from './run-db.js';
import { resumePlan } from './resume.js';
import { RunStore, summarize } from './runs.js';
import type { Dataflow, ExampleGraph } from './types.js';

export interface AppOptions {
  engine: Engine;
  /** The dataflow core; defaults to core/index.ts. Tests pass a double. */
  dataflow?: Dataflow;
  /** Example graphs; defaults to the files in graphs/. */
  graphs?: ExampleGraph[];
  /** When set, every /v1 route and /metrics need `Authorization: Bearer <token>`. */
  token?: string;
  /** Largest accepted request body, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Deepest nesting and most object keys in a request body (default DEFAULT_SHAPE_LIMITS). */
  shapeLimits?: ShapeLimits;
  /**
   * Host names (no port) the server answers to in Host and Origin; '*' accepts any. Default:
   * the loopback names (startServer adds the bound address and --allowed-hosts).
   */
  allowedHosts?: string[];
  /** Origins allowed to call the API from other sites (CORS); none by default. */
  corsOrigins?: string[];
  /** Runs and completions in progress at once; past it requests get 429 (default 8). */
  maxConcurrentRuns?: number;
  /** Finished runs kept, with their events, for listing and replay (default 100). */
  keepFinishedRuns?: number;
  /** Folder of the built playground (default playground/dist). */
  playgroundDir?: string;
  /** Where server faults are logged (default console.error). */
  log?: (err: unknown) => void;
  /** Seconds between SSE keep-alive comments (default 15). */
  keepAliveS?: number;
  /** Why the server runs a fallback instead of the default model; /healthz and /v1/models carry it so the page can say so. */
  fallbackReason?: string;
  /** Where runs are stored to survive restarts; past runs are read back from it at start. */
  runDb?: RunDatabase;
  /** The remote providers graphs may run nodes on (runtime/server/providers.ts); none by default. */
  providers?: ServerProviders;
}

export interface SkeinApp extends Hono {
  /** The run store, for the server's own shutdown and for tests. */
  readonly runs: RunStore;
  /** Refuses new work while the server stops (SIGTERM). */
  readonly drain: Drain;
}

// Graphs come from clients and their route/loop conditions may hold a regular expression
// that backtracks catastrophically (`^(a+)+$`), which would freeze the event loop that
// serves every run. V8 then switches such a match to its linear-time engine; the result
// is the same, only the time is bounded.
setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (!text.trim()) throw new BadRequestError('body', 'a JSON body is required');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadRequestError('body', `not valid JSON (${(err as Error).message})`);
  }
}

export function createApp(options: AppOptions): SkeinApp {
  const { engine } = options;
  const log = options.log ?? ((err: unknown) => console.error(err));
  const dataflow: Dataflow = options.dataflow ?? coreDataflow;
  const graphs = options.graphs ?? loadExampleGraphs();
  const keepAliveMs = (options.keepAliveS ?? 15) * 1000;
  const started = Date.now();

  let store: RunStore;
  const metrics = createMetrics(engine, () => store.activeCount);
  // Remote engines are shared by every run naming the same provider, so its concurrency limit holds across runs.
  const providers = new ProviderPool({ local: engine });
  const allowedProviders = options.providers ?? {};
  // Built now, so that a provider whose key variable is unset stops the server at start, naming it.
  for (const [name, spec] of Object.entries(allowedProviders)) providers.engine(name, spec);
  store = new RunStore({
    maxConcurrent: options.maxConcurrentRuns ?? 8,
    keepFinished: options.keepFinishedRuns ?? 100,
    onEvent: (_run, e) => {
      if (e.type === 'text-delta') metrics.tokens(e.tokenIds.length);
      else if (e.type === 'node-end' && e.metrics.ttftMs !== undefined) metrics.ttft(e.metrics.ttftMs);
    },
    onEnd: (run) => metrics.runEnded(run.state),
    ...(options.runDb ? { persistence: options.runDb } : {}),
  });
  if (options.runDb) store.restore(options.runDb.recover(options.keepFinishedRuns ?? 100).runs);
  const drain = new Drain();

  const modelMatches = (name: string) => {
    const served = engine.modelName;
    return name === served || served.endsWith(`/${name}`) || name.endsWith(`/${served}`);
  };

  // Before the server listens: compiled on first use, they stalled the event loop then.
  compileRequestSchemas();
  const app = new Hono() as unknown as SkeinApp;
  Object.defineProperty(app, 'runs', { value: store });
  Object.defineProperty(app, 'drain', { value: drain });
  app.onError(errorHandler(log));
  app.notFound((c) => methodNotAllowed(app, c) ?? c.json({ error: { message: `No route: ${c.req.method} ${c.req.path}`, code: 'not_found' } }, 404));
  app.use('*', hostCheck({ allowedHosts: options.allowedHosts ?? ['localhost', '127.0.0.1', '::1'], corsOrigins: options.corsOrigins ?? [] }));
  if (options.corsOrigins?.length) app.use('/v1/*', cors({ origin: options.corsOrigins, allowHeaders: ['Authorization', 'Content-Type', 'Last-Event-ID'] }));

  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const limit = bodyLimit({
    maxSize: maxBody,
    onError: () => {
      throw new HTTPException(413, { message: `Request body is larger than ${maxBody} bytes` });
    },
  });
  // Authentication first: a body from a client without the token is never read.
  if (options.token) {
    const auth = bearerAuth({ token: options.token });
    app.use('/v1/*', auth);
    app.use('/metrics', auth);
  }
  app.use('/v1/*', drain.middleware());
  app.use('/v1/*', requireJson());
  app.use('/v1/*', limit);
  app.use('/v1/*', jsonShapeLimit(options.shapeLimits ?? DEFAULT_SHAPE_LIMITS));

  app.get('/healthz', (c) => {
    const stats = engine.stats();
    // Degraded (503) while the model's worker is down and being restarted.
    const health = engine.health?.() ?? { status: 'ok', restarts: 0 };
    return c.json(
      {
        ...health,
        model: engine.modelName,
        backend: stats.backend,
        uptimeS: Math.round((Date.now() - started) / 1000),
        ...(options.fallbackReason ? { fallbackReason: options.fallbackReason } : {}),
      },
      health.status === 'ok' ? 200 : 503,
    );
  });

  app.get('/metrics', async (c) => {
    const text = await metrics.registry.metrics();
    return c.text(text, 200, { 'Content-Type': metrics.registry.contentType });
  });

  app.route('/v1', modelsRoute({ engine, modelMatches, createdS: Math.floor(started / 1000), ...(options.fallbackReason ? { fallbackReason: options.fallbackReason } : {}) }));

  app.get('/v1/graphs', (c) => c.json({ graphs }));
  app.get('/v1/graphs/schema', (c) => {
    const schema = dataflow.graphJsonSchema;
    if (!schema) throw new NotFoundError('schema', 'graph');
    return c.json(schema);
  });
  app.get('/v1/graphs/:name', (c) => {
    const graph = graphs.find((g) => g.name === c.req.param('name'));
    if (!graph) throw new NotFoundError('graph', c.req.param('name'));
    return c.json(graph);
  });

  app.post('/v1/graphs/validate', async (c) => {
    const body = await readJson(c);
    // Accept the graph itself or { graph }, as POST /v1/runs takes it.
    const graph = isObject(body) && isObject(body.graph) && !('nodes' in body) ? body.graph : body;
    const foreign = foreignProvider(graph, allowedProviders);
    const problems = foreign ? [foreign] : dataflow.validateGraph(withServerProviders(graph, allowedProviders), engine);
    return c.json({ valid: problems.length === 0, problems });
  });

  app.post('/v1/runs', async (c) => {
    // The schema refuses a misspelt field (`sed` for `seed`) that would otherwise be ignored.
    const body = checkRequest(runRequestSchema, await readJson(c));
    let graphJson: unknown;
    let source: string;
    if (body.graph !== undefined && body.graphName !== undefined) throw new BadRequestError('/graph', 'give graph or graphName, not both');
    if (body.graphName !== undefined) {
      const example = graphs.find((g) => g.name === body.graphName);
      if (!example) throw new NotFoundError('graph', body.graphName);
      graphJson = example.graph;
      source = example.file;
    } else if (body.graph !== undefined) {
      graphJson = body.graph;
      source = 'request';
    } else throw new BadRequestError('/graph', 'a graph object or a graphName is required');
    const input = body.input ?? {};
    if (body.seed !== undefined && !Number.isSafeInteger(body.seed)) throw new BadRequestError('/seed', 'must be a safe integer');
    const seed = body.seed;
    // One engine serves every run; another model needs another server.
    if (body.model !== undefined && !modelMatches(body.model)) throw new NotFoundError('model', body.model);
    const spec = dataflow.parseGraph(withServerProviders(graphJson, allowedProviders), source);
    // A run that would fail at its first node is refused here, with the field named.
    dataflow.checkInput?.(spec, input);
    const id = `run_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    const name = isObject(graphJson) && typeof graphJson.name === 'string' ? graphJson.name : source;
    const abort = new AbortController();
    // The graph's remote providers are built now: a missing API key variable refuses the run here.
    const engineFor = providers.forGraph(spec as Pick<GraphSpec, 'providers'>);
    const run$ = dataflow.runGraph(spec, input, { engine, engineFor, runId: id, signal: abort.signal, ...(seed !== undefined ? { seed } : {}) });
    const record = store.start({ id, graph: name, input, seed, model: engine.modelName, definition: graphJson }, run$, () => abort.abort());
    metrics.runStarted();
    return c.json({ id, state: record.state, links: { self: `/v1/runs/${id}`, events: `/v1/runs/${id}/events` } }, 201);
  });

  // A run the server stopped in the middle goes on as a new run: its completed top-level
  // nodes are reused, the rest run with the same seeds (resume.ts).
  app.post('/v1/runs/:id/resume', (c) => {
    const from = store.get(c.req.param('id'));
    if (!from) throw new NotFoundError('run', c.req.param('id'));
    const plan = resumePlan(from);
    const spec = dataflow.parseGraph(plan.definition, `run ${from.id}`);
    const id = `run_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    const abort = new AbortController();
    const run$ = dataflow.runGraph(spec, plan.input, {
      engine,
      runId: id,
      signal: abort.signal,
      resume: { from: from.id, outputs: plan.outputs },
      ...(plan.seed !== undefined ? { seed: plan.seed } : {}),
    });
    const record = store.start({ id, graph: from.graph, input: plan.input, seed: plan.seed, model: engine.modelName, definition: plan.definition }, run$, () => abort.abort());
    metrics.runStarted();
    return c.json({ id, state: record.state, resumedFrom: from.id, reused: Object.keys(plan.outputs), links: { self: `/v1/runs/${id}`, events: `/v1/runs/${id}/events` } }, 201);
  });

  app.get('/v1/runs', (c) => c.json({ runs: store.list().map(summarize) }));

  app.get('/v1/runs/:id', (c) => {
    const run = store.get(c.req.param('id'));
    if (!run) throw new NotFoundError('run', c.req.param('id'));
    return c.json({ ...summarize(run), definition: run.definition });
  });

  app.delete('/v1/runs/:id', (c) => {
    const run = store.get(c.req.param('id'));
    if (!run) throw new NotFoundError('run', c.req.param('id'));
    if (!store.cancel(run.id)) throw new RunFinishedError(run.id, run.state);
    return c.json({ ...summarize(run), cancelled: true });
  });

  app.get('/v1/runs/:id/events', (c) => {
    const run = store.get(c.req.param('id'));
    if (!run) throw new NotFoundError('run', c.req.param('id'));
    // EventSource sends Last-Event-ID on reconnect; ?after= serves clients that cannot set headers.
    const raw = c.req.header('Last-Event-ID') ?? c.req.query('after');
    let after = -1;
    if (raw !== undefined && raw !== '') {
      // Decimal digits only: Number() would also take '0x10', ' 3' and '1e3'.
      if (!/^\d{1,15}$/.test(raw)) throw new BadRequestError('Last-Event-ID', 'must be a decimal event id');
      after = Number(raw);
    }
    // A finished run with nothing past the client's last event: 204 is how SSE tells an
    // EventSource to stop reconnecting (a 200 that ends at once makes it retry forever).
    if (run.state !== 'running' && after >= (run.events.at(-1)?.seq ?? -1)) return c.body(null, 204);
    c.header('Cache-Control', 'no-cache');
    c.header('X-Accel-Buffering', 'no');
    return streamSSE(c, async (sse) => {
      await new Promise<void>((resolve) => {
        const out = orderedWrites();
        out.push(() => sse.writeSSE({ data: '', retry: 1000, event: 'ready' }));
        const ping = setInterval(() => out.push(() => sse.write(': keep-alive\n\n')), keepAliveMs);
        const done = () => {
          clearInterval(ping);
          void out.drained().then(resolve);
        };
        const sub = store.follow(run.id, after).subscribe({
          next: (e) => out.push(() => sse.writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(e) })),
          complete: done,
          error: done,
        });
        sse.onAbort(() => {
          sub.unsubscribe();
          clearInterval(ping);
          resolve();
        });
      });
    });
  });

  app.route('/v1', chatCompletionsRoute({ engine, store, metrics, modelMatches }));
  app.route('/v1', completionsRoute({ engine, store, metrics, modelMatches }));
  app.route('/v1', embeddingsRoute({ engine, store, modelMatches }));
  app.route('/', playgroundRoute(options.playgroundDir));
  return app;
}

