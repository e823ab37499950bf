/**
 * Picks the tfjs backend: the first that loads of tfjs-node-gpu, tfjs-node, wasm, cpu.
 * The node packages are optional: they download libtensorflow at install time, which
 * cannot happen everywhere, so they are detected with a dynamic import and never
 * required. `SKEIN_BACKEND` (node-gpu | node | wasm | cpu) overrides the choice.
 *
 * @example
 * const name = await initBackend(); // 'wasm' on a machine without tfjs-node
 */
import * as tf from '@tensorflow/tfjs-core';
import { BadRequestError, NotAvailableError } from '../core/errors.js';

export type BackendName = 'node-gpu' | 'node' | 'wasm' | 'cpu';

const ORDER: BackendName[] = ['node-gpu', 'node', 'wasm', 'cpu'];
let chosen: Promise<BackendName> | null = null;

async function tryBackend(name: BackendName): Promise<boolean> {
  try {
    switch (name) {
      case 'node-gpu':
        // A variable specifier keeps bundlers and tsc from requiring the optional package.
        await import(/* @vite-ignore */ String('@tensorflow/tfjs-node-gpu'));
        return await tf.setBackend('tensorflow');
      case 'node':
        await import(/* @vite-ignore */ String('@tensorflow/tfjs-node'));
        return await tf.setBackend('tensorflow');
      case 'wasm':
        await import('@tensorflow/tfjs-backend-wasm');
        return await tf.setBackend('wasm');
      case 'cpu':
        await import('@tensorflow/tfjs-backend-cpu');
        return await tf.setBackend('cpu');
    }
  } catch {
    return false;
  }
}

async function choose(log: boolean): Promise<BackendName> {
  const forced = process.env.SKEIN_BACKEND as BackendName | undefined;
  if (forced !== undefined && forced !== ('' as BackendName)) {
    if (!ORDER.includes(forced)) {
      throw new BadRequestError('SKEIN_BACKEND', `${JSON.stringify(forced)} is not a backend; valid names: ${ORDER.join(', ')} (or unset it to pick the first that loads)`);
    }
    if (!(await tryBackend(forced))) {
      const pkg = forced === 'node-gpu' ? '@tensorflow/tfjs-node-gpu' : forced === 'node' ? '@tensorflow/tfjs-node' : `@tensorflow/tfjs-backend-${forced}`;
      throw new NotAvailableError(`SKEIN_BACKEND=${forced}`, `${pkg} could not be loaded; install it or unset SKEIN_BACKEND`);
    }
    await tf.ready();
    if (log) process.stderr.write(`skein: backend ${forced} (SKEIN_BACKEND)\n`);
    return forced;
  }
  for (const name of ORDER) {
    if (await tryBackend(name)) {
      await tf.ready();
      if (log) process.stderr.write(`skein: backend ${name}\n`);
      return name;
    }
  }
  throw new Error('No tfjs backend could be loaded');
}

/** Initialises the backend once per process; later calls return the same choice. */
export function initBackend(options: { log?: boolean } = {}): Promise<BackendName> {
  chosen ??= choose(options.log ?? false);
  return chosen;
}
