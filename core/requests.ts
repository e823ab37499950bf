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
import { MAX_EMBED_INPUTS } from './engine.js';
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

const textParts = { type: 'array', items: { type: 'object', properties: { type: { const: 'text' }, text: { type: 'string' } }, required: ['type', 'text'] } } as const;

/** An earlier tool call in an assistant message (OpenAI's shape; arguments is a JSON string). */
const toolCallItem = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    type: { const: 'function' },
    function: { type: 'object', properties: { name: { type: 'string' }, arguments: { type: 'string' } }, required: ['name', 'arguments'] },
  },
  required: ['function'],
} as const;

/**
 * POST /v1/chat/completions: every OpenAI field Skein reads. Any other field is refused
 * at its pointer: an option a client sets and the server ignores would make its answers
 * silently wrong. `user` is an opaque end-user id for the caller's logs; it changes
 * nothing. The shapes of `tools` and `response_format` are checked further by
 * runtime/server/openai-tools.ts, which turns them into an output constraint.
 */
export const chatRequestSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        properties: {
          role: { enum: roles },
          content: { oneOf: [{ type: 'string' }, textParts] },
          name: { type: 'string' },
          tool_calls: { type: 'array', items: toolCallItem },
          tool_call_id: { type: 'string' },
        },
        required: ['role'],
      },
    },
    max_tokens: s.maxTokens,
    max_completion_tokens: s.maxTokens,
    temperature: s.temperature,
    top_p: s.topP,
    top_k: { type: 'integer', minimum: -1, description: "vLLM's convention: -1 (or 0) disables top-k." },
    repetition_penalty: { ...s.repetitionPenalty, description: "vLLM's and SGLang's extension: 1 disables it (CTRL-style)." },
    continue_final_message: {
      type: 'boolean',
      description: "vLLM's and SGLang's continuation: the last message is an assistant turn that the answer continues (with add_generation_prompt: false).",
    },
    add_generation_prompt: { type: 'boolean', description: 'false with continue_final_message; true (the default) otherwise.' },
    seed: s.seed,
    stop: { oneOf: [{ type: 'string', minLength: 1 }, s.stop] },
    frequency_penalty: s.frequencyPenalty,
    presence_penalty: s.presencePenalty,
    logit_bias: { ...s.logitBias, maxProperties: 300 },
    n: { type: 'integer', minimum: 1, maximum: 8, description: 'Choices, sampled with seed, seed + 1, …; batched, sharing the prompt\'s KV.' },
    stream: { type: 'boolean' },
    stream_options: { type: 'object', properties: { include_usage: { type: 'boolean' } } },
    response_format: { type: 'object', properties: { type: { enum: ['text', 'json_object', 'json_schema'] } }, required: ['type'] },
    tools: { type: 'array' },
    tool_choice: { oneOf: [{ enum: ['none', 'auto', 'required'] }, { type: 'object' }] },
    parallel_tool_calls: { type: 'boolean' },
    user: { type: 'string' },
    logprobs: { type: 'boolean', description: 'Each content token\'s log-probability, after the output mask, logit_bias and penalties, before temperature.' },
    top_logprobs: { type: 'integer', minimum: 0, maximum: 20, description: 'With logprobs: this many most likely alternatives per token.' },
  },
  required: ['messages'],
} as const;

export type ChatRequest = FromSchema<typeof chatRequestSchema>;

const tokenIds = { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } as const;

/**
 * POST /v1/completions (OpenAI's legacy text completions): a prompt as text or token ids,
 * one or several (each gets `n` choices), the same sampling fields as chat. `echo`,
 * `suffix` and a `best_of` other than `n` are refused at their pointer.
 */
