/**
 * OpenAI tools and response formats on top of constrained decoding. A tool call is the
 * JSON object `{"name": …, "arguments": {…}}` whose arguments follow the tool's
 * `parameters` schema; the model learns the tools and that format from a system message.
 *
 * - `tool_choice: "required"` / a named function: the output IS a call (a schema over
 *   the allowed tools, `anyOf` one arm per tool).
 * - `"auto"` (the default with tools): the output is either such a call or free text that
 *   does not start with `{` (`orText`), so the model chooses in one pass and whatever it
 *   chooses is well-formed.
 * - `"none"`: no tools offered, plain text.
 *
 * `ToolCallStream` turns the streamed text of a call into OpenAI's `tool_calls` deltas:
 * id and name first, then the arguments text as it arrives.
 *
 * @example
 * const plan = planTools(body); // { output, system, mode }
 */
import { BadRequestError } from '../../core/errors.js';
import type { OutputConstraint } from '../../core/output.js';

export interface FunctionTool {
  name: string;
  description?: string;
  parameters: object | boolean;
}

export interface ToolPlan {
  /** The constraint the generation runs under (absent: plain text). */
  output?: OutputConstraint;
  /** A system message describing the tools (absent when none are offered). */
  system?: string;
  /** 'call': the answer is a call; 'either': a call or text; 'text': text only. */
  mode: 'call' | 'either' | 'text';
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

function parseToolList(raw: unknown): FunctionTool[] {
  if (!Array.isArray(raw) || raw.length === 0) throw new BadRequestError('tools', 'must be a non-empty array');
  const seen = new Set<string>();
  return raw.map((t, i) => {
    const tool = t as { type?: unknown; function?: { name?: unknown; description?: unknown; parameters?: unknown } };
    if (tool?.type !== 'function') throw new BadRequestError(`tools[${i}].type`, 'only "function" tools are supported');
    const fn = tool.function;
    if (typeof fn?.name !== 'string' || !NAME.test(fn.name)) throw new BadRequestError(`tools[${i}].function.name`, 'must match ^[A-Za-z0-9_-]{1,64}$');
    if (seen.has(fn.name)) throw new BadRequestError(`tools[${i}].function.name`, `duplicate tool ${fn.name}`);
    seen.add(fn.name);
    const parameters = fn.parameters ?? { type: 'object', properties: {} };
    if (typeof parameters !== 'boolean' && (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters))) {
      throw new BadRequestError(`tools[${i}].function.parameters`, 'must be a JSON Schema object');
    }
    return { name: fn.name, ...(typeof fn.description === 'string' ? { description: fn.description } : {}), parameters: parameters as object };
  });
}

/** The schema of one call to any of `tools`: name first, so a stream can announce it early. */
export function toolCallSchema(tools: FunctionTool[]): object {
  const arm = (t: FunctionTool) => ({
    type: 'object',
    properties: { name: { const: t.name }, arguments: t.parameters },
    required: ['name', 'arguments'],
    additionalProperties: false,
  });
  return tools.length === 1 ? arm(tools[0]!) : { anyOf: tools.map(arm) };
}

export function toolSystemPrompt(tools: FunctionTool[], mode: ToolPlan['mode']): string {
  const list = tools.map((t) => JSON.stringify({ name: t.name, description: t.description ?? '', parameters: t.parameters })).join('\n');
  const how =
    mode === 'call'
      ? 'Answer with one function call as JSON: {"name": <function name>, "arguments": <arguments object>}.'
      : 'To call a function, answer only with JSON: {"name": <function name>, "arguments": <arguments object>}. Otherwise answer normally.';
  return `You can call these functions:\n${list}\n${how}`;
}

