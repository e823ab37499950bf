/**
 * The one wrapper every Skein operator is written with (the role rxjs's `operate` plays in
 * `util/lift.ts`): the body subscribes to its source and returns what to release; a throw
 * becomes `subscriber.error(err)`, and the returned teardown runs exactly once — on
 * complete, on error and on unsubscribe alike — because the Observable owns it.
 *
 * Skein streams are flows: values and operator events (core/events.ts) on one Observable.
 * An operator passes the events it receives through unchanged and works on each input,
 * which is either a plain value or the result of the operator before it — that one's
 * node-end at the same branch level, which the operator takes in place of forwarding.
 *
 * @example
 * const double = () => operate<number, number>((source, out) => source.subscribe({
 *   next: (v) => out.next(v * 2), error: (e) => out.error(e), complete: () => out.complete(),
 * }));
 */
import {
  Observable,
  concatMap,
  defer,
  filter,
  map,
  of,
  type ObservableInput,
  type OperatorFunction,
  type Subscriber,
  type TeardownLogic,
} from 'rxjs';
import { isOperatorEvent, type OperatorEvent } from '../../core/events.js';

/** A Skein stream's items: values of type T and the operator events around them. */
export type Flow<T> = T | OperatorEvent;

export function operate<In, Out>(body: (source: Observable<In>, subscriber: Subscriber<Out>) => TeardownLogic): OperatorFunction<In, Out> {
  return (source) =>
    new Observable<Out>((subscriber) => {
      try {
        return body(source, subscriber);
      } catch (err) {
        subscriber.error(err);
        return undefined;
      }
    });
}

/** Whether a flow item is an input at `branch` level: a plain value or the node-end of the operator before. */
export function inputOf<In>(item: Flow<In>, branch: string | undefined): { value: In } | undefined {
  if (!isOperatorEvent(item)) return { value: item };
  return item.type === 'node-end' && item.branch === branch ? { value: item.output as In } : undefined;
}

/**
 * The common shape: each input starts one inner job; jobs run one after another, and
 * other events pass through in order. `branch` is the level the operator works at (its
 * context's branch).
 */
export function perValue<In, Out>(project: (value: In) => ObservableInput<Out>, branch?: string): OperatorFunction<Flow<In>, Out | OperatorEvent> {
  return operate<Flow<In>, Out | OperatorEvent>((source, subscriber) =>
    source
      .pipe(
        concatMap((item): Observable<Out | OperatorEvent> => {
          const input = inputOf(item, branch);
          return input ? defer(() => project(input.value)) : of(item as OperatorEvent);
        }),
      )
      .subscribe(subscriber),
  );
}

/** The inputs of a flow at `branch` level, events dropped: what a plain-values consumer wants. */
export function inputs<T>(branch?: string): OperatorFunction<Flow<T>, T> {
  return (source) =>
    source.pipe(
      map((item) => inputOf(item, branch)),
      filter((x): x is { value: T } => x !== undefined),
      map((x) => x.value),
    );
}
