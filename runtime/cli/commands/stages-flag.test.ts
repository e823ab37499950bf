import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../../core/errors.js';
import { parseStagesFlag, withStages } from './stages-flag.js';

describe('--stages', () => {
  it('takes a generate node\'s stages object', () => {
    expect(parseStagesFlag('{"skipLayers":{"targetSpeedup":2,"mode":"self-speculative"}}')).toEqual({
      skipLayers: { targetSpeedup: 2, mode: 'self-speculative' },
    });
    expect(parseStagesFlag('{"prunedPrefill":{"keepRatio":[0.8,0.5],"layers":[3,6]}}')).toEqual({
      prunedPrefill: { keepRatio: [0.8, 0.5], layers: [3, 6] },
    });
  });

  it('names the offending field with its JSON pointer', () => {
    expect(() => parseStagesFlag('{"skipLayers":{"targetSpeedup":2,"mode":"fast"}}')).toThrow(BadRequestError);
    expect(() => parseStagesFlag('{"skipLayers":{"targetSpeedup":2,"mode":"fast"}}')).toThrow(/--stages\/skipLayers\/mode/);
    expect(() => parseStagesFlag('{"skipLayer":{}}')).toThrow(/'skipLayer'/);
    expect(() => parseStagesFlag('{oops')).toThrow(/--stages.*not JSON/);
  });

  it('merges into every model-calling node of a graph, flag values winning', () => {
    const graph = {
      name: 'g',
      nodes: [
        { id: 'in', kind: 'input' },
        { id: 'a', kind: 'generate', stages: { compress: { rate: 0.5 }, skipLayers: { targetSpeedup: 3 } } },
        { id: 'b', kind: 'skeleton' },
      ],
    };
    const out = withStages(graph, { skipLayers: { targetSpeedup: 2 } }) as typeof graph;
    expect(out.nodes[0]).toEqual({ id: 'in', kind: 'input' });
    expect(out.nodes[1]!.stages).toEqual({ compress: { rate: 0.5 }, skipLayers: { targetSpeedup: 2 } });
    expect((out.nodes[2] as { stages?: unknown }).stages).toEqual({ skipLayers: { targetSpeedup: 2 } });
    expect(graph.nodes[1]).toMatchObject({ stages: { skipLayers: { targetSpeedup: 3 } } });
  });
});
