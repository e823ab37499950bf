/**
 * The graph format, version 1, defined once: this object is the JSON Schema (draft
 * 2020-12) that ajv validates against, the TypeScript types below are read from it, and
 * core/schema/graph.schema.json is written from it (`npm run skein -- schema`, checked
 * by a test) so editors can use it.
 *
 * @example
 * const spec: GraphSpec = {
 *   version: 1, name: 'echo',
 *   nodes: [{ id: 'q', kind: 'input' }, { id: 'a', kind: 'output' }],
 *   edges: [{ from: 'q', to: 'a' }],
 * };
 */
import type { FromSchema } from './from-schema.js';
import { outputSchema } from './output.js';
import { samplingSchema } from './sampling.js';
import { stagesSchema } from './stages.js';

export const GRAPH_SCHEMA_ID = 'https://skein.dev/schema/graph-1.json';

// Ids and names become keys of per-run records (usage, outputs, inputs); the names every
// object inherits are refused so that no graph can reach Object.prototype through them.
const reserved = '(?:__proto__|constructor|prototype)';
const idPattern = `^(?!${reserved}$)[A-Za-z_][A-Za-z0-9_-]*$`;
const keyNamePattern = `^(?!${reserved}$)`;

// The sampling schema carries its own $id for the HTTP API; embedded here several times,
// that id would be ambiguous, so the copies drop it.
const { $id: _samplingId, ...sampling } = samplingSchema;

/** A declarative test of a text (every given field must hold). Never evaluated as code. */
export const conditionSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  description: 'Every field given must hold for the condition to match.',
  properties: {
    contains: { type: 'string', minLength: 1 },
    startsWith: { type: 'string', minLength: 1 },
    equals: { type: 'string' },
    regex: { type: 'string', minLength: 1, description: 'A JavaScript regular expression, as data.' },
    flags: { type: 'string', pattern: '^[imsu]*$', description: 'Flags of `regex`.' },
    ignoreCase: { type: 'boolean', description: 'Compare contains/startsWith/equals case-insensitively.' },
  },
} as const;

/** Optional fields every node may carry for editors and the playground; ignored by the runtime. */
const layoutProperties = {
  label: { type: 'string', description: 'Display name in editors.' },
  notes: { type: 'string', description: 'Free text shown beside the node.' },
  position: {
    type: 'object',
    additionalProperties: false,
    properties: { x: { type: 'number' }, y: { type: 'number' } },
    required: ['x', 'y'],
  },
} as const;

function node<const K extends string, const P extends object, const R extends readonly string[]>(
  kind: K,
  description: string,
  properties: P,
  required: R,
) {
  return {
    type: 'object',
    description,
    additionalProperties: false,
    properties: {
      id: { type: 'string', pattern: idPattern },
      kind: { const: kind },
      ...layoutProperties,
      ...properties,
    },
    required: ['id', 'kind', ...required],
  } as const;
}

/**
 * A remote model server speaking OpenAI's chat completions API (vLLM, SGLang, llama.cpp's
 * server, TGI, another Skein). A graph names it in `providers` and a model-calling node
 * points at it with `provider`; the key comes from the environment variable `apiKeyEnv`
 * names, never from the graph. runtime/providers/ builds the engine over it.
 */
export const providerSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'A remote OpenAI-compatible model server.',
  properties: {
    type: { const: 'openai', description: 'The API it speaks: OpenAI chat completions with SSE streaming.' },
    baseUrl: { type: 'string', pattern: '^https?://[^\\s]+$', description: 'The API root, e.g. http://127.0.0.1:8000/v1.' },
    model: { type: 'string', minLength: 1, description: 'The model id the server serves it as.' },
    apiKeyEnv: {
      type: 'string',
      pattern: '^[A-Za-z_][A-Za-z0-9_]*$',
      description: 'Name of the environment variable holding the bearer token (the key never goes in a graph).',
    },
    timeoutMs: {
      type: 'integer',
      minimum: 1,
      maximum: 3600000,
      description: 'Longest wait for the response or its next streamed chunk before the attempt fails (default 60000).',
    },
    maxConcurrency: { type: 'integer', minimum: 1, maximum: 1024, description: 'Requests in flight to it at once, over every run of this process (default 16).' },
    retries: { type: 'integer', minimum: 0, maximum: 10, description: 'Retries after a 429, a 5xx or a lost connection before the first token (default 2).' },
    continueFinalMessage: {
      type: 'boolean',
      description:
        "Whether the server continues a final assistant message when asked with continue_final_message (vLLM, SGLang and Skein do; default true). Set false for a server that ignores the field and answers a new turn instead (llama-cpp-python's server, for one): nodes that start the answer themselves (skeleton, expand, generate with assistantPrefix) then fail validation instead of silently answering a different question.",
    },
  },
  required: ['type', 'baseUrl', 'model'],
} as const;

