/**
 * `generate`: one model call on the shared engine per input prompt. Chat by default (the
 * system prompt and the input as the user turn, rendered with the model's template);
 * `chat: false` sends the raw text. Stages are passed to the engine when it runs them,
 * and refused with NotAvailableError otherwise. `output` holds the text to a regex or a
 * choice of strings by constrained decoding (for a JSON Schema, see generateJson).
 * Unsubscribing cancels the generation.
 *
 * @example
 * of('Name a colour.').pipe(generate({ engine, sampling: { maxTokens: 8 } })).subscribe(console.log);
 */
import { map, type OperatorFunction } from 'rxjs';
import type { OutputConstraint } from '../core/output.js';
import { perValue } from './internal/operate.js';
import { promptedGeneration, type GenerateInput, type PromptedOptions } from './internal/prompted.js';

export type { GenerateInput } from './internal/prompted.js';

export interface GenerateOptions extends PromptedOptions {
  /** Constrained text: a regex the whole answer matches, or the answers allowed. */
  output?: Pick<OutputConstraint, 'regex' | 'choices'>;
}

export function generate(options: GenerateOptions): OperatorFunction<GenerateInput, string> {
  const prefix = options.assistantPrefix ?? '';
  return perValue((input: GenerateInput) => promptedGeneration(options, input, options.output).pipe(map((r) => prefix + r.text)));
}
