/**
 * `expand`: Skeleton-of-Thought stage 2. Every point of the skeleton becomes one branch
 * (`<node>#<i>`) asking the model to write only that point, its answer pre-filled with
 * "{i}. {point}"; at most `concurrency` run at once and all go to the one engine, which
 * batches them; with `shareKv` their common prompt prefix is prefilled once first, so every
 * point adopts its KV blocks (a kvShare stage event on expand). Each branch streams its own events (node-start, deltas, node-end) under
 * its branch id; a failed point is a branch-error event and is left out, and only if
 * every point fails does expand fail. Its node-end carries the expansions in point order
 * and the metrics of all its calls.
 *
 * @example
 * of('How do I learn to cook?').pipe(skeleton({ engine }), expand({ engine, concurrency: 4 })).subscribe(console.log);
 */
import { EMPTY, concat, defer, filter, from, mergeMap, of, type OperatorFunction } from 'rxjs';
import type { BranchOutcome } from '../core/branches.js';
import type { Engine } from '../core/engine.js';
import { isOperatorEvent, type OperatorEvent, type StageMetrics } from '../core/events.js';
import type { SamplingParams } from '../core/sampling.js';
import { deriveSeed } from '../core/seed.js';
import type { Stages } from '../core/stages.js';
import { childBranch, type OperatorContext } from './context.js';
import { joinOutcomes, runBranch } from './internal/branches.js';
import { generation } from './internal/generation.js';
import { addMetrics, done, mapDone, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';
import { prefillSharedPrefix } from './internal/shared-prefix.js';
import { expandPrefix, expandPrompt, type Skeleton } from './internal/sot.js';

export interface ExpandOptions {
  engine: Engine;
  /** Points expanded at once (default 4). */
  concurrency?: number;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  /** Prefill the points' common prompt prefix once before they fan out (operators/shareKv.ts). */
  shareKv?: boolean;
  context?: OperatorContext;
}

export function expand(options: ExpandOptions): OperatorFunction<Flow<Skeleton>, OperatorEvent> {
  const node = options.context?.node ?? 'expand';
  const scope = { node, branch: options.context?.branch };
  const request = (sk: Skeleton, text: string, index: number) => ({
    messages: [{ role: 'user' as const, content: expandPrompt(sk.question, sk.outline, index) }],
    assistantPrefix: expandPrefix(index, text),
  });
  const point = (sk: Skeleton, text: string, index: number) => {
    const branch = childBranch(options.context, `${node}#${index}`);
    const prefix = expandPrefix(index, text);
    const seed = options.context?.seed !== undefined ? deriveSeed(options.context.seed, `#${index}`) : undefined;
    const work = generation({ ...options, node, branch, seed }, request(sk, text, index)).pipe(mapDone((r) => (prefix + r.text).trimEnd()));
    return runBranch(nodeStream({ node, branch }, work), { key: String(index), branch, index }, node);
  };
  return perValue(
    (sk: Skeleton) =>
      nodeStream(
        scope,
        defer(() => {
          const outcomes: BranchOutcome[] = [];
          let metrics: StageMetrics = {};
          const branches$ = from(sk.points).pipe(
            mergeMap((text, k) => point(sk, text, k + 1), options.concurrency ?? 4),
            filter((item): item is OperatorEvent => {
              if (!isOperatorEvent(item)) outcomes.push(item);
              else if (item.type === 'node-end') metrics = addMetrics(metrics, item.metrics);
              return isOperatorEvent(item);
            }),
          );
          const shared = options.shareKv
            ? prefillSharedPrefix(
                options.engine,
                sk.points.map((text, k) => {
                  const r = request(sk, text, k + 1);
                  return options.engine.renderChat(r.messages, r.assistantPrefix);
                }),
                { ...scope, ...(options.context?.owner !== undefined ? { owner: options.context.owner } : {}) },
              )
            : EMPTY;
          return concat(
            shared,
            branches$,
            defer(() => of(done(joinOutcomes('list', outcomes, { context: { ...options.context, node } }) as string[], metrics))),
          );
        }),
      ),
    scope.branch,
  );
}
