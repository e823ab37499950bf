/**
 * Tools: TypeScript functions registered by name in code; graphs only name them, so a
 * graph can never run code it carries. A tool gets the node's input, its static `args`
 * and an AbortSignal that fires when the run is cancelled.
 *
 * @example
 * registerTool('wordCount', (input) => String(input).split(/\s+/).length);
 */
import type { Observable } from 'rxjs';

export interface ToolCall {
  args: Record<string, unknown>;
  signal: AbortSignal;
  node?: string;
}

export type ToolFn = (input: unknown, call: ToolCall) => unknown | Promise<unknown> | Observable<unknown>;

export class ToolRegistry {
  private readonly tools = new Map<string, ToolFn>();

  register(name: string, fn: ToolFn): this {
    this.tools.set(name, fn);
    return this;
  }

  get(name: string): ToolFn | undefined {
    return this.tools.get(name);
  }

  has(name: string): boolean {
    return this.tools.has(name);
  }

  names(): string[] {
    return [...this.tools.keys()].sort();
  }
}

/** The registry graphs use when the caller gives none. */
export const defaultTools = new ToolRegistry();

export function registerTool(name: string, fn: ToolFn): ToolRegistry {
  return defaultTools.register(name, fn);
}
