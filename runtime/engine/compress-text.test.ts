// Engine.compressText: the compress stage alone, in the model's worker as a remote node
// uses it (runtime/providers), giving back the kept text and nothing generated.
import { lastValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineFront } from './front.js';
import { createEngine } from './index.js';

const passage =
  'The Corner Bakery on Mill Street opens at seven in the morning. Its two bakers, Ana and Tom, start baking at four, and the first loaves sell out within an hour. ' +
  'The bakery makes white bread, rye bread and cinnamon rolls.\n\nQuestion: Who are the bakers?';

describe('Engine.compressText on skein-mini in its worker', () => {
  let engine: EngineFront;
  beforeAll(async () => {
    engine = await createEngine({ model: 'skein-mini' });
  }, 60_000);
  afterAll(() => engine?.close());

  it('keeps about the rate of the tokens, the question whole, and frees everything', async () => {
    const r = await lastValueFrom(engine.compressText(passage, { rate: 0.5 }));
    expect(r.to).toBeLessThan(r.from * 0.7);
    expect(r.text.endsWith('Question: Who are the bakers?')).toBe(true);
    expect(engine.tokenize(r.text).length).toBeLessThanOrEqual(r.to + 2);
    expect(r.decided).toMatchObject({ rate: 0.5 });
    expect(engine.stats()).toMatchObject({ kvBlocksUsed: 0, queueDepth: 0, runningSequences: 0 });
  }, 60_000);

  it('is cancelled by unsubscribing before it ends', async () => {
    const sub = engine.compressText(passage.repeat(6), { rate: 0.3 }).subscribe();
    sub.unsubscribe();
    await lastValueFrom(engine.compressText(passage, { rate: 1 }));
    expect(engine.stats()).toMatchObject({ queueDepth: 0, runningSequences: 0 });
  }, 60_000);
});
