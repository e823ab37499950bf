/**
 * `join`: combines branch outcomes with an explicit mode — `concat` (text, lists
 * flattened, joined by `separator`), `list` (array, lists flattened), `object` (by branch
 * key) or `first` (the first branch to succeed; the rest are unsubscribed, which cancels
 * their generations). Failed and skipped branches are left out; when none succeeded, join
 * fails with BranchesFailedError. An unknown mode throws, it never falls back.
 *
 * @example
 * source.pipe(fork({ a, b }), join('concat', { separator: '\n' }));
 */
import type { OperatorFunction } from 'rxjs';
import { BadRequestError } from '../core/errors.js';
import { joinModes, type JoinMode } from '../core/graph-schema.js';
import { joinOutcomes, type BranchOutcome, type JoinOptions } from './internal/branches.js';
import { operate } from './internal/operate.js';

export { joinOutcomes, type JoinOptions };

export function join(mode: JoinMode, options: JoinOptions = {}): OperatorFunction<BranchOutcome, unknown> {
  if (!joinModes.includes(mode)) throw new BadRequestError('join.mode', `unknown join mode ${JSON.stringify(mode)} (expected one of: ${joinModes.join(', ')})`);
  return operate<BranchOutcome, unknown>((source, subscriber) => {
    const seen: BranchOutcome[] = [];
    return source.subscribe({
      next(outcome) {
        seen.push(outcome);
        if (mode === 'first' && outcome.status === 'ok') {
          subscriber.next(outcome.value);
          subscriber.complete();
        }
      },
      error: (err) => subscriber.error(err),
      complete() {
        try {
          subscriber.next(joinOutcomes(mode, seen, options));
          subscriber.complete();
        } catch (err) {
          subscriber.error(err);
        }
      },
    });
  });
}
