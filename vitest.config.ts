import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['core/**/*.test.ts', 'operators/**/*.test.ts', 'runtime/**/*.test.ts', 'test/**/*.test.ts', 'playground/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The wasm backend is single-threaded per process; forks keep test files isolated.
    pool: 'forks',
  },
});
