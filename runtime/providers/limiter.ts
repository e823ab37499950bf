/**
 * A counting semaphore for one provider's requests in flight. Written here rather than
 * taken from p-limit or p-queue because a waiting request must be able to leave the queue
 * when its run is cancelled (an AbortSignal), which those do not offer per task; the
 * whole of it is a counter and a FIFO of waiters.
 *
 * @example
 * const limit = new Limiter(4);
 * const release = await limit.acquire(signal);
 * try { await call(); } finally { release(); }
 */
import { CancelledError } from '../../core/errors.js';

interface Waiter {
  grant: () => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class Limiter {
  private active = 0;
  private readonly waiters: Waiter[] = [];

  constructor(readonly max: number) {
    if (!(Number.isInteger(max) && max >= 1)) throw new RangeError(`a limiter needs at least 1 slot, got ${max}`);
  }

  /** Requests holding a slot. */
  get running(): number {
    return this.active;
  }

  /** Requests waiting for one. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Resolves with the slot's release (call it once) when a slot is free; rejects with CancelledError if `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(new CancelledError('request (before it was sent)'));
    if (this.active < this.max) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { grant: () => resolve(this.releaser()), signal };
      if (signal) {
        waiter.onAbort = () => {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          reject(new CancelledError('request (before it was sent)'));
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (!next) {
        this.active--;
        return;
      }
      // The slot passes straight to the next waiter: `active` stays as it is.
      if (next.onAbort) next.signal!.removeEventListener('abort', next.onAbort);
      next.grant();
    };
  }
}
