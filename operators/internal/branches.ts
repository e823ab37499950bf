/**
 * Branch bookkeeping shared by fork and expand: a branch's work streams its events and
 * ends with a value (its node-end at the branch's level, or its last plain value) or
 * fails; a failure becomes a branch-error event and a `failed` outcome, so its siblings
 * go on. Also how join combines finished outcomes.
 */
import { Observable, catchError, concat, defer, filter, of } from 'rxjs';
import { errorInfo, nextFinish, toError, type BranchOutcome } from '../../core/branches.js';
import { BadRequestError, BranchesFailedError } from '../../core/errors.js';
import { isOperatorEvent, operatorEvent, type OperatorEvent } from '../../core/events.js';
import type { JoinMode } from '../../core/graph-schema.js';
import type { OperatorContext } from '../context.js';
import { renderValue } from '../template.js';

export type { BranchOutcome } from '../../core/branches.js';

/** A branch's events and, last, its outcome (the only item that is not an event). */
export function runBranch<T>(
  work: Observable<T | OperatorEvent>,
  where: { key: string; branch: string; index: number },
  node: string,
): Observable<OperatorEvent | BranchOutcome<T>> {
  return defer(() => {
    let result: { value: T } | undefined;
    return concat(
      work.pipe(
        filter((item): item is OperatorEvent => {
          if (!isOperatorEvent(item)) result = { value: item };
          else if (item.type === 'node-end' && item.branch === where.branch) result = { value: item.output as T };
          return isOperatorEvent(item);
        }),
      ),
      defer(() => {
        if (!result) throw new Error(`branch ${where.branch} ended without a value`);
        return of<BranchOutcome<T>>({ ...where, status: 'ok', value: result.value, finished: nextFinish() });
      }),
    ).pipe(
      catchError((err: unknown) => {
        const error = toError(err);
        return of(
          operatorEvent({ type: 'branch-error', node, branch: where.branch, error: errorInfo(error) }),
          { ...where, status: 'failed' as const, error, finished: nextFinish() },
        );
      }),
    );
  });
}

/** An inner operator's event moved under `branch` (its own branch, if any, nests below it). */
export function underBranch(event: OperatorEvent, branch: string): OperatorEvent {
  return operatorEvent({ ...event, branch: event.branch ? `${branch}/${event.branch}` : branch } as OperatorEvent);
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
