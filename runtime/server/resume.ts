/**
 * What resuming an interrupted run needs, read from its record: the graph it ran, its
 * input, its seed (the run-start's, so every node's derived seed is the same again) and
 * the outputs of the top-level nodes that had ended before the server stopped. Outputs of
 * nodes inside fork branches or loop turns are not reused: those parts run again.
 *
 * @example
 * const plan = resumePlan(store.get(id)!); // then runGraph(plan.definition, plan.input, { seed: plan.seed, resume: { from: id, outputs: plan.outputs } })
 */
import { NotAvailableError } from '../../core/errors.js';
import type { RunRecord } from './runs.js';
import { RunNotResumableError } from './errors.js';

export interface ResumePlan {
  definition: unknown;
  input: Record<string, unknown>;
  seed: number | undefined;
  outputs: Record<string, unknown>;
}

export function resumePlan(record: RunRecord): ResumePlan {
  if (record.state !== 'interrupted') throw new RunNotResumableError(record.id, record.state);
  if (record.definition === undefined) throw new NotAvailableError(`resuming run ${record.id}`, 'its graph was not stored with it');
  // Keyed by graph-given node ids: no prototype to write through.
  const outputs: Record<string, unknown> = Object.create(null);
  let seed = record.seed;
  for (const e of record.events) {
    if (e.type === 'run-start') seed = e.seed;
    else if (e.type === 'node-end' && e.branch === undefined) outputs[e.node] = e.output;
  }
  return { definition: record.definition, input: record.input, seed, outputs };
}
