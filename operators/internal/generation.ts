/**
 * One model call on behalf of an operator (generate, skeleton, expand, route): refuses
 * stages the engine does not run, applies the seed, forwards tokens as delta events (the
 * assistant prefix first, so the streamed text reads like the operator's result, which
 * starts with it) and resolves to the whole answer. Unsubscribing unsubscribes the engine's generation, which
 * cancels it and frees its KV.
 */
import { Observable, throwError } from 'rxjs';
import { NotAvailableError } from '../../core/errors.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { Stages } from '../../core/stages.js';
import type { Engine, FinishReason, GenerateRequest, GenerationMetrics, GenerationUsage, StageOptions } from '../../runtime/engine/types.js';
import type { OperatorContext } from '../context.js';

export interface GenerationResult {
  text: string;
  ids: number[];
  reason: FinishReason;
  usage: GenerationUsage;
  metrics: GenerationMetrics;
}

export interface GenerationOptions {
  engine: Engine;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  context?: OperatorContext;
  /** Branch of this call's deltas (defaults to the context's). */
  branch?: string;
  /** Seed used when neither sampling nor the context pins one. */
  seed?: number;
}

export function checkStages(engine: Engine, stages: Stages | undefined): NotAvailableError | undefined {
  for (const [name, value] of Object.entries(stages ?? {})) {
    if (value === undefined) continue;
    if (!engine.supportedStages?.includes(name as keyof StageOptions))
      return new NotAvailableError(`stage '${name}'`, `engine ${engine.modelName} does not run it`);
  }
  return undefined;
}

export function generation(
  opts: GenerationOptions,
  request: Omit<GenerateRequest, 'sampling' | 'stages' | 'owner'>,
): Observable<GenerationResult> {
  const { engine, context } = opts;
  const refused =
    checkStages(engine, opts.stages) ??
    (request.output !== undefined && !engine.supportsOutput
      ? new NotAvailableError('structured output', `engine ${engine.modelName} does not constrain its output`)
      : undefined);
  if (refused) return throwError(() => refused);
  const seed = opts.sampling?.seed ?? opts.seed ?? context?.seed;
  const full: GenerateRequest = {
    ...request,
    sampling: { ...opts.sampling, ...(seed !== undefined ? { seed } : {}) },
    ...(opts.stages && Object.keys(opts.stages).length ? { stages: opts.stages as StageOptions } : {}),
    ...(context?.owner ? { owner: context.owner } : {}),
  };
  const branch = opts.branch ?? context?.branch;
  return new Observable<GenerationResult>((subscriber) => {
    const parts: string[] = [];
    const ids: number[] = [];
    if (request.assistantPrefix) context?.onEvent?.({ type: 'delta', branch, text: request.assistantPrefix, tokenIds: [] });
    return engine.generate(full).subscribe({
      next(event) {
        if (event.type === 'token') {
          parts.push(event.text);
          ids.push(event.id);
          context?.onEvent?.({ type: 'delta', branch, text: event.text, tokenIds: [event.id] });
        } else {
          context?.onEvent?.({ type: 'usage', branch, usage: event.usage, metrics: event.metrics });
          subscriber.next({ text: event.text, ids: event.ids, reason: event.reason, usage: event.usage, metrics: event.metrics });
        }
      },
      error: (err) => subscriber.error(err),
      complete: () => subscriber.complete(),
    });
  });
}
