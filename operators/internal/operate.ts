/**
 * The one wrapper every Skein operator is written with (the role rxjs's `operate` plays in
 * `util/lift.ts`): the body subscribes to its source and returns what to release; a throw
 * becomes `subscriber.error(err)`, and the returned teardown runs exactly once — on
 * complete, on error and on unsubscribe alike — because the Observable owns it.
 *
 * @example
 * const double = () => operate<number, number>((source, out) => source.subscribe({
 *   next: (v) => out.next(v * 2), error: (e) => out.error(e), complete: () => out.complete(),
 * }));
 */
import { Observable, concatMap, defer, type ObservableInput, type OperatorFunction, type Subscriber, type TeardownLogic } from 'rxjs';

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

/** The common shape: each source value starts one inner job; jobs run one after another. */
export function perValue<In, Out>(project: (value: In) => ObservableInput<Out>): OperatorFunction<In, Out> {
  return operate<In, Out>((source, subscriber) => source.pipe(concatMap((value) => defer(() => project(value)))).subscribe(subscriber));
}
