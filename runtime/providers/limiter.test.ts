import { describe, expect, it } from 'vitest';
import { CancelledError } from '../../core/errors.js';
import { Limiter } from './limiter.js';

describe('Limiter', () => {
  it('holds at most max slots and hands them on in arrival order', async () => {
    const limit = new Limiter(2);
    const a = await limit.acquire();
    await limit.acquire();
    const order: string[] = [];
    const c = limit.acquire().then((r) => (order.push('c'), r));
    const d = limit.acquire().then((r) => (order.push('d'), r));
    expect([limit.running, limit.waiting]).toEqual([2, 2]);
    a();
    a(); // a second release of the same slot changes nothing
    (await c)();
    await d;
    expect(order).toEqual(['c', 'd']);
    expect([limit.running, limit.waiting]).toEqual([2, 0]);
  });

  it('lets a cancelled waiter leave the queue without taking a slot', async () => {
    const limit = new Limiter(1);
    const release = await limit.acquire();
    const abort = new AbortController();
    const waiting = limit.acquire(abort.signal);
    abort.abort();
    await expect(waiting).rejects.toBeInstanceOf(CancelledError);
    expect(limit.waiting).toBe(0);
    release();
    expect(limit.running).toBe(0);
    await expect(limit.acquire(abort.signal)).rejects.toBeInstanceOf(CancelledError);
  });
});
