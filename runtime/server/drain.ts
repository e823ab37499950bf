/**
 * Draining for a graceful stop (SIGTERM): once started, requests that would start work
 * (POST under /v1) get 503 with Retry-After while runs already in flight may finish
 * within a grace period; what is still running then is cancelled, so every SSE client
 * receives a cancelled run-end before the connections close.
 *
 * @example
 * const drain = new Drain();
 * app.use('/v1/*', drain.middleware());
 * await drain.run(store, { graceMs: 10_000 });
 */
import type { MiddlewareHandler } from 'hono';
import type { RunStore } from './runs.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(done: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() >= end) return false;
    await sleep(10);
  }
  return true;
}

export interface DrainReport {
  /** Runs that finished by themselves within the grace period. */
  finished: number;
  /** Runs cancelled when it ran out. */
  cancelled: number;
}

export class Drain {
  private started = false;

  get draining(): boolean {
    return this.started;
  }

  middleware(): MiddlewareHandler {
    return async (c, next) => {
      if (this.started && c.req.method === 'POST') {
        return c.json({ error: { message: 'The server is shutting down; retry on another instance or after it restarts', code: 'shutting_down' } }, 503, {
          'Retry-After': '5',
        });
      }
      await next();
    };
  }

  /**
   * Stops new work, waits up to `graceMs` for runs and completions in flight, cancels the
   * rest, then waits (up to `flushMs`) for every SSE follower to have written its run-end.
   */
  async run(store: RunStore, options: { graceMs: number; flushMs?: number }): Promise<DrainReport> {
    this.started = true;
    const before = store.runningCount;
    await until(() => store.activeCount === 0, options.graceMs);
    let cancelled = 0;
    for (const run of store.list()) if (run.state === 'running' && store.cancel(run.id)) cancelled++;
    await until(() => store.followerCount === 0, options.flushMs ?? 2000);
    return { finished: before - cancelled, cancelled };
  }
}
