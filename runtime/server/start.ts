/**
 * Starts the control plane on a socket: loads the engine (unless one is given), builds
 * the playground when its sources changed, binds 127.0.0.1 by default, and with `open`
 * prints the URL and opens a browser when the machine has a display (never failing when
 * it has none). `close()` cancels live runs, closes connections and the engine it made.
 *
 * @example
 * const server = await startServer({ port: 0, engine });
 * console.log(server.url); // http://127.0.0.1:41234/
 * await server.close();
 */
import { spawn } from 'node:child_process';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Engine } from '../../core/engine.js';
import type { SchedulingPolicy } from '../scheduler/scheduler.js';
import { createApp, type AppOptions, type SkeinApp } from './app.js';
import { defaultAllowedHosts, isLoopback } from './host-check.js';
import { buildPlayground } from './playground.js';
import { DEFAULT_MODEL } from '../pull/default-model.js';
import { RunDatabase } from './run-db.js';

export const DEFAULT_PORT = 8787;
export const DEFAULT_HOST = '127.0.0.1';
export { DEFAULT_MODEL } from '../pull/default-model.js';

export interface ServerOptions extends Omit<AppOptions, 'engine'> {
  /** An engine to serve; when absent one is created for `model`. */
  engine?: Engine;
  /** Model name (under models/) or folder, when no engine is given (default smollm2-135m-instruct). */
  model?: string;
  /** How the engine it creates orders work across runs: 'fcfs' (default) or 'fair' (per run). */
  policy?: SchedulingPolicy;
  /** KV memory budget in bytes of the engine it creates (default: the engine's, 256 MiB). */
  kvBudgetBytes?: number;
  /**
   * Serve beyond loopback without a token. Without it, such a bind is refused: anyone who
   * can reach the port could run graphs and read every run's input.
   */
  insecure?: boolean;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Print the URL prominently and open a browser if a display exists. */
  open?: boolean;
  /** Build the playground first when it is missing or stale (default true). */
  build?: boolean;
  /** Progress lines (default: stderr). */
  print?: (line: string) => void;
  /**
   * Folder of the run database (runs.db, SQLite): runs, events and node outputs are
   * stored there and read back at start. Absent: runs live in memory only.
   */
  dataDir?: string;
}

export interface RunningServer {
  url: string;
  host: string;
  port: number;
  app: SkeinApp;
  engine: Engine;
  /** Runs found in flight in the run database at start, now marked interrupted. */
  interrupted: string[];
  /**
   * Graceful stop (SIGTERM): refuses new work (503), lets runs in flight finish within
   * `graceMs`, cancels the rest with a cancelled run-end to every SSE client, writes the
   * run database, then closes like close().
   */
  shutdown(options?: { graceMs?: number }): Promise<{ finished: number; cancelled: number }>;
  close(): Promise<void>;
}

async function createDefaultEngine(model: string, policy?: SchedulingPolicy, kvBudgetBytes?: number): Promise<Engine> {
  // Loaded on demand: a server handed an engine (tests) never pays for the runtime.
  const { createEngine } = await import('../engine/index.js');
  return createEngine({ model, ...(policy ? { policy } : {}), ...(kvBudgetBytes !== undefined ? { kvBudgetBytes } : {}) });
}

/** Refused before anything loads: an exposed bind needs a token or an explicit --insecure. */
export class InsecureBindError extends Error {
  readonly code = 'insecure_bind';
  constructor(readonly host: string) {
    super(`Refusing to serve on ${host} without a token: set --token or SKEIN_TOKEN, or pass --insecure to accept that anyone who reaches the port can use it`);
    this.name = 'InsecureBindError';
  }
}

function hasDisplay(): boolean {
  if (process.platform === 'darwin' || process.platform === 'win32') return true;
  return Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY);
}

/** Best effort: a missing opener or display is not an error, the URL is printed anyway. */
export function openBrowser(url: string): boolean {
  if (!hasDisplay()) return false;
  const [cmd, args] =
    process.platform === 'darwin' ? ['open', [url]] : process.platform === 'win32' ? ['cmd', ['/c', 'start', '', url]] : ['xdg-open', [url]];
  try {
    const child = spawn(cmd as string, args as string[], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
    return true;
  } catch {
    return false;
  }
}

export async function startServer(opts: ServerOptions = {}): Promise<RunningServer> {
  const print = opts.print ?? ((line: string) => process.stderr.write(`${line}\n`));
  const host = opts.host ?? DEFAULT_HOST;
  if (!isLoopback(host) && !opts.token && !opts.insecure) throw new InsecureBindError(host);
  if (opts.build ?? true) {
    const result = await buildPlayground(opts.playgroundDir ? { outDir: opts.playgroundDir } : {});
    if (result.built) print(`skein: built the playground in ${result.ms} ms`);
  }
  const ownsEngine = !opts.engine;
  let engine: Engine;
  if (opts.engine) engine = opts.engine;
  else {
    print(`skein: loading model ${opts.model ?? DEFAULT_MODEL} …`);
    engine = await createDefaultEngine(opts.model ?? DEFAULT_MODEL, opts.policy, opts.kvBudgetBytes);
  }
  const allowedHosts = opts.allowedHosts?.includes('*') ? ['*'] : defaultAllowedHosts(host, opts.allowedHosts);
  const runDb = opts.dataDir ? RunDatabase.open(opts.dataDir) : undefined;
  const interrupted = runDb ? runDb.recover(0).interrupted : [];
  if (interrupted.length) print(`skein: ${interrupted.length} run(s) were in flight when the server last stopped; marked interrupted`);
  const app = createApp({ ...opts, engine, allowedHosts, ...(runDb ? { runDb } : {}) });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: opts.port ?? DEFAULT_PORT, hostname: host }, () => resolve(s as Server)) as Server;
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${shownHost}:${port}/`;

  if (opts.open) {
    // The token rides in the fragment: the page reads it, it is never sent to the server.
    const pageUrl = opts.token ? `${url}#token=${encodeURIComponent(opts.token)}` : url;
    const bar = '─'.repeat(Math.max(pageUrl.length + 4, 40));
    print(`\n${bar}\n  Skein playground (model ${engine.modelName})\n  ${pageUrl}\n${bar}\n`);
    openBrowser(pageUrl);
  } else {
    print(`skein: serving ${engine.modelName} on ${url}`);
  }

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const run of app.runs.list()) if (run.state === 'running') app.runs.cancel(run.id);
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    runDb?.close();
    if (ownsEngine) await engine.close();
  };
  return {
    url,
    host,
    port,
    app,
    engine,
    interrupted,
    async shutdown(options = {}) {
      // No new connections from here; open ones may still read their streams to the end.
      const allClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      const report = await app.drain.run(app.runs, { graceMs: options.graceMs ?? 10_000 });
      // SSE responses end once their run-end is written; their connections then go idle
      // and are closed here, so no client is cut off in the middle of its last event.
      const sweep = setInterval(() => server.closeIdleConnections(), 10);
      await Promise.race([allClosed, new Promise((r) => setTimeout(r, 2000))]);
      clearInterval(sweep);
      await close();
      return report;
    },
    close,
  };
}
