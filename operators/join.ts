/**
 * `join`: combines branch outcomes with an explicit mode — `concat` (text, lists
 * flattened, joined by `separator`), `list` (array, lists flattened), `object` (by branch
 * key) or `first` (the first branch to succeed; the rest are unsubscribed, which cancels
 * their generations). Failed and skipped branches are left out; when none succeeded, join
 * fails with BranchesFailedError. An unknown mode throws, it never falls back. Events of
 * the branches pass through; join's own are node-start and node-end with the result.
 *
 * @example
 * source.pipe(fork({ a, b }), join('concat', { separator: '\n' }));
 */
import type { OperatorFunction } from 'rxjs';
import type { BranchOutcome } from '../core/branches.js';
import { BadRequestError } from '../core/errors.js';
import { operatorEvent, type OperatorEvent } from '../core/events.js';
import { joinModes, type JoinMode } from '../core/graph-schema.js';
import { joinOutcomes, type JoinOptions } from './internal/branches.js';
import { inputOf, operate, type Flow } from './internal/operate.js';

export { joinOutcomes, type JoinOptions };

export function join(mode: JoinMode, options: JoinOptions = {}): OperatorFunction<Flow<BranchOutcome>, OperatorEvent> {
  if (!joinModes.includes(mode)) throw new BadRequestError('join.mode', `unknown join mode ${JSON.stringify(mode)} (expected one of: ${joinModes.join(', ')})`);
  const node = options.context?.node ?? 'join';
  const branch = options.context?.branch;
  const end = (output: unknown) => operatorEvent({ type: 'node-end', node, branch, output, metrics: {} });
  return operate<Flow<BranchOutcome>, OperatorEvent>((source, subscriber) => {
    const seen: BranchOutcome[] = [];
    subscriber.next(operatorEvent({ type: 'node-start', node, branch }));
    return source.subscribe({
      next(item) {
        const input = inputOf(item, branch);
        if (!input) return subscriber.next(item as OperatorEvent);
        const outcome = input.value;
        seen.push(outcome);
        if (mode === 'first' && outcome.status === 'ok') {
          subscriber.next(end(outcome.value));
          subscriber.complete();
        }
      },
      error: (err) => subscriber.error(err),
      complete() {
        try {
          subscriber.next(end(joinOutcomes(mode, seen, options)));
          subscriber.complete();
        } catch (err) {
          subscriber.error(err);
        }
      },
    });
  });
}