/** Reads `tools`, `tool_choice` and `parallel_tool_calls` into a plan; bad values are 400s naming the field. */
export function planTools(body: Record<string, unknown>): ToolPlan {
  if (body.parallel_tool_calls === true) throw new BadRequestError('parallel_tool_calls', 'parallel tool calls are not supported; set it to false');
  if (body.tools == null) {
    if (body.tool_choice != null && body.tool_choice !== 'none') throw new BadRequestError('tool_choice', 'needs tools');
    return { mode: 'text' };
  }
  const tools = parseToolList(body.tools);
  const choice = body.tool_choice ?? 'auto';
  if (choice === 'none') return { mode: 'text' };
  if (choice === 'auto') return { mode: 'either', output: { schema: toolCallSchema(tools), orText: true }, system: toolSystemPrompt(tools, 'either') };
  if (choice === 'required') return { mode: 'call', output: { schema: toolCallSchema(tools) }, system: toolSystemPrompt(tools, 'call') };
  const named = (choice as { type?: unknown; function?: { name?: unknown } })?.function?.name;
  if ((choice as { type?: unknown }).type !== 'function' || typeof named !== 'string') {
    throw new BadRequestError('tool_choice', 'must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}');
  }
  const tool = tools.find((t) => t.name === named);
  if (!tool) throw new BadRequestError('tool_choice', `no tool named ${named}`);
  return { mode: 'call', output: { schema: toolCallSchema([tool]) }, system: toolSystemPrompt([tool], 'call') };
}

/** `response_format`: text, json_object (any object) or json_schema (its schema). */
export function responseFormatOutput(raw: unknown): OutputConstraint | undefined {
  if (raw == null) return undefined;
  const rf = raw as { type?: unknown; json_schema?: { schema?: unknown; name?: unknown } };
  switch (rf.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return { schema: { type: 'object' } };
    case 'json_schema': {
      const schema = rf.json_schema?.schema;
      if (typeof rf.json_schema?.name !== 'string') throw new BadRequestError('response_format.json_schema.name', 'is required');
      if (schema === undefined) return { schema: { type: 'object' } };
      if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null)) {
        throw new BadRequestError('response_format.json_schema.schema', 'must be a JSON Schema object');
      }
      // strict or not, the output is decoded under the schema: never looser than asked.
      return { schema: schema as object };
    }
    default:
      throw new BadRequestError('response_format.type', 'must be "text", "json_object" or "json_schema"');
  }
}

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** A finished call's text as OpenAI's tool call (arguments as a JSON string). */
export function parseToolCall(text: string, id: string): ToolCall {
  const call = JSON.parse(text) as { name: string; arguments: unknown };
  return { id, type: 'function', function: { name: call.name, arguments: JSON.stringify(call.arguments) } };
}

const HEAD = /^\{"name":\s?"((?:[^"\\]|\\.)*)",\s?"arguments":\s?/;

/**
 * Streams one call's text as `tool_calls` deltas: nothing until the name is complete, then
 * `{index, id, type, function: {name, arguments: ''}}`, then argument text pieces. The
 * object's closing `}` is held back until the end, since it is not part of the arguments.
 */
export class ToolCallStream {
  private text = '';
  private sent = 0;
  private announced = false;

  constructor(private readonly id: string) {}

  push(piece: string): Record<string, unknown>[] {
    this.text += piece;
    const out: Record<string, unknown>[] = [];
    if (!this.announced) {
      const m = HEAD.exec(this.text);
      if (!m) return out;
      this.announced = true;
      this.sent = m[0].length;
      out.push({ index: 0, id: this.id, type: 'function', function: { name: JSON.parse(`"${m[1]}"`), arguments: '' } });
    }
    // Everything but the last character may be arguments text.
    const upTo = this.text.length - 1;
    if (upTo > this.sent) {
      out.push({ index: 0, function: { arguments: this.text.slice(this.sent, upTo) } });
      this.sent = upTo;
    }
    return out;
  }

  /** At the end: the arguments text still held, without the object's closing brace. */
  finish(): Record<string, unknown>[] {
    const end = this.text.endsWith('}') ? this.text.length - 1 : this.text.length;
    if (!this.announced || end <= this.sent) return [];
    const rest = this.text.slice(this.sent, end);
    this.sent = end;
    return [{ index: 0, function: { arguments: rest } }];
  }
}
