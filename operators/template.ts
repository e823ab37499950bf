/**
 * `template`: string interpolation of upstream values. Each `{{name}}` takes the binding
 * `name`; `{{name.field}}` reads an own property of it. No code is evaluated. A plain
 * object input is the bindings; any other input is bound to `{{in}}`.
 *
 * @example
 * of({ question: 'Why?' }).pipe(template('Q: {{question}}\nA:')).subscribe(console.log); // "Q: Why?\nA:"
 */
import { map, type OperatorFunction } from 'rxjs';
import { BadRequestError } from '../core/errors.js';
import { placeholderRe } from '../core/ports.js';

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

export function template(text: string): OperatorFunction<unknown, string> {
  return map((input) => renderTemplate(text, isPlainObject(input) ? input : { in: input }));
}
