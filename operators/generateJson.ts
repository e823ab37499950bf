/**
 * `generateJson`: a model call whose answer is held to a JSON Schema by constrained
 * decoding, then parsed and validated (ajv) — the value downstream is JSON, not text.
 * An answer cut off by maxTokens, or (never expected) one that fails validation, is a
 * ModelOutputError naming the node. The assistant prefix steers the model and is not
 * part of the value.
 *
 * @example
 * of('Invent a city.').pipe(generateJson({ engine, schema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } }));
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { OperatorFunction } from 'rxjs';
import { ModelOutputError } from '../core/errors.js';
import type { OperatorEvent } from '../core/events.js';
import { mapDone, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';
import { promptedGeneration, type GenerateInput, type PromptedOptions } from './internal/prompted.js';

export interface GenerateJsonOptions extends PromptedOptions {
  /** The JSON Schema the answer is decoded under and validated against. */
  schema: object | boolean;
}

// Agent frameworks emit draft-07-style schemas; unknown keywords and formats are the grammar's business.
const ajv = new Ajv({ strict: false, validateFormats: false });

export function generateJson(options: GenerateJsonOptions): OperatorFunction<Flow<GenerateInput>, OperatorEvent> {
  const scope = { node: options.context?.node ?? 'generateJson', branch: options.context?.branch };
  const node = scope.node;
  let validate: ValidateFunction | null = null;
  return perValue((input: GenerateInput) =>
    nodeStream(scope, promptedGeneration(options, node, input, { schema: options.schema }).pipe(
      mapDone((r) => {
        if (r.reason === 'length') {
          throw new ModelOutputError(node, `the JSON answer was cut off after ${r.usage.completionTokens} tokens; raise sampling.maxTokens`);
        }
        let value: unknown;
        try {
          value = JSON.parse(r.text);
        } catch (err) {
          throw new ModelOutputError(node, `the answer is not JSON: ${(err as Error).message}`);
        }
        validate ??= ajv.compile(options.schema);
        if (!validate(value)) throw new ModelOutputError(node, `the answer does not fit its schema: ${ajv.errorsText(validate.errors)}`);
        return value;
      }),
    )),
    scope.branch,
  );
}
