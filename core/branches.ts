/**
 * Branch outcomes, the vocabulary shared by the graph runner and the fork, expand and
 * join operators: a branch's work ends with a value, fails, or is skipped (a route's
 * untaken branch). Outcomes carry their declared index (for ordered joins) and a
 * finishing number (for `first`).
 *
 * @example
 * const o: BranchOutcome<string> = { key: 'pro', branch: 'pro', index: 0, finished: nextFinish(), status: 'ok', value: 'yes' };
 */
import { SkeinError } from './errors.js';
import type { ErrorInfo } from './events.js';

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

/** An error as events carry it: typed errors keep their code, anything else is 'internal'. */
export function errorInfo(err: unknown): ErrorInfo {
  const e = toError(err);
  return e instanceof SkeinError ? { name: e.name, message: e.message, code: e.code } : { name: e.name, message: e.message, code: 'internal' };
}
