/**
 * `loop`: a bounded agent loop. Each turn feeds the current value to `body` and takes
 * the body's last value as the next one; the loop ends after `maxTurns` turns or as soon
 * as a value meets the declarative `stop` condition, and emits that value.
 *
 * @example
 * of('Topic: tea').pipe(loop({ maxTurns: 3, stop: { contains: 'AGREED' }, body: (t) => of(t).pipe(generate({ engine })) }));
 */
import { concatMap, defer, last, of, type Observable, type OperatorFunction } from 'rxjs';
import { matchCondition } from '../core/conditions.js';
import type { Condition } from '../core/graph-schema.js';
import type { OperatorContext } from './context.js';
import { perValue } from './internal/operate.js';

export interface LoopOptions<T> {
  /** One turn: from the current value to the next (its last emission counts). Turns count from 0. */
  body: (value: T, turn: number) => Observable<T>;
  maxTurns: number;
  stop?: Condition;
  context?: OperatorContext;
}

export function loop<T>(options: LoopOptions<T>): OperatorFunction<T, T> {
  const turn = (value: T, n: number): Observable<T> =>
    defer(() => options.body(value, n)).pipe(
      last(),
      concatMap((next) => (n + 1 >= options.maxTurns || (options.stop && matchCondition(options.stop, next)) ? of(next) : turn(next, n + 1))),
    );
  return perValue((value: T) => turn(value, 0));
}
