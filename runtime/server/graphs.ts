/**
 * The example graphs shipped in graphs/: each *.json file, named after the file, read
 * once when the app starts (they are part of the install, not user data).
 *
 * @example
 * const examples = loadExampleGraphs(defaultGraphsDir);
 * examples.find((g) => g.name === 'sot');
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExampleGraph } from './types.js';

export const defaultGraphsDir = fileURLToPath(new URL('../../graphs/', import.meta.url));

export function loadExampleGraphs(dir: string = defaultGraphsDir): ExampleGraph[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  } catch {
    return [];
  }
  const out: ExampleGraph[] = [];
  for (const file of files) {
    try {
      const graph = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, unknown>;
      const description = typeof graph.description === 'string' ? graph.description : undefined;
      out.push({ name: basename(file, '.json'), file: `graphs/${file}`, ...(description ? { description } : {}), graph });
    } catch {
      // A broken example must not take the server down; validation will show it when edited.
      continue;
    }
  }
  return out;
}
