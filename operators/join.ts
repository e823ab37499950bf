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
import { BadRequestError, BranchesFailedError } from '../core/errors.js';
import { joinModes, type JoinMode } from '../core/graph-schema.js';
import type { OperatorContext } from './context.js';
import type { BranchOutcome } from './internal/branches.js';
import { operate } from './internal/operate.js';
import { renderValue } from './template.js';

export interface JoinOptions {
  /** concat only (default a blank line). */
  separator?: string;
  context?: OperatorContext;
}

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
