/**
 * Writes to a stream one after another from synchronous callbacks (an Observable's next),
 * in order. A failed write means the client has gone: it is swallowed here, and the
 * stream's abort handler does the cleaning up, so no rejection is ever left unhandled.
 *
 * @example
 * const out = orderedWrites();
 * source$.subscribe((e) => out.push(() => sse.writeSSE({ data: JSON.stringify(e) })));
 * await out.drained();
 */
export interface OrderedWrites {
  push(write: () => Promise<unknown>): void;
  /** Resolves once every write pushed so far has finished or failed. */
  drained(): Promise<void>;
}

export function orderedWrites(): OrderedWrites {
  let tail: Promise<void> = Promise.resolve();
  return {
    push(write) {
      tail = tail.then(write).then(
        () => undefined,
        () => undefined,
      );
    },
    drained: () => tail,
  };
}
