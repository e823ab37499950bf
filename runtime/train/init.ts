/**
 * Initial parameters: N(0, 0.02) for matrices, with the residual-stream output
 * projections (o_proj, down_proj) scaled by 1/√(2·layers) as in GPT-2 so the residual
 * sum starts with unit-order variance; ones for RMSNorm weights.
 *
 * @example
 * initParams(table, flat, Rng.fromSeed(1));
 */
import type { ParamTable } from './config.js';
import type { Rng } from './rng.js';

export function initParams(table: ParamTable, flat: Float32Array, rng: Rng, std = 0.02): void {
  const layers = table.entries.filter((e) => e.name.endsWith('.wq')).length;
  for (const e of table.entries) {
    const end = e.offset + e.size;
    if (!e.decay) {
      flat.fill(1, e.offset, end);
      continue;
    }
    const s = e.name.endsWith('.wo') || e.name.endsWith('.wDown') ? std / Math.sqrt(2 * Math.max(1, layers)) : std;
    for (let i = e.offset; i < end; i++) flat[i] = rng.normal() * s;
  }
}
