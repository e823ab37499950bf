/**
 * `route`: picks one branch for each value, by testing the value itself (`by: 'value'`)
 * or a model's answer about it (`by: 'model'`, e.g. the SoT router's A/B/C) against each
 * branch's declarative condition in order; `default` catches the rest. Emits the chosen
 * branch with the value unchanged, as its node-end's output.
 *
 * The model's answer is a choice constraint: it can only say one of `answers` (A, B or C
 * for the default SoT router prompt), so a small model cannot answer off-format. Given
 * answers are required of the engine; the router's default ones are used when the engine
 * constrains output and otherwise left to the free-text conditions.
 *
 * @example
 * of('How to learn chess?').pipe(route({ by: 'model', engine, branches: [{ name: 'sot', when: { startsWith: 'A' } }], default: 'direct' }));
 */
import { defer, of, type OperatorFunction } from 'rxjs';
import { matchCondition } from '../core/conditions.js';
import { ModelOutputError } from '../core/errors.js';
import type { Condition } from '../core/graph-schema.js';
import type { SamplingParams } from '../core/sampling.js';
import type { Engine } from '../core/engine.js';
import type { OperatorEvent } from '../core/events.js';
import type { OperatorContext } from './context.js';
import { generation } from './internal/generation.js';
import { done, mapDone, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';
import { sotRouterAnswers, sotRouterPrompt } from './internal/sot.js';
import { renderTemplate } from './template.js';

export interface Routed<T> {
  branch: string;
  value: T;
  /** The model's answer, when routed by model. */
  answer?: string;
}

export interface RouteOptions {
  branches: { name: string; when: Condition }[];
  default?: string;
  by?: 'value' | 'model';
  /** by: model — the question to the model; `{{in}}` is the value (default: the SoT router). */
  prompt?: string;
  /** by: model — the only answers the model may give (default A, B, C with the SoT router prompt). */
  answers?: string[];
  engine?: Engine;
  sampling?: Partial<SamplingParams>;
  context?: OperatorContext;
}

export { sotRouterPrompt };

export function route<T>(options: RouteOptions): OperatorFunction<Flow<T>, OperatorEvent> {
  const node = options.context?.node ?? 'route';
  const scope = { node, branch: options.context?.branch };
  const pick = (value: T, subject: unknown, answer?: string): Routed<T> => {
    const hit = options.branches.find((b) => matchCondition(b.when, subject));
    const branch = hit?.name ?? options.default;
    if (branch === undefined)
      throw new ModelOutputError(node, `no branch matches ${JSON.stringify(String(answer ?? subject).slice(0, 80))} and there is no default`);
    return answer === undefined ? { branch, value } : { branch, value, answer };
  };
  return perValue((value: T) => {
    if (options.by !== 'model') return nodeStream(scope, defer(() => of(done(pick(value, value)))));
    if (!options.engine) throw new ModelOutputError(node, 'routing by model needs an engine');
    const question = renderTemplate(options.prompt ?? sotRouterPrompt, { in: value });
    const answers = options.answers ?? (options.prompt === undefined && options.engine.supportsOutput ? sotRouterAnswers : undefined);
    const work = generation(
      { engine: options.engine, node, sampling: { maxTokens: 8, ...options.sampling }, context: options.context },
      { messages: [{ role: 'user', content: question }], ...(answers ? { output: { choices: answers } } : {}) },
    ).pipe(mapDone((r) => pick(value, r.text.trim(), r.text.trim())));
    return nodeStream(scope, work);
  }, scope.branch);
}
