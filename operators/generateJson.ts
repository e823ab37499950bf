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
import { map, type OperatorFunction } from 'rxjs';
import { ModelOutputError } from '../core/errors.js';
import { perValue } from './internal/operate.js';
import { promptedGeneration, type GenerateInput, type PromptedOptions } from './internal/prompted.js';

export interface GenerateJsonOptions extends PromptedOptions {
  /** The JSON Schema the answer is decoded under and validated against. */
  schema: object | boolean;
}

// Agent frameworks emit draft-07-style schemas; unknown keywords and formats are the grammar's business.
const ajv = new Ajv({ strict: false, validateFormats: false });

export function generateJson(options: GenerateJsonOptions): OperatorFunction<GenerateInput, unknown> {
  const node = options.context?.node ?? 'generateJson';
  let validate: ValidateFunction | null = null;
  return perValue((input: GenerateInput) =>
    promptedGeneration(options, input, { schema: options.schema }).pipe(
      map((r) => {
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
    ),
  );
}