/** A model-calling node's `provider`: the name of one of the graph's `providers` (default: the local runtime). */
const providerField = {
  provider: { type: 'string', pattern: idPattern, description: 'Run this node\'s model calls on the named provider (default: the local shared runtime).' },
} as const;

export const portTypes = ['text', 'list', 'json', 'skeleton', 'any'] as const;
export type PortType = (typeof portTypes)[number];

export const joinModes = ['concat', 'list', 'first', 'object'] as const;
export type JoinMode = (typeof joinModes)[number];

export const nodeSchemas = {
  input: node(
    'input',
    'A value given when the run starts, by name.',
    {
      name: { type: 'string', minLength: 1, pattern: keyNamePattern, description: 'Key in the run input; defaults to the node id.' },
      type: { enum: ['text', 'list', 'json'], description: 'Port type of the value (default text).' },
      required: { type: 'boolean', description: 'Default true unless `default` is given.' },
      default: { description: 'Used when the run input lacks this value.' },
      description: { type: 'string' },
    },
    [],
  ),
  template: node(
    'template',
    'String interpolation: each {{name}} (or {{name.field}}) is an input port. No code is evaluated.',
    {
      template: { type: 'string' },
      tail: {
        type: 'object',
        additionalProperties: false,
        minProperties: 1,
        description:
          'Keeps only the end of the rendered text, from a line start: a transcript that a loop grows stays within a small model\'s context.',
        properties: {
          maxLines: { type: 'integer', minimum: 1, description: 'Last lines kept.' },
          maxChars: { type: 'integer', minimum: 1, description: 'Characters kept at most; whole lines unless one line alone is longer.' },
        },
      },
    },
    ['template'],
  ),
  generate: node(
    'generate',
    'One model call on the shared engine: input `prompt` (text), optional input `system`.',
    {
      system: { type: 'string', description: 'System prompt (when the `system` port is not connected).' },
      chat: { type: 'boolean', description: 'Render with the chat template (default true); false sends the raw prompt.' },
      assistantPrefix: { type: 'string', description: 'Text the assistant turn starts with (chat only).' },
      output: {
        ...outputSchema,
        description: 'Structured output by constrained decoding. With `schema` the node outputs the parsed JSON value (port type json), validated.',
      },
      sampling,
      stages: stagesSchema,
      ...providerField,
    },
    [],
  ),
  skeleton: node(
    'skeleton',
    'Skeleton-of-Thought stage 1: ask for a numbered outline of the question and parse it.',
    {
      maxPoints: { type: 'integer', minimum: 1, maximum: 20, description: 'Points kept (default 10).' },
      sampling,
      stages: stagesSchema,
      ...providerField,
    },
    [],
  ),
  expand: node(
    'expand',
    'Skeleton-of-Thought stage 2: expand every point in parallel (bounded), in order.',
    {
      concurrency: { type: 'integer', minimum: 1, maximum: 64, description: 'Points expanded at once (default 4).' },
      shareKv: { type: 'boolean', description: 'Prefill the points\' common prompt prefix once before they fan out, so every point adopts its KV blocks (default false).' },
      sampling,
      stages: stagesSchema,
      ...providerField,
    },
    [],
  ),
  fork: node(
    'fork',
    'Sends its input to every named branch; each branch is an output port.',
    {
      branches: {
        type: 'array',
        items: { type: 'string', pattern: idPattern },
        minItems: 2,
        uniqueItems: true,
      },
    },
    ['branches'],
  ),
  join: node(
    'join',
    'Joins its inputs (any port names, in edge order); failed and skipped branches are left out.',
    {
      mode: { enum: joinModes, description: 'concat: text; list: array; first: first to finish; object: by port.' },
      separator: { type: 'string', description: 'concat only (default a blank line).' },
    },
    ['mode'],
  ),
  route: node(
    'route',
    'Picks one output branch from its input (by: value) or from a model answer about it (by: model).',
    {
      by: { enum: ['value', 'model'], description: 'Default value.' },
      prompt: { type: 'string', description: 'by: model — question to the model, {{in}} is the input (default: the SoT router).' },
      answers: {
        type: 'array',
        items: { type: 'string', minLength: 1 },
        minItems: 1,
        uniqueItems: true,
        description: 'by: model — the only answers the model may give (a choice constraint); default A, B, C for the SoT router prompt, free text for a custom prompt.',
      },
      branches: {
        type: 'array',
        minItems: 1,
        items: {
          type: 'object',
          additionalProperties: false,
          properties: { name: { type: 'string', pattern: idPattern }, when: conditionSchema },
          required: ['name', 'when'],
        },
      },
      default: { type: 'string', pattern: idPattern, description: 'Branch taken when no condition matches.' },
      sampling,
      ...providerField,
    },
    ['branches'],
  ),
  loop: node(
    'loop',
    'A bounded loop: `init` starts it, `body` feeds each turn, the value reaching `next` ends the turn, `out` is the last one.',
    {
      maxTurns: { type: 'integer', minimum: 1, maximum: 1000 },
      stop: conditionSchema,
    },
    ['maxTurns'],
  ),
  tool: node(
    'tool',
    'Calls a TypeScript function registered by name in code (registerTool).',
    {
      tool: { type: 'string', minLength: 1 },
      args: { type: 'object', description: 'Static arguments passed to the tool beside its input.' },
    },
    ['tool'],
  ),
  output: node(
    'output',
    'A final value of the run, under `name` (default the node id).',
    { name: { type: 'string', minLength: 1, pattern: keyNamePattern } },
    [],
  ),
} as const;

