/**
 * Loads the dataflow core (core/index.ts) for the server. It is loaded on first use so
 * that the HTTP layer can be built and tested with a double while the core evolves.
 *
 * @example
 * const { validateGraph } = await loadDataflow();
 */
import { NotAvailableError } from '../../core/errors.js';
import type { Dataflow } from './types.js';

// A variable specifier: resolved at run time by tsx, so type-checking does not need the
// core's index before it exists.
const CORE = '../../core/index.js';

export async function loadDataflow(): Promise<Dataflow> {
  try {
    return (await import(/* @vite-ignore */ CORE)) as Dataflow;
  } catch (err) {
    throw new NotAvailableError('dataflow core', (err as Error).message);
  }
}
