/**
 * `generate`: one model call on the shared engine per input prompt. Chat by default (the
 * system prompt and the input as the user turn, rendered with the model's template);
 * `chat: false` sends the raw text. Its Observable streams the call: node-start, a
 * text-delta per token, the events of the stages the engine ran, and node-end with the
 * whole answer and the call's metrics. Stages come from the options and from stage
 * operators placed before it (operators/stages.ts), in that order; the engine runs them
 * or the call fails with a typed error. Unsubscribing cancels the generation.
 *
 * @example
 * of('Name a colour.').pipe(generate({ engine, sampling: { maxTokens: 8 } })).subscribe((e) => {
 *   if (e.type === 'text-delta') process.stdout.write(e.text);
 * });
 */
import type { OperatorFunction } from 'rxjs';
import type { ChatMessage, Engine } from '../core/engine.js';
import type { OperatorEvent } from '../core/events.js';
import type { SamplingParams } from '../core/sampling.js';
import type { Stages } from '../core/stages.js';
import type { OperatorContext } from './context.js';
import { generation } from './internal/generation.js';
import { mapDone, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';

export interface GenerateOptions {
  engine: Engine;
  system?: string;
  /** Render with the chat template (default true). */
  chat?: boolean;
  /** Text the assistant turn starts with; it is part of the output. */
  assistantPrefix?: string;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  context?: OperatorContext;
}

/** A prompt, or a request that stage operators have added their stages to. */
export type GenerateInput = string | GenerationRequest;

export interface GenerationRequest {
  prompt: string;
  system?: string;
  /** Stages asked for by stage operators earlier in the pipeline, in pipeline order. */
  stages?: Stages;
}

export function generate(options: GenerateOptions): OperatorFunction<Flow<GenerateInput>, OperatorEvent> {
  const scope = { node: options.context?.node ?? 'generate', branch: options.context?.branch };
  return perValue((input: GenerateInput) => {
    const request = typeof input === 'string' ? { prompt: input } : input;
    const system = request.system ?? options.system;
    const stages = request.stages || options.stages ? { ...request.stages, ...options.stages } : undefined;
    const prefix = options.assistantPrefix ?? '';
    const call = { ...options, node: scope.node, stages };
    const work =
      options.chat === false
        ? generation(call, { prompt: (system ? `${system}\n\n` : '') + request.prompt + prefix })
        : generation(call, {
            messages: [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: request.prompt }] as ChatMessage[],
            ...(prefix ? { assistantPrefix: prefix } : {}),
          });
    return nodeStream(scope, work.pipe(mapDone((r) => prefix + r.text)));
  }, scope.branch);
}