export type NodeKind = keyof typeof nodeSchemas;
export const nodeKinds = Object.keys(nodeSchemas) as NodeKind[];

const edgeEnd = {
  type: 'string',
  pattern: `^(?!${reserved}(?:\\.|$))[A-Za-z_][A-Za-z0-9_-]*(\\.(?!${reserved}$)[A-Za-z_][A-Za-z0-9_-]*)?$`,
} as const;

export const graphJsonSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: GRAPH_SCHEMA_ID,
  title: 'Skein graph',
  type: 'object',
  additionalProperties: false,
  properties: {
    $schema: { type: 'string' },
    version: { const: 1, description: 'Graph format version.' },
    name: { type: 'string', minLength: 1 },
    description: { type: 'string' },
    nodes: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['id', 'kind'],
        discriminator: { propertyName: 'kind' },
        oneOf: Object.values(nodeSchemas),
      },
    },
    edges: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: { from: edgeEnd, to: edgeEnd, label: { type: 'string' } },
        required: ['from', 'to'],
      },
    },
    providers: {
      type: 'object',
      description: 'Remote model servers nodes may run on, by name (a node names one in `provider`).',
      propertyNames: { pattern: idPattern },
      additionalProperties: providerSchema,
    },
    layout: { type: 'object', description: 'Free-form editor state (viewport, zoom); ignored by the runtime.' },
  },
  required: ['version', 'name', 'nodes', 'edges'],
} as const;

type NodeSchemas = typeof nodeSchemas;
export type NodeSpecOf<K extends NodeKind> = FromSchema<NodeSchemas[K]>;
export type NodeSpec = { [K in NodeKind]: NodeSpecOf<K> }[NodeKind];
export type EdgeSpec = GraphSpec['edges'][number];
export type Condition = FromSchema<typeof conditionSchema>;
export type ProviderSpec = FromSchema<typeof providerSchema>;

/** A graph document, read from the schema itself. */
export type GraphSpec = FromSchema<typeof graphJsonSchema>;
