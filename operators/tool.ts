/**
 * `tool`: calls a TypeScript function registered by name (graphs name tools, they never
 * carry code). The function may return a value, a promise or an observable; it gets an
 * AbortSignal that fires when the run is cancelled. Its failures, and results nested past
 * the JSON shape limits, become ToolError.
 *
 * @example
 * registerTool('upper', (s) => String(s).toUpperCase());
 * of('hi').pipe(tool('upper')).subscribe(console.log); // "HI"
 */
import { Observable, from, isObservable, last, map } from 'rxjs';
import type { OperatorFunction } from 'rxjs';
import type { OperatorEvent } from '../core/events.js';
import { NotFoundError, ToolError } from '../core/errors.js';
import { checkJsonShape, DEFAULT_SHAPE_LIMITS } from '../core/json-shape.js';
import { defaultTools, type ToolRegistry } from '../core/tools.js';
import type { OperatorContext } from './context.js';
import { done, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';

export interface ToolOptions {
  registry?: ToolRegistry;
  args?: Record<string, unknown>;
  context?: OperatorContext;
}

export function tool(name: string, options: ToolOptions = {}): OperatorFunction<Flow<unknown>, OperatorEvent> {
  const registry = options.registry ?? defaultTools;
  const scope = { node: options.context?.node ?? name, branch: options.context?.branch };
  const call = (input: unknown) =>
      new Observable<unknown>((subscriber) => {
        const fn = registry.get(name);
        if (!fn) throw new NotFoundError('tool', name);
        const abort = new AbortController();
        const fail = (err: unknown) => subscriber.error(err instanceof ToolError ? err : new ToolError(name, err));
        let result: unknown;
        try {
          result = fn(input, { args: options.args ?? {}, signal: abort.signal, node: options.context?.node });
        } catch (err) {
          fail(err);
          return undefined;
        }
        const source = isObservable(result) ? result.pipe(last()) : from(Promise.resolve(result));
        // A result nested past the limits could not be serialised into the run's events.
        const emit = (v: unknown) => {
          try {
            checkJsonShape(v, DEFAULT_SHAPE_LIMITS, 'result');
          } catch (err) {
            return fail(err);
          }
          subscriber.next(v);
        };
        const sub = source.subscribe({ next: emit, error: fail, complete: () => subscriber.complete() });
        return () => {
          sub.unsubscribe();
          abort.abort();
        };
      });
  return perValue((input: unknown) => nodeStream(scope, call(input).pipe(map((value) => done(value)))), scope.branch);
}
