/**
 * The node registry's port table: for every node kind, its input and output ports and
 * their types. Validation (edges, types, required inputs) and the compiler both read
 * ports from here only. `pass` marks an output whose type is the type of the value fed
 * to the named input (fork, route and loop forward values unchanged).
 *
 * @example
 * portsOf({ id: 'g', kind: 'generate' }).inputs.map((p) => p.name); // ['prompt', 'system']
 */
import type { JoinMode, NodeSpec, PortType } from './graph-schema.js';

export interface PortDef {
  name: string;
  type: PortType;
  required?: boolean;
  /** The output carries the value of this input unchanged, so it has that input's type. */
  pass?: string;
}

export interface NodePorts {
  inputs: PortDef[];
  outputs: PortDef[];
  /** Any input port name is accepted (join); each edge brings its own port. */
  variadic?: boolean;
}

const placeholderRe = /\{\{\s*([A-Za-z_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)*)\s*\}\}/g;

/** The distinct `{{name}}` placeholders of a template, in order of first use. */
export function templatePlaceholders(template: string): string[] {
  const names = new Set<string>();
  for (const m of template.matchAll(placeholderRe)) names.add(m[1]!);
  return [...names];
}

export { placeholderRe };

const joinOutput: Record<JoinMode, PortType> = { concat: 'text', list: 'list', first: 'any', object: 'json' };

export function routeBranchNames(node: Extract<NodeSpec, { kind: 'route' }>): string[] {
  const names = node.branches.map((b) => b.name);
  if (node.default !== undefined && !names.includes(node.default)) names.push(node.default);
  return names;
}

export function portsOf(node: NodeSpec): NodePorts {
  switch (node.kind) {
    case 'input':
      return { inputs: [], outputs: [{ name: 'out', type: node.type ?? 'text' }] };
    case 'template':
      return {
        inputs: templatePlaceholders(node.template).map((name) => ({ name, type: 'any', required: true })),
        outputs: [{ name: 'out', type: 'text' }],
      };
    case 'generate':
      return {
        inputs: [
          { name: 'prompt', type: 'text', required: true },
          { name: 'system', type: 'text' },
        ],
        // With a schema the model's JSON is parsed: a JSON value, not text.
        outputs: [{ name: 'out', type: node.output?.schema !== undefined ? 'json' : 'text' }],
      };
    case 'skeleton':
      return { inputs: [{ name: 'question', type: 'text', required: true }], outputs: [{ name: 'out', type: 'skeleton' }] };
    case 'expand':
      return { inputs: [{ name: 'skeleton', type: 'skeleton', required: true }], outputs: [{ name: 'out', type: 'list' }] };
    case 'fork':
      return {
        inputs: [{ name: 'in', type: 'any', required: true }],
        outputs: node.branches.map((name) => ({ name, type: 'any', pass: 'in' })),
      };
    case 'join':
      return {
        inputs: [],
        variadic: true,
        outputs: [{ name: 'out', type: joinOutput[node.mode], pass: node.mode === 'first' ? '*' : undefined }],
      };
    case 'route':
      return {
        inputs: [{ name: 'in', type: 'any', required: true }],
        outputs: routeBranchNames(node).map((name) => ({ name, type: 'any', pass: 'in' })),
      };
    case 'loop':
      return {
        inputs: [
          { name: 'init', type: 'any', required: true },
          { name: 'next', type: 'any', required: true },
        ],
        outputs: [
          { name: 'body', type: 'any', pass: 'init' },
          { name: 'out', type: 'any', pass: 'init' },
        ],
      };
    case 'tool':
      return { inputs: [{ name: 'in', type: 'any' }], outputs: [{ name: 'out', type: 'any' }] };
    case 'output':
      return { inputs: [{ name: 'in', type: 'any', required: true }], outputs: [] };
    default: {
      const never: never = node;
      throw new Error(`unhandled node kind ${(never as NodeSpec).kind}`);
    }
  }
}

/** Whether a value of type `from` may flow into a port of type `to`. */
export function portTypeAccepts(to: PortType, from: PortType): boolean {
  if (to === 'any' || from === 'any' || to === from) return true;
  // json ports take any JSON value; text and lists are JSON values, a skeleton is too.
  return to === 'json';
}
