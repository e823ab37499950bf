/**
 * The in-process transport: the EngineCore runs on this thread, one step per macrotask.
 * Used by tests and by `thread: 'main'`; the worker runs the same core behind messages.
 *
 * @example
 * const transport = new LocalTransport({ model, tokenizer, sampler });
 */
import { CancelledError } from '../../core/errors.js';
import type { SchedulerStats } from '../scheduler/scheduler.js';
import { EngineCore, type CoreEvent, type CoreSubmit, type EngineCoreOptions } from './core.js';
import type { EngineTransport } from './front.js';
import { StepLoop } from './loop.js';

export class LocalTransport implements EngineTransport {
  readonly core: EngineCore;
  private readonly loop: StepLoop;
  private readonly listeners = new Map<string, (event: CoreEvent) => void>();

  /** `keepModel`: the caller owns the model, so closing leaves it loaded. */
  constructor(options: Omit<EngineCoreOptions, 'emit'> & { keepModel?: boolean }, private readonly keepModel = options.keepModel ?? false) {
    this.core = new EngineCore({ ...options, emit: (event) => this.dispatch(event) });
    this.loop = new StepLoop(this.core);
  }

  submit(msg: CoreSubmit, listener: (event: CoreEvent) => void): void {
    this.listeners.set(msg.requestId, listener);
    this.core.submit(msg);
    this.loop.kick();
  }

  cancel(requestId: string): void {
    this.listeners.delete(requestId);
    this.core.cancel(requestId);
  }

  stats(): SchedulerStats {
    return this.core.stats();
  }

  async close(): Promise<void> {
    this.core.close(new CancelledError('engine closed'));
    await this.loop.idle();
    if (!this.keepModel) this.core.scheduler.model.dispose();
  }

  private dispatch(event: CoreEvent): void {
    const listener = this.listeners.get(event.requestId);
    if (event.type === 'done' || event.type === 'scored' || event.type === 'embedded' || event.type === 'error') this.listeners.delete(event.requestId);
    listener?.(event);
  }
}
