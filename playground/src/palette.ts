/**
 * Schema-aware node palette: one button per node kind, read from the graph JSON Schema
 * the server publishes (GET /v1/graphs/schema), each titled with the kind's description.
 * A click appends a node of that kind, its required fields filled with placeholder
 * values of the right type, for the validator to point at what is left to fill in.
 *
 * @example
 * renderPalette(el, schema, (kind) => editor.addNode(kind));
 * const node = nodeTemplate(kindSchemas(schema).get('fork')!, 'fork1');
 */
import { clear, h } from './dom.js';

interface PropSchema {
  type?: string;
  const?: unknown;
  enum?: unknown[];
  minimum?: number;
  items?: PropSchema;
  minItems?: number;
}
export interface KindSchema {
  description?: string;
  properties?: Record<string, PropSchema>;
  required?: string[];
}

/** The node schemas by kind, from the graph schema's `nodes.items.oneOf`. */
export function kindSchemas(schema: unknown): Map<string, KindSchema> {
  const oneOf = (schema as { properties?: { nodes?: { items?: { oneOf?: KindSchema[] } } } })?.properties?.nodes?.items?.oneOf ?? [];
  const out = new Map<string, KindSchema>();
  for (const s of oneOf) {
    const kind = s.properties?.kind?.const;
    if (typeof kind === 'string') out.set(kind, s);
  }
  return out;
}

// Strings get their field's name: non-empty (schemas often ask for that) and self-explaining.
function placeholder(p: PropSchema | undefined, name: string): unknown {
  if (!p) return name;
  if (p.const !== undefined) return p.const;
  if (p.enum?.length) return p.enum[0];
  switch (p.type) {
    case 'integer':
    case 'number':
      return p.minimum ?? 1;
    case 'boolean':
      return false;
    case 'array':
      return Array.from({ length: p.minItems ?? 0 }, (_, i) => (p.items?.type === 'string' ? `item${i + 1}` : placeholder(p.items, name)));
    case 'object':
      return {};
    default:
      return name;
  }
}

/** A new node of a kind: its id, its kind, and every other required field. */
export function nodeTemplate(kind: string, s: KindSchema, id: string): Record<string, unknown> {
  const node: Record<string, unknown> = { id, kind };
  for (const key of s.required ?? []) if (!(key in node)) node[key] = placeholder(s.properties?.[key], key);
  return node;
}

/** An id not yet used in the graph: the kind, then kind2, kind3, … */
export function freshId(kind: string, taken: Set<string>): string {
  if (!taken.has(kind)) return kind;
  for (let i = 2; ; i++) if (!taken.has(`${kind}${i}`)) return `${kind}${i}`;
}

export function renderPalette(host: HTMLElement, schema: unknown, onAdd: (kind: string, s: KindSchema) => void): void {
  clear(host);
  const kinds = kindSchemas(schema);
  if (kinds.size === 0) return;
  host.append(h('span', { class: 'palette-label' }, 'Add node'));
  for (const [kind, s] of kinds) {
    const button = h('button', { class: 'chip-button', type: 'button', title: s.description ?? kind, 'data-kind': kind }, kind);
    button.addEventListener('click', () => onAdd(kind, s));
    host.append(button);
  }
}
