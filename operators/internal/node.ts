/**
 * One node's stream, as every operator emits it: node-start, the events of its work
 * (text deltas, stage events, inner branches), then node-end with the node's output and
 * metrics. The work signals its result with a `Done` item, which is not an event: it
 * becomes the node-end. Also the metrics arithmetic of a node's model calls.
 *
 * @example
 * nodeStream({ node: 'g' }, generation(opts, request).pipe(mapDone((r) => r.text)));
 */
import { Observable, concat, defer, filter, map, of, throwError, type OperatorFunction } from 'rxjs';
import type { GenerationMetrics, GenerationUsage } from '../../core/engine.js';
import { operatorEvent, type OperatorEvent, type StageMetrics } from '../../core/events.js';

/** A work's result: the output (and metrics) the node-end will carry. */
export interface Done<T> {
  readonly done: true;
  output: T;
  metrics: StageMetrics;
}

/** Items of a node's work: its events, and its result. */
export type Step<T> = OperatorEvent | Done<T>;

export const done = <T>(output: T, metrics: StageMetrics = {}): Done<T> => ({ done: true, output, metrics });

const isDone = <T>(x: Step<T>): x is Done<T> => (x as Done<T>).done === true && !('type' in x);

/** Maps a work's result, events unchanged. */
export function mapDone<T, R>(project: (output: T, metrics: StageMetrics) => R): OperatorFunction<Step<T>, Step<R>> {
  return map((x) => (isDone(x) ? done(project(x.output, x.metrics), x.metrics) : x));
}

/** node-start, the work's events, node-end from its last result; a work without a result is an error. */
export function nodeStream<T>(scope: { node: string; branch?: string }, work: Observable<Step<T>>): Observable<OperatorEvent> {
  const { node, branch } = scope;
  return defer(() => {
    let result: Done<T> | undefined;
    return concat(
      of(operatorEvent({ type: 'node-start', node, branch })),
      work.pipe(
        filter((x): x is OperatorEvent => {
          if (!isDone(x)) return true;
          result = x;
          return false;
        }),
      ),
      defer(() =>
        result
          ? of(operatorEvent({ type: 'node-end', node, branch, output: result.output, metrics: result.metrics }))
          : throwError(() => new Error(`operator ${node} finished without a result`)),
      ),
    );
  });
}

/** Figures of a model call that add up over a node's calls (expand points, loop turns). */
const summed = ['prunedTokens', 'layersRun', 'acceptedDraftTokens', 'kvBlocksShared', 'compressedFrom', 'compressedTo'] as const;

/** A model call's figures as node metrics. */
export function callMetrics(usage: GenerationUsage, metrics: GenerationMetrics): StageMetrics {
  const out: StageMetrics = {
    tokensIn: usage.promptTokens,
    tokensOut: usage.completionTokens,
    ttftMs: metrics.ttftMs,
    tokensPerSec: metrics.decodeTokensPerSec,
  };
  for (const key of summed) if (metrics[key] !== undefined) out[key] = metrics[key];
  return out;
}

/** Metrics of two calls of one node: tokens and stage figures add up, TTFT is the first's, speed the latest's. */
export function addMetrics(a: StageMetrics, b: StageMetrics): StageMetrics {
  const out: StageMetrics = { ...a };
  for (const key of ['tokensIn', 'tokensOut', ...summed] as const) if (b[key] !== undefined) out[key] = (a[key] ?? 0) + b[key]!;
  if (b.ttftMs !== undefined) out.ttftMs = a.ttftMs ?? b.ttftMs;
  if (b.tokensPerSec !== undefined) out.tokensPerSec = b.tokensPerSec;
  return out;
}
