/**
 * Keeps the engine worker alive: when it exits (a crash, an out-of-memory kill, a native
 * abort) every request in flight on it ends with EngineUnavailableError, a new worker is
 * started after a backoff that doubles while restarts keep failing, and requests that
 * arrive meanwhile wait for it (up to `maxWaitMs`, then they get the same typed error).
 * While it is down, `health()` says degraded and the KV and queue figures read zero, so
 * gauges never report the dead worker's last state.
 *
 * @example
 * const supervised = await SupervisedTransport.start(() => startWorker(init, onDeath));
 * supervised.health(); // { status: 'ok', restarts: 0 }
 */
import { CancelledError, EngineUnavailableError } from '../../core/errors.js';
import type { SchedulerStats } from '../scheduler/scheduler.js';
import type { CoreEvent, CoreSubmit } from './core.js';
import type { EngineTransport } from './front.js';
import type { EngineHealth } from '../../core/engine.js';

/** A started worker: its transport and a way to end it as a crash would. */
export interface WorkerHandle extends EngineTransport {
  kill(): Promise<void>;
  tensors(): number;
}

export type StartWorker = (onDeath: (err: Error) => void) => Promise<{ transport: WorkerHandle; backend: string }>;

export interface SupervisorOptions {
  /** First delay before a restart; it doubles after each failed start (default 100 ms). */
  backoffMs?: number;
  /** Longest delay between restarts (default 10 s). */
  maxBackoffMs?: number;
  /** Told about each restart and failed start (default: stderr). */
  log?: (line: string) => void;
  /** How long a request that arrives while the worker is down waits for it (default 30 s). */
  maxWaitMs?: number;
}

interface Waiting {
  msg: CoreSubmit;
  listener: (event: CoreEvent) => void;
  timer: NodeJS.Timeout;
}

const QUICK_DEATH_MS = 5000;

const zeroStats = (last: SchedulerStats): SchedulerStats => ({ ...last, kvBlocksUsed: 0, kvBlocksShared: 0, kvBlocksCached: 0, kvTensors: 0, auxCacheEntries: 0, queueDepth: 0, runningSequences: 0 });

export class SupervisedTransport implements EngineTransport {
  private current: WorkerHandle | null;
  private down: EngineUnavailableError | null = null;
  private restarts = 0;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  // A worker that dies soon after starting waits longer each time; one that ran a while
  // is restarted after the first delay again.
  private upSince = Date.now();
  private lastDelayMs = 0;
  private lastStats: SchedulerStats;
  // Settles when the worker is up again (tests and the soak bench wait on it).
  private upWaiters: Array<() => void> = [];
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly log: (line: string) => void;
  private readonly maxWaitMs: number;
  // Requests that arrived while the worker was down, in arrival order.
  private readonly waiting = new Map<string, Waiting>();

  private constructor(
    private readonly startWorker: StartWorker,
    first: WorkerHandle,
    options: SupervisorOptions,
  ) {
    this.current = first;
    this.lastStats = first.stats();
    this.backoffMs = options.backoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 10_000;
    this.log = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.maxWaitMs = options.maxWaitMs ?? 30_000;
  }

  /** Starts the first worker; a failure to start it is thrown (a bad checkpoint stays fatal). */
  static async start(startWorker: StartWorker, options: SupervisorOptions = {}): Promise<{ transport: SupervisedTransport; backend: string }> {
    let self: SupervisedTransport | null = null;
    const { transport, backend } = await startWorker((err) => self?.onDeath(err));
    self = new SupervisedTransport(startWorker, transport, options);
    return { transport: self, backend };
  }

  submit(msg: CoreSubmit, listener: (event: CoreEvent) => void): void {
    if (this.closed) return listener({ type: 'error', requestId: msg.requestId, error: new CancelledError('engine closed') });
    if (this.current) return this.current.submit(msg, listener);
    const timer = setTimeout(() => {
      this.waiting.delete(msg.requestId);
      listener({ type: 'error', requestId: msg.requestId, error: this.down ?? new EngineUnavailableError('the model worker is down') });
    }, this.maxWaitMs);
    this.waiting.set(msg.requestId, { msg, listener, timer });
  }

  cancel(requestId: string): void {
    const waiting = this.waiting.get(requestId);
    if (waiting) {
      clearTimeout(waiting.timer);
      this.waiting.delete(requestId);
      return;
    }
    this.current?.cancel(requestId);
  }

  stats(): SchedulerStats {
    if (this.current) this.lastStats = this.current.stats();
    return this.current ? this.lastStats : zeroStats(this.lastStats);
  }

  /** tf tensors alive in the worker as of its last message; 0 while it is down. */
  tensors(): number {
    return this.current?.tensors() ?? 0;
  }

  health(): EngineHealth {
    return this.down ? { status: 'degraded', detail: this.down.reason, restarts: this.restarts } : { status: 'ok', restarts: this.restarts };
  }

  /** Ends the current worker as a crash would; the supervisor then restarts it. */
  async kill(): Promise<void> {
    await this.current?.kill();
  }

  /** Resolves when a worker is serving (at once when one is). */
  whenUp(): Promise<void> {
    return this.current || this.closed ? Promise.resolve() : new Promise((resolve) => this.upWaiters.push(resolve));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const current = this.current;
    this.current = null;
    for (const wake of this.upWaiters.splice(0)) wake();
    for (const { msg, listener, timer } of this.waiting.values()) {
      clearTimeout(timer);
      listener({ type: 'error', requestId: msg.requestId, error: new CancelledError('engine closed') });
    }
    this.waiting.clear();
    await current?.close();
  }

  private onDeath(err: Error): void {
    if (this.closed) return;
    this.lastStats = zeroStats(this.current?.stats() ?? this.lastStats);
    this.current = null;
    this.down = err instanceof EngineUnavailableError ? err : new EngineUnavailableError(err.message);
    const quick = Date.now() - this.upSince < QUICK_DEATH_MS;
    const delay = quick && this.lastDelayMs ? Math.min(this.lastDelayMs * 2, this.maxBackoffMs) : this.backoffMs;
    this.log(`skein: ${this.down.reason}; restarting it in ${delay} ms`);
    this.scheduleRestart(delay);
  }

  private scheduleRestart(delayMs: number): void {
    this.lastDelayMs = delayMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.restart(delayMs);
    }, delayMs);
  }

  private async restart(delayMs: number): Promise<void> {
    if (this.closed) return;
    try {
      const { transport } = await this.startWorker((err) => this.onDeath(err));
      if (this.closed) return void (await transport.close());
      this.current = transport;
      this.upSince = Date.now();
      this.lastStats = transport.stats();
      this.down = null;
      this.restarts++;
      this.log(`skein: model worker restarted (restart ${this.restarts})`);
      for (const { msg, listener, timer } of [...this.waiting.values()]) {
        clearTimeout(timer);
        transport.submit(msg, listener);
      }
      this.waiting.clear();
      for (const wake of this.upWaiters.splice(0)) wake();
    } catch (err) {
      const next = Math.min(delayMs * 2, this.maxBackoffMs);
      this.log(`skein: model worker failed to start (${(err as Error).message}); next try in ${next} ms`);
      this.scheduleRestart(next);
    }
  }
}
