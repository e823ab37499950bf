/**
 * `expand`: Skeleton-of-Thought stage 2. Every point of the skeleton becomes one branch
 * (`<node>#<i>`) asking the model to write only that point, its answer pre-filled with
 * "{i}. {point}"; at most `concurrency` run at once and all go to the one engine, which
 * batches them. Expansions come out in point order; a failed point is a branch-error
 * event and is left out, and only if every point fails does expand fail.
 *
 * @example
 * of('How do I learn to cook?').pipe(skeleton({ engine }), expand({ engine, concurrency: 4 })).subscribe(console.log);
 */
import { map, mergeMap, toArray, type OperatorFunction, from } from 'rxjs';
import type { SamplingParams } from '../core/sampling.js';
import type { Stages } from '../core/stages.js';
import type { Engine } from '../runtime/engine/types.js';
import { deriveSeed } from '../core/seed.js';
import { childBranch, type OperatorContext } from './context.js';
import { joinOutcomes, runBranch, type BranchOutcome } from './internal/branches.js';
import { generation } from './internal/generation.js';
import { perValue } from './internal/operate.js';
import { expandPrefix, expandPrompt, type Skeleton } from './internal/sot.js';

export interface ExpandOptions {
  engine: Engine;
  /** Points expanded at once (default 4). */
  concurrency?: number;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  context?: OperatorContext;
}

export function expand(options: ExpandOptions): OperatorFunction<Skeleton, string[]> {
  const node = options.context?.node ?? 'expand';
  return perValue((sk: Skeleton) =>
    from(sk.points.map((point, k) => ({ point, index: k + 1 }))).pipe(
      mergeMap(({ point, index }) => {
        const branch = childBranch(options.context, `${node}#${index}`);
        const prefix = expandPrefix(index, point);
        const work = generation(
          { ...options, branch, seed: options.context?.seed !== undefined ? deriveSeed(options.context.seed, `#${index}`) : undefined },
          { messages: [{ role: 'user', content: expandPrompt(sk.question, sk.outline, index) }], assistantPrefix: prefix },
        ).pipe(map((r) => (prefix + r.text).trimEnd()));
        return runBranch(work, { key: String(index), branch, index }, options.context);
      }, options.concurrency ?? 4),
      toArray(),
      map((outcomes: BranchOutcome<string>[]) => joinOutcomes('list', outcomes, { context: { ...options.context, node } }) as string[]),
    ),
  );
}
