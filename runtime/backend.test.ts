import { afterEach, describe, expect, it, vi } from 'vitest';
import { BadRequestError } from '../core/errors.js';

describe('SKEIN_BACKEND', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.resetModules();
  });

  it('an unknown name is a BadRequestError listing the valid names', async () => {
    vi.stubEnv('SKEIN_BACKEND', 'bogus');
    // A fresh module: the backend choice is made once per module instance.
    const { initBackend } = await import('./backend.js');
    const err = await initBackend().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as Error).message).toBe(
      'Bad request: SKEIN_BACKEND: "bogus" is not a backend; valid names: node-gpu, node, wasm, cpu (or unset it to pick the first that loads)',
    );
  });
});
