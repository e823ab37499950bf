/**
 * `npm run build:playground`: builds playground/dist now, whether or not it is stale
 * (`skein serve` builds it by itself when it is missing or stale).
 *
 * @example
 * npx tsx runtime/server/build.ts
 */
import { buildPlayground } from './playground.js';

const result = await buildPlayground({ force: true });
process.stdout.write(`playground built into ${result.outDir} in ${result.ms} ms\n`);