export const completionRequestSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    model: { type: 'string' },
    prompt: {
      oneOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, maxItems: 16, items: { type: 'string' } },
        tokenIds,
        { type: 'array', minItems: 1, maxItems: 16, items: tokenIds },
      ],
    },
    max_tokens: { ...s.maxTokens, description: "OpenAI's default is 16." },
    temperature: s.temperature,
    top_p: s.topP,
    top_k: chatRequestSchema.properties.top_k,
    seed: s.seed,
    stop: chatRequestSchema.properties.stop,
    frequency_penalty: s.frequencyPenalty,
    presence_penalty: s.presencePenalty,
    logit_bias: chatRequestSchema.properties.logit_bias,
    n: chatRequestSchema.properties.n,
    best_of: { type: 'integer', minimum: 1, description: 'Accepted only equal to n: choices are not ranked server-side.' },
    stream: { type: 'boolean' },
    stream_options: chatRequestSchema.properties.stream_options,
    logprobs: { type: 'integer', minimum: 0, maximum: 20, description: 'Log-probabilities of each token and this many alternatives.' },
    echo: { const: false, description: 'Echoing the prompt is not served.' },
    suffix: { const: '', description: 'Insertion (a suffix) is not served: the models are left-to-right only.' },
    user: { type: 'string' },
  },
  required: ['prompt'],
} as const;

export type CompletionRequest = FromSchema<typeof completionRequestSchema>;

/**
 * POST /v1/embeddings: one input or a list, as text or token ids. `encoding_format`
 * base64 is the vectors' little-endian float32 bytes (what the `openai` client asks for
 * by default); `dimensions` is accepted only equal to the model's size (checked by the
 * engine, which knows it). Limits on count and tokens: core/engine.ts MAX_EMBED_*.
 */
export const embeddingRequestSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    model: { type: 'string' },
    input: {
      oneOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, maxItems: MAX_EMBED_INPUTS, items: { type: 'string' } },
        tokenIds,
        { type: 'array', minItems: 1, maxItems: MAX_EMBED_INPUTS, items: tokenIds },
      ],
    },
    encoding_format: { enum: ['float', 'base64'] },
    dimensions: { type: 'integer', minimum: 1 },
    user: { type: 'string' },
  },
  required: ['input'],
} as const;

export type EmbeddingRequest = FromSchema<typeof embeddingRequestSchema>;

const ajv = new Ajv2020({ allErrors: true, strict: false });
const compiled = new WeakMap<object, ValidateFunction>();

function validatorOf(schema: object): ValidateFunction {
  let validate = compiled.get(schema);
  if (!validate) compiled.set(schema, (validate = ajv.compile(schema)));
  return validate;
}

/**
 * Compiles every request schema now. Compiling takes 80–340 ms for the chat and completion
 * schemas on a busy 2-core box; done on their first request it stalled the server's event
 * loop (and every `/healthz` behind it) for that long, so the server does it before it listens.
 */
export function compileRequestSchemas(): void {
  for (const schema of [runRequestSchema, chatRequestSchema, completionRequestSchema, embeddingRequestSchema]) validatorOf(schema);
}

/**
 * Checks a request body against its schema and returns it typed; otherwise throws a
 * BadRequestError at the first problem's JSON pointer, listing every problem. `null`
 * fields count as absent (OpenAI clients send them for defaults).
 */
export function checkRequest<S extends object>(schema: S, body: unknown): FromSchema<S> {
  const validate = validatorOf(schema);
  const doc = body !== null && typeof body === 'object' && !Array.isArray(body) ? Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null)) : body;
  if (validate(doc)) return doc as FromSchema<S>;
  const problems = (validate.errors ?? []).filter((e) => e.keyword !== 'oneOf' || !validate.errors!.some((o) => o !== e && o.instancePath.startsWith(e.instancePath))).map((e) => schemaProblem(e, doc));
  const first = problems[0] ?? { pointer: '', message: 'invalid' };
  throw new BadRequestError(first.pointer || '/', problems.map((p) => (p === first ? p.message : `${p.pointer || '/'}: ${p.message}`)).join('; '));
}
