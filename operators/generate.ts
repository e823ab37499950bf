/**
 * `generate`: one model call on the shared engine per input prompt. Chat by default (the
 * system prompt and the input as the user turn, rendered with the model's template);
 * `chat: false` sends the raw text. Its Observable streams the call: node-start, a
 * text-delta per token, the events of the stages the engine ran, and node-end with the
 * whole answer and the call's metrics. Stages come from the options and from stage
 * operators placed before it (operators/stages.ts), in that order; the engine runs them
 * or the call fails with a typed error. `output` holds the text to a regex or a choice of
 * strings by constrained decoding (for a JSON Schema, see generateJson). Unsubscribing
 * cancels the generation.
 *
 * @example
 * of('Name a colour.').pipe(generate({ engine, sampling: { maxTokens: 8 } })).subscribe((e) => {
 *   if (e.type === 'text-delta') process.stdout.write(e.text);
 * });
 */
import type { OperatorFunction } from 'rxjs';
import type { OperatorEvent } from '../core/events.js';
import type { OutputConstraint } from '../core/output.js';
import { mapDone, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';
import { promptedGeneration, type GenerateInput, type PromptedOptions } from './internal/prompted.js';

export type { GenerateInput, GenerationRequest } from './internal/prompted.js';

export interface GenerateOptions extends PromptedOptions {
  /** Constrained text: a regex the whole answer matches, or the answers allowed. */
  output?: Pick<OutputConstraint, 'regex' | 'choices'>;
}

export function generate(options: GenerateOptions): OperatorFunction<Flow<GenerateInput>, OperatorEvent> {
  const scope = { node: options.context?.node ?? 'generate', branch: options.context?.branch };
  const prefix = options.assistantPrefix ?? '';
  return perValue(
    (input: GenerateInput) => nodeStream(scope, promptedGeneration(options, scope.node, input, options.output).pipe(mapDone((r) => prefix + r.text))),
    scope.branch,
  );
}
