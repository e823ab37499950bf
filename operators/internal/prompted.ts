/**
 * The model call behind `generate` and `generateJson`: chat by default (the system prompt
 * and the input as the user turn, rendered with the model's template), or the raw text
 * with `chat: false`; the assistant prefix goes before the generated text. Stages come
 * from the options and from stage operators placed before the call (the input request's
 * `stages`), in that order.
 */
import type { Observable } from 'rxjs';
import type { ChatMessage, Engine } from '../../core/engine.js';
import type { OutputConstraint } from '../../core/output.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { Stages } from '../../core/stages.js';
import type { OperatorContext } from '../context.js';
import { generation, type GenerationResult } from './generation.js';
import type { Step } from './node.js';

export interface PromptedOptions {
  engine: Engine;
  system?: string;
  /** Render with the chat template (default true). */
  chat?: boolean;
  /** Text the assistant turn starts with. */
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

/** The prompt part of the engine request `generate` sends for an input, and its system prompt. */
export function promptOf(options: Pick<PromptedOptions, 'system' | 'chat' | 'assistantPrefix'>, input: GenerateInput): { prompt: string } | { messages: ChatMessage[]; assistantPrefix?: string } {
  const request = typeof input === 'string' ? { prompt: input } : input;
  const system = request.system ?? options.system;
  const prefix = options.assistantPrefix ?? '';
  if (options.chat === false) return { prompt: (system ? `${system}\n\n` : '') + request.prompt + prefix };
  const messages: ChatMessage[] = [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: request.prompt }];
  return { messages, ...(prefix ? { assistantPrefix: prefix } : {}) };
}

export function promptedGeneration(
  options: PromptedOptions,
  node: string,
  input: GenerateInput,
  output?: OutputConstraint,
): Observable<Step<GenerationResult>> {
  const request = typeof input === 'string' ? { prompt: input } : input;
  const stages = request.stages || options.stages ? { ...request.stages, ...options.stages } : undefined;
  const call = { ...options, node, stages };
  const constrained = output !== undefined ? { output } : {};
  return generation(call, { ...promptOf(options, input), ...constrained });
}
