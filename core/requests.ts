/**
 * The HTTP request bodies, defined once as JSON Schema and checked by ajv like graphs
 * are, with the same pointer-style errors (`/seed: must be integer`). Sampling fields
 * reuse core/sampling.ts's schema, so a limit (the temperature cap) is written once for
 * graphs, runs and chat completions alike.
 *
 * @example
 * const body = checkRequest(runRequestSchema, await c.req.json()); // throws BadRequestError at a pointer
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { BadRequestError } from './errors.js';
import type { FromSchema } from './from-schema.js';
import { samplingSchema } from './sampling.js';
import { schemaProblem } from './validate.js';

const s = samplingSchema.properties;

/** POST /v1/runs. The graph itself is checked against the graph schema afterwards. */
export const runRequestSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    graph: { type: 'object', description: 'A graph document.' },
    graphName: { type: 'string', minLength: 1, description: 'The name of an example graph (GET /v1/graphs).' },
    input: { type: 'object', description: 'Values of the graph\'s input nodes, by name.' },
    model: { type: 'string', description: 'Must name the served model.' },
    seed: { type: 'integer', description: 'Run seed; per-node seeds derive from it.' },
  },
} as const;

export type RunRequest = FromSchema<typeof runRequestSchema>;

const roles = ['system', 'user', 'assistant', 'tool', 'developer'] as const;

/** POST /v1/chat/completions: the OpenAI fields Skein serves; others are ignored, as OpenAI clients send many. */
export const chatRequestSchema = {
  type: 'object',
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        properties: {
          role: { enum: roles },
          content: {
            oneOf: [
              { type: 'string' },
              { type: 'array', items: { type: 'object', properties: { type: { const: 'text' }, text: { type: 'string' } }, required: ['type', 'text'] } },
            ],
          },
        },
        required: ['role'],
      },
    },
    max_tokens: s.maxTokens,
    max_completion_tokens: s.maxTokens,
    temperature: s.temperature,
    top_p: s.topP,
    seed: s.seed,
    stop: { oneOf: [{ type: 'string', minLength: 1 }, s.stop] },
    n: { const: 1, description: 'Only one choice is served.' },
    stream: { type: 'boolean' },
    stream_options: { type: 'object', properties: { include_usage: { type: 'boolean' } } },
  },
  required: ['messages'],
} as const;

export type ChatRequest = FromSchema<typeof chatRequestSchema>;

const ajv = new Ajv2020({ allErrors: true, strict: false });
const compiled = new WeakMap<object, ValidateFunction>();

/**
 * Checks a request body against its schema and returns it typed; otherwise throws a
 * BadRequestError at the first problem's JSON pointer, listing every problem. `null`
 * fields count as absent (OpenAI clients send them for defaults).
 */
export function checkRequest<S extends object>(schema: S, body: unknown): FromSchema<S> {
  let validate = compiled.get(schema);
  if (!validate) compiled.set(schema, (validate = ajv.compile(schema)));
  const doc = body !== null && typeof body === 'object' && !Array.isArray(body) ? Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null)) : body;
  if (validate(doc)) return doc as FromSchema<S>;
  const problems = (validate.errors ?? []).filter((e) => e.keyword !== 'oneOf' || !validate.errors!.some((o) => o !== e && o.instancePath.startsWith(e.instancePath))).map((e) => schemaProblem(e, doc));
  const first = problems[0] ?? { pointer: '', message: 'invalid' };
  throw new BadRequestError(first.pointer || '/', problems.map((p) => (p === first ? p.message : `${p.pointer || '/'}: ${p.message}`)).join('; '));
}
