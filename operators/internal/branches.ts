/**
 * Branch bookkeeping shared by fork, expand and the graph runner: a branch's work either
 * ends with a value or fails; a failure becomes a branch-error event and a `failed`
 * outcome, so its siblings go on. Outcomes carry their declared index (for ordered joins)
 * and a finishing number (for `first`).
 */
import { Observable, catchError, last, map, of } from 'rxjs';
import { BadRequestError, BranchesFailedError } from '../../core/errors.js';
import type { JoinMode } from '../../core/graph-schema.js';
import type { OperatorContext } from '../context.js';
import { renderValue } from '../template.js';

interface OutcomeBase {
  /** Port or branch name (the key of an `object` join). */
  key: string;
  /** Full branch id used in events. */
  branch: string;
  /** Declared position, for ordered joins. */
  index: number;
  /** Finishing order across the process, for `first`. */
  finished: number;
}

export type BranchOutcome<T = unknown> = OutcomeBase &
  ({ status: 'ok'; value: T } | { status: 'failed'; error: Error } | { status: 'skipped' });

let finishCounter = 0;
export const nextFinish = () => ++finishCounter;

export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export function runBranch<T>(
  work: Observable<T>,
  where: { key: string; branch: string; index: number },
  context: OperatorContext | undefined,
): Observable<BranchOutcome<T>> {
  return new Observable<BranchOutcome<T>>((subscriber) => {
    context?.onEvent?.({ type: 'branch-start', branch: where.branch });
    return work
      .pipe(
        last(),
        map((value): BranchOutcome<T> => {
          context?.onEvent?.({ type: 'branch-end', branch: where.branch, output: value });
          return { ...where, status: 'ok', value, finished: nextFinish() };
        }),
        catchError((err: unknown) => {
          const error = toError(err);
          context?.onEvent?.({ type: 'branch-error', branch: where.branch, error });
          return of<BranchOutcome<T>>({ ...where, status: 'failed', error, finished: nextFinish() });
        }),
      )
      .subscribe(subscriber);
  });
}

export interface JoinOptions {
  /** concat only (default a blank line). */
  separator?: string;
  context?: OperatorContext;
}

/** Combines finished outcomes by mode; failed and skipped ones are left out, none left is an error. */
export function joinOutcomes(mode: JoinMode, outcomes: BranchOutcome[], options: JoinOptions = {}): unknown {
  const ok = outcomes.filter((o): o is Extract<BranchOutcome, { status: 'ok' }> => o.status === 'ok');
  if (!ok.length)
    throw new BranchesFailedError(
      options.context?.node ?? 'join',
      outcomes.map((o) => ({ branch: o.branch, message: o.status === 'failed' ? o.error.message : 'skipped' })),
    );
  const ordered = [...ok].sort((a, b) => a.index - b.index);
  const flat = () => ordered.flatMap((o) => (Array.isArray(o.value) ? o.value : [o.value]));
  switch (mode) {
    case 'concat':
      return flat().map(renderValue).join(options.separator ?? '\n\n');
    case 'list':
      return flat();
    case 'object':
      return Object.fromEntries(ordered.map((o) => [o.key, o.value]));
    case 'first':
      return [...ok].sort((a, b) => a.finished - b.finished)[0]!.value;
    default: {
      const never: never = mode;
      throw new BadRequestError('join.mode', `unknown join mode ${JSON.stringify(never)}`);
    }
  }
}
