/**
 * `template`: string interpolation of upstream values. Each `{{name}}` takes the binding
 * `name`; `{{name.field}}` reads an own property of it. No code is evaluated. A plain
 * object input is the bindings; any other input is bound to `{{in}}`.
 *
 * `tail` keeps only the end of the rendered text (declared in the graph, see TemplateTail).
 *
 * @example
 * of({ question: 'Why?' }).pipe(template('Q: {{question}}\nA:')).subscribe(console.log); // "Q: Why?\nA:"
 */
import { defer, of, type OperatorFunction } from 'rxjs';
import type { OperatorEvent } from '../core/events.js';
import { BadRequestError } from '../core/errors.js';
import type { NodeSpecOf } from '../core/graph-schema.js';
import { placeholderRe } from '../core/ports.js';
import type { OperatorContext } from './context.js';
import { done, nodeStream } from './internal/node.js';
import { perValue, type Flow } from './internal/operate.js';

export type TemplateTail = NonNullable<NodeSpecOf<'template'>['tail']>;

/** How a value reads inside a prompt: lists one item a line, skeletons as their outline. */
export function renderValue(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return value.map(renderValue).join('\n');
  if (typeof value === 'object' && typeof (value as { outline?: unknown }).outline === 'string')
    return (value as { outline: string }).outline;
  return JSON.stringify(value, null, 2);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

export function renderTemplate(text: string, bindings: Record<string, unknown>): string {
  return text.replace(new RegExp(placeholderRe.source, 'g'), (_whole, name: string, path: string) => {
    if (!Object.hasOwn(bindings, name)) throw new BadRequestError(`template {{${name}}}`, 'no value is bound to it');
    let value: unknown = bindings[name];
    for (const key of path.split('.').slice(1)) {
      value = value !== null && typeof value === 'object' && Object.hasOwn(value, key) ? (value as Record<string, unknown>)[key] : undefined;
    }
    return renderValue(value);
  });
}

/**
 * The end of `text` within the limits: the last `maxLines` lines, then as many whole last
 * lines as fit in `maxChars` (a single longer line is cut inside, never a surrogate pair).
 */
export function tailText(text: string, tail: TemplateTail): string {
  let out = text;
  if (tail.maxLines !== undefined) {
    const lines = out.split('\n');
    if (lines.length > tail.maxLines) out = lines.slice(-tail.maxLines).join('\n');
  }
  if (tail.maxChars !== undefined && out.length > tail.maxChars) {
    const start = out.length - tail.maxChars;
    let cut = out.slice(start);
    const nl = cut.indexOf('\n');
    // Starting mid-line, the partial line goes, unless it is the only one.
    if (out[start - 1] !== '\n' && nl >= 0) cut = cut.slice(nl + 1);
    else if (/^[\uDC00-\uDFFF]/.test(cut)) cut = cut.slice(1);
    out = cut;
  }
  return out;
}

/** Its node-end carries the rendered text. */
export function template(text: string, options: { tail?: TemplateTail; context?: OperatorContext } = {}): OperatorFunction<Flow<unknown>, OperatorEvent> {
  const { tail } = options;
  const scope = { node: options.context?.node ?? 'template', branch: options.context?.branch };
  return perValue(
    (input: unknown) =>
      nodeStream(
        scope,
        defer(() => {
          const rendered = renderTemplate(text, isPlainObject(input) ? input : { in: input });
          return of(done(tail ? tailText(rendered, tail) : rendered));
        }),
      ),
    scope.branch,
  );
}
