/**
 * `generate`: one model call on the shared engine per input prompt. Chat by default (the
 * system prompt and the input as the user turn, rendered with the model's template);
 * `chat: false` sends the raw text. Stages are passed to the engine when it runs them,
 * and refused with NotAvailableError otherwise. Unsubscribing cancels the generation.
 *
 * @example
 * of('Name a colour.').pipe(generate({ engine, sampling: { maxTokens: 8 } })).subscribe(console.log);
 */
import { map, type OperatorFunction } from 'rxjs';
import type { SamplingParams } from '../core/sampling.js';
import type { Stages } from '../core/stages.js';
import type { ChatMessage, Engine } from '../runtime/engine/types.js';
import type { OperatorContext } from './context.js';
import { generation } from './internal/generation.js';
import { perValue } from './internal/operate.js';

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

export type GenerateInput = string | { prompt: string; system?: string };

export function generate(options: GenerateOptions): OperatorFunction<GenerateInput, string> {
  return perValue((input: GenerateInput) => {
    const prompt = typeof input === 'string' ? input : input.prompt;
    const system = (typeof input === 'string' ? undefined : input.system) ?? options.system;
    const prefix = options.assistantPrefix ?? '';
    if (options.chat === false) {
      const text = (system ? `${system}\n\n` : '') + prompt + prefix;
      return generation(options, { prompt: text }).pipe(map((r) => prefix + r.text));
    }
    const messages: ChatMessage[] = [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: prompt }];
    return generation(options, { messages, ...(prefix ? { assistantPrefix: prefix } : {}) }).pipe(map((r) => prefix + r.text));
  });
}
