/**
 * `fork`: runs one value through several named branches at once and emits each branch's
 * outcome as it finishes (a failed branch is a branch-error event and a `failed` outcome;
 * the others go on). Pair it with `join`, whose mode says how outcomes combine.
 *
 * @example
 * of('tea').pipe(
 *   fork({ pro: generate({ engine, system: 'Argue for.' }), con: generate({ engine, system: 'Argue against.' }) }),
 *   join('object'),
 * ).subscribe(console.log); // { pro: '…', con: '…' }
 */
import { merge, of, type OperatorFunction } from 'rxjs';
import { childBranch, type OperatorContext } from './context.js';
import { runBranch, type BranchOutcome } from './internal/branches.js';
import { perValue } from './internal/operate.js';

export type { BranchOutcome } from './internal/branches.js';

export interface ForkOptions {
  context?: OperatorContext;
}

export function fork<T, R>(branches: Record<string, OperatorFunction<T, R>>, options: ForkOptions = {}): OperatorFunction<T, BranchOutcome<R>> {
  return perValue((value: T) =>
    merge(
      ...Object.entries(branches).map(([key, op], index) =>
        runBranch(of(value).pipe(op), { key, branch: childBranch(options.context, key), index }, options.context),
      ),
    ),
  );
}
