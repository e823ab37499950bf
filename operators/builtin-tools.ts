/**
 * The tools Skein registers itself, so that example graphs (graphs/agent-tools.json) run
 * as they are: `calculator` computes an arithmetic expression (operators/internal/
 * arithmetic.ts: parsed, never evaluated as code) and `lookup` reads a key from the table
 * the graph gives in the node's `args` (data). Both take what a tool-calling generate node
 * produces, `{name, arguments: {...}}`, or the arguments object alone.
 *
 * @example
 * registerBuiltinTools(defaultTools);
 * // graph: { "kind": "tool", "tool": "lookup", "args": { "table": { "paris": "France" } } }
 */
import { defaultTools, type ToolFn, type ToolRegistry } from '../core/tools.js';
import { evaluateArithmetic } from './internal/arithmetic.js';

/** The arguments of a tool call (`{name, arguments}`), or the input itself when it is not one. */
function argumentsOf(input: unknown): Record<string, unknown> {
  const record = typeof input === 'object' && input !== null && !Array.isArray(input) ? (input as Record<string, unknown>) : {};
  const inner = record.arguments;
  return typeof inner === 'object' && inner !== null && !Array.isArray(inner) ? (inner as Record<string, unknown>) : record;
}

/** `{expression}` → `{expression, result}`. */
export const calculator: ToolFn = (input) => {
  const expression = typeof input === 'string' ? input : argumentsOf(input).expression;
  if (typeof expression !== 'string') throw new Error('calculator needs {"expression": "<arithmetic>"}');
  return { expression, result: evaluateArithmetic(expression) };
};

/** `{key}` → `{key, value}` from `args.table`; a key not in the table is an error. */
export const lookup: ToolFn = (input, { args }) => {
  const key = typeof input === 'string' ? input : argumentsOf(input).key;
  const table = args.table;
  if (typeof table !== 'object' || table === null || Array.isArray(table)) throw new Error('lookup needs args.table, an object of key → value');
  if (typeof key !== 'string' || !Object.prototype.hasOwnProperty.call(table, key)) throw new Error(`lookup: no entry ${JSON.stringify(key)} in the table`);
  return { key, value: (table as Record<string, unknown>)[key] };
};

export function registerBuiltinTools(registry: ToolRegistry): ToolRegistry {
  return registry.register('calculator', calculator).register('lookup', lookup);
}

registerBuiltinTools(defaultTools);
