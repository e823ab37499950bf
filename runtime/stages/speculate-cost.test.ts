/**
 * The heads' cost model weighs rows by the forward measured on this machine (HeadsLibrary),
 * not by the table the heads were shaped with elsewhere, unless SKEIN_MEASURED_COSTS=0.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { initBackend } from '../backend.js';
import { writeHeads } from '../heads/files.js';
import { randomModel } from '../model/random.js';
import { HeadsLibrary } from './speculate.js';

const D = 32;
const V = 96;

beforeAll(async () => {
  await initBackend();
});
afterEach(() => {
  delete process.env.SKEIN_MEASURED_COSTS;
});

describe('the speculate stage\'s cost model', () => {
  it('is measured here once per engine, and is the heads\' own table with SKEIN_MEASURED_COSTS=0', () => {
    const model = randomModel({ hiddenSize: D, numHeads: 4, numKvHeads: 2, numLayers: 2, vocabSize: V }, 1);
    try {
      const dir = tempDir('skein-heads-cost-');
      writeHeads(dir, {
        // A table no forward here matches: two rows at seven one-row forwards.
        meta: { kind: 'medusa', numHeads: 1, hiddenSize: D, vocabSize: V, tree: [[0]], gateThreshold: null, paths: [{ path: [0], share: 0.4 }], forwardCost: { rows: [1, 2], relative: [1, 7] } },
        weights: [new Float32Array(D * D)],
        biases: [new Float32Array(D)],
      });
      const library = new HeadsLibrary(model, { name: 'random' });
      const measured = library.shape({ heads: dir, mode: 'medusa' }).rowCost!;
      expect(measured(1)).toBe(1);
      expect(measured(2)).toBeLessThan(4);
      expect(library.shape({ heads: dir, mode: 'medusa' }).rowCost).toBe(measured); // measured once
      library.dispose();
      process.env.SKEIN_MEASURED_COSTS = '0';
      const own = new HeadsLibrary(model, { name: 'random' });
      expect(own.shape({ heads: dir, mode: 'medusa' }).rowCost!(2)).toBe(7);
      own.dispose();
    } finally {
      model.dispose();
    }
  });
});
