/**
 * The main-thread side of the worker engine: starts the worker, forwards submit/cancel
 * messages and dispatches the events it sends back to each request's listener. If the
 * worker dies, every open request gets the error; nothing hangs.
 *
 * @example
 * const { transport, backend } = await startWorker({ model: 'skein-mini' });
 */
import { Worker } from 'node:worker_threads';
import { CancelledError, EngineUnavailableError } from '../../core/errors.js';
import type { SchedulerStats } from '../scheduler/scheduler.js';
import type { CoreEvent, CoreSubmit } from './core.js';
import type { EngineTransport } from './front.js';
import { fromWire, type FromWorker, type ToWorker, type WorkerInit } from './wire.js';

export class WorkerTransport implements EngineTransport {
  private readonly listeners = new Map<string, (event: CoreEvent) => void>();
  private dead: Error | null = null;
  private closing: Promise<void> | null = null;

  /** `onDeath` hears once when the worker exits or fails other than by close(). */
  constructor(
    private readonly worker: Worker,
    private lastStats: SchedulerStats,
    private lastTensors: number,
    private readonly onDeath?: (err: Error) => void,
  ) {
    worker.on('message', (msg: FromWorker) => {
      if (msg.type !== 'events') return;
      this.lastStats = msg.stats;
      this.lastTensors = msg.tensors;
      for (const wire of msg.events) {
        const event: CoreEvent = wire.type === 'error' ? { ...wire, error: fromWire(wire.error) } : wire;
        const listener = this.listeners.get(event.requestId);
        if (event.type === 'done' || event.type === 'scored' || event.type === 'embedded' || event.type === 'error') this.listeners.delete(event.requestId);
        listener?.(event);
      }
    });
    const die = (err: Error) => {
      if (this.dead) return;
      this.dead = err;
      for (const [requestId, listener] of this.listeners) listener({ type: 'error', requestId, error: err });
      this.listeners.clear();
      if (!this.closing) this.onDeath?.(err);
    };
    worker.on('error', (err) => die(new EngineUnavailableError(`the model worker failed (${err.message})`)));
    worker.on('exit', (code) => die(new EngineUnavailableError(`the model worker exited (code ${code})`)));
  }

  /** Ends the worker at once, as a crash would: fault injection for tests and the soak bench. */
  async kill(): Promise<void> {
    await this.worker.terminate();
  }

  submit(msg: CoreSubmit, listener: (event: CoreEvent) => void): void {
    if (this.dead) {
      listener({ type: 'error', requestId: msg.requestId, error: this.dead });
      return;
    }
    this.listeners.set(msg.requestId, listener);
    this.post({ type: 'submit', ...msg });
  }

  cancel(requestId: string): void {
    if (!this.listeners.delete(requestId) || this.dead) return;
    this.post({ type: 'cancel', requestId });
  }

  stats(): SchedulerStats {
    return this.lastStats;
  }

  tensors(): number {
    return this.lastTensors;
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (this.dead) return resolve();
      const done = () => resolve();
      this.worker.once('exit', done);
      this.worker.on('message', (m: FromWorker) => m.type === 'closed' && void this.worker.terminate());
      this.post({ type: 'close' });
    }).then(() => {
      this.dead ??= new CancelledError('engine closed');
    });
    return this.closing;
  }

  private post(msg: ToWorker): void {
    this.worker.postMessage(msg);
  }
}

export async function startWorker(init: WorkerInit, onDeath?: (err: Error) => void): Promise<{ transport: WorkerTransport; backend: string }> {
  const worker = new Worker(new URL('./worker-boot.mjs', import.meta.url), { workerData: init });
  return new Promise((resolve, reject) => {
    const onMessage = (msg: FromWorker) => {
      if (msg.type === 'ready') {
        cleanup();
        resolve({ transport: new WorkerTransport(worker, msg.stats, msg.tensors, onDeath), backend: msg.backend });
      } else if (msg.type === 'fatal') {
        cleanup();
        void worker.terminate();
        reject(fromWire(msg.error));
      }
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onExit = (code: number) => {
      cleanup();
      reject(new Error(`engine worker exited during start (code ${code})`));
    };
    const cleanup = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}
