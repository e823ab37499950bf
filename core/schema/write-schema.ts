/**
 * Writes core/schema/graph.schema.json from the schema's TypeScript source of truth
 * (core/graph-schema.ts). Run after changing the schema: `npx tsx core/schema/write-schema.ts`;
 * a test fails while the file and the source disagree.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { graphJsonSchema } from '../graph-schema.js';

export const schemaFile = fileURLToPath(new URL('./graph.schema.json', import.meta.url));
export const schemaText = () => `${JSON.stringify(graphJsonSchema, null, 2)}\n`;

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(schemaFile, schemaText());
  process.stdout.write(`wrote ${schemaFile}\n`);
}
