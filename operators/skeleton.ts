/**
 * `skeleton`: Skeleton-of-Thought stage 1. Asks the model for a numbered outline of the
 * question (the SoT organizer prompt, answer pre-filled with "1.") and parses it into
 * points — without a last point the token limit cut short (uncutOutline); an answer
 * without any point is a ModelOutputError.
 *
 * @example
 * of('How do I learn to cook?').pipe(skeleton({ engine })).subscribe((s) => console.log(s.points));
 */
import type { OperatorFunction } from 'rxjs';
import { ModelOutputError } from '../core/errors.js';
import type { SamplingParams } from '../core/sampling.js';
import type { Stages } from '../core/stages.js';
import type { Engine } from '../core/engine.js';
import type { OperatorEvent } from '../core/events.js';
import type { OperatorContext } from './context.js';
import { generation } from './internal/generation.js';
import { mapDone, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';
import { outlineOf, parseOutline, skeletonPrefix, skeletonPrompt, uncutOutline, type Skeleton } from './internal/sot.js';

export type { Skeleton } from './internal/sot.js';

export interface SkeletonOptions {
  engine: Engine;
  /** Points kept (default 10, the top of SoT's 3~10). */
  maxPoints?: number;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  context?: OperatorContext;
}

/** Streams the call like `generate`; its node-end's output is the parsed Skeleton. */
export function skeleton(options: SkeletonOptions): OperatorFunction<Flow<string>, OperatorEvent> {
  const scope = { node: options.context?.node ?? 'skeleton', branch: options.context?.branch };
  return perValue((question: string) => {
    const work = generation({ ...options, node: scope.node }, {
      messages: [{ role: 'user', content: skeletonPrompt(question) }],
      assistantPrefix: skeletonPrefix,
    }).pipe(
      mapDone((r): Skeleton => {
        const points = parseOutline(uncutOutline(skeletonPrefix + r.text, r.reason), options.maxPoints ?? 10);
        if (!points.length) throw new ModelOutputError(scope.node, `no numbered points in ${JSON.stringify(r.text.slice(0, 80))}`);
        return { question, outline: outlineOf(points), points };
      }),
    );
    return nodeStream(scope, work);
  }, scope.branch);
}
