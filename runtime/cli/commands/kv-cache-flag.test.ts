import { afterEach, expect, it } from 'vitest';
import { kvCacheFromEnv, kvTypeOf } from '../../model/kv-mirror.js';
import { applyKvCache, parseKvCache } from './kv-cache-flag.js';

const before = process.env.SKEIN_KV_CACHE;
afterEach(() => {
  if (before === undefined) delete process.env.SKEIN_KV_CACHE;
  else process.env.SKEIN_KV_CACHE = before;
});

it('takes auto, f16, f32 and q8, and names the flag for anything else', () => {
  expect(['auto', 'f16', 'f32', 'q8'].map(parseKvCache)).toEqual(['auto', 'f16', 'f32', 'q8']);
  expect(() => parseKvCache('q4')).toThrow(/--kv-cache.*must be one of auto, f16, q8, f32; got "q4"/);
});

it('sets SKEIN_KV_CACHE, which the fast path reads (auto: the model decides), and leaves it alone without the flag', () => {
  delete process.env.SKEIN_KV_CACHE;
  applyKvCache(undefined);
  expect(process.env.SKEIN_KV_CACHE).toBeUndefined();
  expect(kvCacheFromEnv()).toBeUndefined();
  expect(kvTypeOf({})).toBe('f32'); // a float model, as ever
  applyKvCache('q8');
  expect(kvCacheFromEnv()).toBe('q8');
  expect(kvTypeOf({})).toBe('q8');
  expect(kvTypeOf({ kvCache: 'f16' })).toBe('f16'); // one set on the model wins
  applyKvCache('auto');
  expect(kvCacheFromEnv()).toBeUndefined();
  process.env.SKEIN_KV_CACHE = 'int4';
  expect(() => kvCacheFromEnv()).toThrow(/SKEIN_KV_CACHE must be one of auto, f32, f16, q8; got "int4"/);
});
