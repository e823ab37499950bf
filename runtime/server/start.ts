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
import { buildPlayground } from './playground.js';

export const DEFAULT_PORT = 8787;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_MODEL = 'skein-mini';

export interface ServerOptions extends Omit<AppOptions, 'engine'> {
  /** An engine to serve; when absent one is created for `model`. */
  engine?: Engine;
  /** Model name (under models/) or folder, when no engine is given (default skein-mini). */
  model?: string;
  /** How the engine it creates orders work across runs: 'fcfs' (default) or 'fair' (per run). */
  policy?: SchedulingPolicy;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Print the URL prominently and open a browser if a display exists. */
  open?: boolean;
  /** Build the playground first when it is missing or stale (default true). */
  build?: boolean;
  /** Progress lines (default: stderr). */
  print?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  host: string;
  port: number;
  app: SkeinApp;
  engine: Engine;
  close(): Promise<void>;
}

async function createDefaultEngine(model: string, policy?: SchedulingPolicy): Promise<Engine> {
  // Loaded on demand: a server handed an engine (tests) never pays for the runtime.
  const { createEngine } = await import('../engine/index.js');
  return createEngine({ model, ...(policy ? { policy } : {}) });
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
  if (opts.build ?? true) {
    const result = await buildPlayground(opts.playgroundDir ? { outDir: opts.playgroundDir } : {});
    if (result.built) print(`skein: built the playground in ${result.ms} ms`);
  }
  const ownsEngine = !opts.engine;
  let engine: Engine;
  if (opts.engine) engine = opts.engine;
  else {
    print(`skein: loading model ${opts.model ?? DEFAULT_MODEL} …`);
    engine = await createDefaultEngine(opts.model ?? DEFAULT_MODEL, opts.policy);
  }
  const app = createApp({ ...opts, engine });
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
  return {
    url,
    host,
    port,
    app,
    engine,
    async close() {
      if (closed) return;
      closed = true;
      for (const run of app.runs.list()) if (run.state === 'running') app.runs.cancel(run.id);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      if (ownsEngine) await engine.close();
    },
  };
}
