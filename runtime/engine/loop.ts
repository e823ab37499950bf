/**
 * Drives an EngineCore: one step per macrotask (setImmediate), so that messages, cancels
 * and I/O are served between steps, and it sleeps when there is no work. A step that
 * throws (a bug, not a model error: those fail only their sequences) fails every
 * request rather than stopping the loop.
 *
 * @example
 * const loop = new StepLoop(core, () => flushEvents());
 * core.submit(msg); loop.kick();
 */
import type { EngineCore } from './core.js';

export class StepLoop {
  private active = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly core: EngineCore,
    /** Called after each step (and after a failed one), e.g. to post the step's events. */
    private readonly afterStep: () => void = () => {},
  ) {}

  kick(): void {
    if (this.active) return;
    this.active = true;
    setImmediate(() => this.tick());
  }

  /** Resolves when no step is pending. */
  idle(): Promise<void> {
    return this.active ? new Promise((resolve) => this.idleWaiters.push(resolve)) : Promise.resolve();
  }

  private tick(): void {
    if (!this.core.hasWork()) {
      this.active = false;
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    try {
      this.core.step();
    } catch (err) {
      this.core.close(err instanceof Error ? err : new Error(String(err)));
    }
    this.afterStep();
    setImmediate(() => this.tick());
  }
}
