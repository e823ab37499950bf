/**
 * One model call on behalf of an operator (generate, skeleton, expand, route): applies
 * the seed, passes the stages to the engine (which refuses one its model cannot run with
 * StageUnavailableError, failing the node), and streams the call as operator
 * events — each token as a text-delta, each stage the engine ran as a stage event — then
 * its result. Unsubscribing unsubscribes the engine's generation, which cancels it and
 * frees its KV.
 */
import { Observable, throwError } from 'rxjs';
import { NotAvailableError } from '../../core/errors.js';
import { UNKNOWN_TOKEN_ID, type Engine, type FinishReason, type GenerateRequest, type GenerationMetrics, type GenerationUsage } from '../../core/engine.js';
import { operatorEvent } from '../../core/events.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { Stages } from '../../core/stages.js';
import type { OperatorContext } from '../context.js';
import { callMetrics, done, type Step } from './node.js';

export interface GenerationResult {
  text: string;
  ids: number[];
  reason: FinishReason;
  usage: GenerationUsage;
  metrics: GenerationMetrics;
}

export interface GenerationOptions {
  engine: Engine;
  /** The node the call's events belong to. */
  node: string;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  context?: OperatorContext;
  /** Branch of this call's events (defaults to the context's). */
  branch?: string;
  /** Seed used when neither sampling nor the context pins one. */
  seed?: number;
}

export function generation(
  opts: GenerationOptions,
  request: Omit<GenerateRequest, 'sampling' | 'stages' | 'owner'>,
): Observable<Step<GenerationResult>> {
  const { engine, context, node } = opts;
  if (request.output !== undefined && !engine.supportsOutput)
    return throwError(() => new NotAvailableError('structured output', `engine ${engine.modelName} does not constrain its output`));
  const seed = opts.sampling?.seed ?? opts.seed ?? context?.seed;
  const full: GenerateRequest = {
    ...request,
    sampling: { ...opts.sampling, ...(seed !== undefined ? { seed } : {}) },
    ...(opts.stages && Object.keys(opts.stages).length ? { stages: opts.stages } : {}),
    ...(context?.owner ? { owner: context.owner } : {}),
    node,
  };
  const branch = opts.branch ?? context?.branch;
  return new Observable<Step<GenerationResult>>((subscriber) => {
    if (request.assistantPrefix) subscriber.next(operatorEvent({ type: 'text-delta', node, branch, text: request.assistantPrefix, tokenIds: [] }));
    return engine.generate(full).subscribe({
      next(event) {
        switch (event.type) {
          case 'token':
            return subscriber.next(
              operatorEvent({ type: 'text-delta', node, branch, text: event.text, tokenIds: event.id === UNKNOWN_TOKEN_ID ? [] : [event.id] }),
            );
          case 'stage':
            return subscriber.next(operatorEvent({ type: 'stage', node, branch, stage: event.stage, decided: event.decided, figures: event.figures }));
          case 'done': {
            const result = { text: event.text, ids: event.ids, reason: event.reason, usage: event.usage, metrics: event.metrics };
            return subscriber.next(done(result, callMetrics(event.usage, event.metrics)));
          }
          default: {
            const never: never = event;
            return never;
          }
        }
      },
      error: (err) => subscriber.error(err),
      complete: () => subscriber.complete(),
    });
  });
}
