/**
 * `--kv-cache`, shared by the commands that run the model (serve, generate, run): it sets
 * SKEIN_KV_CACHE, which the model's fast path reads when it is prepared (kv-mirror.ts
 * kvTypeOf) — in this thread or an engine's worker alike, as SKEIN_THREADS does.
 *
 * @example
 * program.command('serve').option('--kv-cache <type>', KV_CACHE_HELP, parseKvCache).action((o) => applyKvCache(o.kvCache));
 */
import { BadRequestError } from '../../../core/errors.js';

const TYPES = ['auto', 'f16', 'q8', 'f32'] as const;
export type KvCacheFlag = (typeof TYPES)[number];

export const KV_CACHE_HELP =
  'KV cache the fast path reads: auto (f16 for quantized models, as llama.cpp keeps it; f32 for float ones), f16, f32, or q8 (half f16\'s bytes, lossy: faster decode at long context; npx skein bench kv measures both) (default: $SKEIN_KV_CACHE, else auto)';

export function parseKvCache(value: string): KvCacheFlag {
  if (!(TYPES as readonly string[]).includes(value)) throw new BadRequestError('--kv-cache', `must be one of ${TYPES.join(', ')}; got ${JSON.stringify(value)}`);
  return value as KvCacheFlag;
}

/** Makes the flag, when given, what every model this process prepares from now on reads. */
export function applyKvCache(flag: KvCacheFlag | undefined): void {
  if (flag !== undefined) process.env.SKEIN_KV_CACHE = flag;
}
