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
  description: 'Constrains the generated text: exactly one of schema, regex or choices.',
  anyOf: [{ required: ['schema'] }, { required: ['regex'] }, { required: ['choices'] }],
  not: { anyOf: [{ required: ['schema', 'regex'] }, { required: ['schema', 'choices'] }, { required: ['regex', 'choices'] }] },
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
    orText: {
      type: 'boolean',
      description:
        'With schema: the output may instead be free text that does not start with `{` (how tool_choice "auto" lets the model either answer or call a tool).',
    },
  },
} as const;

export type OutputConstraint = FromSchema<typeof outputSchema>;

/** Whether the constrained output is JSON (a schema), which nodes then parse. */
export const isJsonOutput = (c: OutputConstraint | undefined): boolean => c?.schema !== undefined;
