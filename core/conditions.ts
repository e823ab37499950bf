/**
 * Declarative conditions (route branches, loop stops): data, never code. Every field
 * given must hold. Non-text values are tested on their JSON text.
 *
 * @example
 * matchCondition({ contains: 'DONE', ignoreCase: true }, 'we are done'); // true
 */
import type { Condition } from './graph-schema.js';

export function conditionText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value) ?? '';
}

export function matchCondition(cond: Condition, value: unknown): boolean {
  const raw = conditionText(value);
  const fold = (s: string) => (cond.ignoreCase ? s.toLowerCase() : s);
  const text = fold(raw);
  if (cond.contains !== undefined && !text.includes(fold(cond.contains))) return false;
  if (cond.startsWith !== undefined && !text.trimStart().startsWith(fold(cond.startsWith))) return false;
  if (cond.equals !== undefined && text.trim() !== fold(cond.equals).trim()) return false;
  if (cond.regex !== undefined && !new RegExp(cond.regex, cond.flags).test(raw)) return false;
  return true;
}
