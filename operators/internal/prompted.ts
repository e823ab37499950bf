/**
 * The model call behind `generate` and `generateJson`: chat by default (the system prompt
 * and the input as the user turn, rendered with the model's template), or the raw text
 * with `chat: false`; the assistant prefix goes before the generated text.
 */
import type { Observable } from 'rxjs';
import type { OutputConstraint } from '../../core/output.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { Stages } from '../../core/stages.js';
import type { ChatMessage, Engine } from '../../runtime/engine/types.js';
import type { OperatorContext } from '../context.js';
import { generation, type GenerationResult } from './generation.js';

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

export type GenerateInput = string | { prompt: string; system?: string };

export function promptedGeneration(options: PromptedOptions, input: GenerateInput, output?: OutputConstraint): Observable<GenerationResult> {
  const prompt = typeof input === 'string' ? input : input.prompt;
  const system = (typeof input === 'string' ? undefined : input.system) ?? options.system;
  const prefix = options.assistantPrefix ?? '';
  const constrained = output !== undefined ? { output } : {};
  if (options.chat === false) {
    const text = (system ? `${system}\n\n` : '') + prompt + prefix;
    return generation(options, { prompt: text, ...constrained });
  }
  const messages: ChatMessage[] = [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: prompt }];
  return generation(options, { messages, ...(prefix ? { assistantPrefix: prefix } : {}), ...constrained });
}
