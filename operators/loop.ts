/**
 * `loop`: a bounded agent loop. Each turn feeds the current value to `body` and takes
 * the body's last result (a plain value, or the node-end of the body's last operator) as
 * the next one, passing the body's other events through; the loop ends after `maxTurns`
 * turns or as soon as a value meets the declarative `stop` condition, and its node-end
 * carries that value.
 *
 * @example
 * of('Topic: tea').pipe(loop({ maxTurns: 3, stop: { contains: 'AGREED' }, body: (t) => of(t).pipe(generate({ engine })) }));
 */
import { EmptyError, concat, defer, filter, of, type Observable, type OperatorFunction } from 'rxjs';
import { matchCondition } from '../core/conditions.js';
import type { OperatorEvent } from '../core/events.js';
import type { Condition } from '../core/graph-schema.js';
import type { OperatorContext } from './context.js';
import { done, nodeStream, type Step } from './internal/node.js';
import { inputOf, perValue, type Flow } from './internal/operate.js';

export interface LoopOptions<T> {
  /** One turn: from the current value to the next (its last emission counts). Turns count from 0. */
  body: (value: T, turn: number) => Observable<Flow<T>>;
  maxTurns: number;
  stop?: Condition;
  context?: OperatorContext;
}

export function loop<T>(options: LoopOptions<T>): OperatorFunction<Flow<T>, OperatorEvent> {
  const scope = { node: options.context?.node ?? 'loop', branch: options.context?.branch };
  const turn = (value: T, n: number): Observable<Step<T>> =>
    defer(() => {
      let result: { value: T } | undefined;
      return concat(
        defer(() => options.body(value, n)).pipe(
          filter((item): item is OperatorEvent => {
            const input = inputOf(item, scope.branch);
            if (input) result = input;
            return !input;
          }),
        ),
        defer(() => {
          if (!result) throw new EmptyError();
          const next = result.value;
          return n + 1 >= options.maxTurns || (options.stop && matchCondition(options.stop, next)) ? of(done(next)) : turn(next, n + 1);
        }),
      );
    });
  return perValue((value: T) => nodeStream(scope, turn(value, 0)), scope.branch);
}
