/**
 * `shareKv`: KV sharing as a fork over a shared prefix (sglang's fork commits the prefix
 * before the branches run). Placed before the `generate` its branches go through, it
 * gathers the branch inputs, renders each as that generate will (same system prompt,
 * chat template and assistant prefix), and prefills their longest common text once in the
 * engine before handing the branches on. The engine keeps that prefix's full KV blocks in
 * its prefix cache, so every branch adopts them instead of computing them (or waiting
 * behind the first branch to compute them): all branches start decoding together, and
 * each branch's own `kvShare` stage event says how many blocks it adopted. shareKv emits
 * its own `kvShare` event: how many branches and how much prefix it decided to share,
 * and what the shared prefill cost (tokens computed once, wall time). Outputs are the
 * same as without it: the forward is bit-exact per row however the KV was made
 * (runtime/model/forward-exact.test.ts). Fewer than two inputs, or no common text, and it
 * passes them on untouched; unsubscribing cancels the prefill.
 *
 * @example
 * from(['Summarise the report for a chef.', 'Summarise the report for a pilot.']).pipe(
 *   shareKv({ engine, system: REPORT }),
 *   mergeMap((prompt) => of(prompt).pipe(generate({ engine, system: REPORT }))),
 * );
 */
import { Subscription, type OperatorFunction } from 'rxjs';
import type { Engine } from '../core/engine.js';
import type { OperatorContext } from './context.js';
import { inputOf, operate, type Flow } from './internal/operate.js';
import { promptOf, type GenerateInput, type PromptedOptions } from './internal/prompted.js';
import { prefillSharedPrefix } from './internal/shared-prefix.js';

export interface ShareKvOptions extends Pick<PromptedOptions, 'system' | 'chat' | 'assistantPrefix'> {
  engine: Engine;
  context?: OperatorContext;
}

export function shareKv(options: ShareKvOptions): OperatorFunction<Flow<GenerateInput>, Flow<GenerateInput>> {
  const node = options.context?.node ?? 'shareKv';
  const branch = options.context?.branch;
  return operate<Flow<GenerateInput>, Flow<GenerateInput>>((source, subscriber) => {
    const held: GenerateInput[] = [];
    const prefill = new Subscription();
    const release = () => {
      for (const input of held) subscriber.next(input);
      subscriber.complete();
    };
    const sub = source.subscribe({
      next: (item) => {
        const input = inputOf(item, branch);
        if (input) held.push(input.value);
        else subscriber.next(item);
      },
      error: (err) => subscriber.error(err),
      complete: () => {
        const prompts = held.length < 2 ? [] : held.map((input) => renderedPrompt(options, input));
        prefill.add(
          prefillSharedPrefix(options.engine, prompts, { node, branch, ...(options.context?.owner !== undefined ? { owner: options.context.owner } : {}) }).subscribe({
            next: (event) => subscriber.next(event),
            error: (err) => subscriber.error(err),
            complete: release,
          }),
        );
      },
    });
    return () => {
      sub.unsubscribe();
      prefill.unsubscribe();
    };
  });
}

/** The text the engine will tokenize for `input`: what generate sends, rendered. */
function renderedPrompt(options: ShareKvOptions, input: GenerateInput): string {
  const prompt = promptOf(options, input);
  return 'prompt' in prompt ? prompt.prompt : options.engine.renderChat(prompt.messages, prompt.assistantPrefix);
}
