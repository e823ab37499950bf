/**
 * Output constraints, defined once: a generation may be held to a JSON Schema, a regular
 * expression or a choice among strings. The runtime compiles the constraint to a token
 * mask (runtime/grammar), so the model can only produce text that satisfies it; graphs
 * (generate, route) and the HTTP APIs take this same object.
 *
 * @example
 * const output: OutputConstraint = { schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } };
 */
import type { FromSchema } from './from-schema.js';

export const outputSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  maxProperties: 1,
  description: 'Constrains the generated text: exactly one of schema, regex or choices.',
  properties: {
    schema: {
      type: ['object', 'boolean'],
      description: 'A JSON Schema the output must be valid JSON for (objects, arrays, enum, const, strings with pattern/length, numbers with bounds, anyOf, local $ref).',
    },
    regex: { type: 'string', minLength: 1, description: 'An ECMAScript regular expression the whole output must match.' },
    choices: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      minItems: 1,
      maxItems: 1024,
      description: 'The output is exactly one of these strings.',
    },
  },
} as const;

export type OutputConstraint = FromSchema<typeof outputSchema>;

/** Whether the constrained output is JSON (a schema), which nodes then parse. */
export const isJsonOutput = (c: OutputConstraint | undefined): boolean => c?.schema !== undefined;
