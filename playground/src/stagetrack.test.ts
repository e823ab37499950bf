import { describe, expect, it } from 'vitest';
import { describeStage } from './stagetrack.js';

describe('describeStage', () => {
  it('says what a stage did, decided and cost', () => {
    expect(describeStage({ t: 9, stage: 'compress', decided: { rate: 0.5, keepPhrases: 1 }, figures: { tokensIn: 412, tokensOut: 137, wallMs: 12.4 } })).toEqual({
      did: 'compress 412→137 tok',
      decided: 'rate=0.5, keepPhrases=1',
      cost: '12 ms',
    });
  });

  it('names every figure a stage reports', () => {
    const words = describeStage({
      t: 1,
      stage: 'skipLayers',
      decided: { mode: 'self-speculative' },
      figures: { layersRun: 12, draftsProposed: 40, draftsAccepted: 31, wallMs: 1500 },
    });
    expect(words.did).toBe('skipLayers 12 layers 31/40 drafts');
    expect(words.cost).toBe('1.50 s');
    expect(describeStage({ t: 1, stage: 'kvShare', decided: {}, figures: { kvBlocksShared: 3, wallMs: 2 } })).toEqual({ did: 'kvShare 3 blocks shared', decided: '', cost: '2 ms' });
    expect(describeStage({ t: 1, stage: 'prunedPrefill', decided: {}, figures: { prunedTokens: 80, wallMs: 2 } }).did).toBe('prunedPrefill 80 pruned');
  });
});
