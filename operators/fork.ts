/**
 * `fork`: runs one value through several named branches at once. Each branch's events
 * come out under its branch id, and each branch's outcome as it finishes (a failed
 * branch is a branch-error event and a `failed` outcome; the others go on). Pair it with
 * `join`, whose mode says how outcomes combine.
 *
 * @example
 * of('tea').pipe(
 *   fork({ pro: generate({ engine, system: 'Argue for.' }), con: generate({ engine, system: 'Argue against.' }) }),
 *   join('object'),
 * ).subscribe(console.log); // …events, then node-end { output: { pro: '…', con: '…' } }
 */
import { map, merge, of, type OperatorFunction } from 'rxjs';
import { isOperatorEvent, type OperatorEvent } from '../core/events.js';
import { childBranch, type OperatorContext } from './context.js';
import { runBranch, underBranch, type BranchOutcome } from './internal/branches.js';
import { perValue, type Flow } from './internal/operate.js';

export type { BranchOutcome } from './internal/branches.js';

export interface ForkOptions {
  context?: OperatorContext;
}

export function fork<T, R>(
  branches: Record<string, OperatorFunction<T, R | OperatorEvent>>,
  options: ForkOptions = {},
): OperatorFunction<Flow<T>, OperatorEvent | BranchOutcome<R>> {
  const node = options.context?.node ?? 'fork';
  return perValue(
    (value: T) =>
      merge(
        ...Object.entries(branches).map(([key, op], index) => {
          const branch = childBranch(options.context, key);
          const work = of(value).pipe(
            op,
            map((item) => (isOperatorEvent(item) ? underBranch(item, branch) : item)),
          );
          return runBranch(work, { key, branch, index }, node);
        }),
      ),
    options.context?.branch,
  );
}
