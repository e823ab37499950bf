import { lastValueFrom, of } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { BadRequestError, StageUnavailableError } from '../core/errors.js';
import { createFakeEngine } from '../test/fakes/fake-engine.js';
import { compressPrompt } from './compressPrompt.js';
import { inputs as outputs } from './internal/operate.js';

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

describe('compressPrompt', () => {
  it('sends the prompt with stages.compress set and emits the answer', async () => {
    const engine = createFakeEngine({ supportedStages: ['compress'], script: [{ match: /green door/, reply: '85448' }] });
    const out = await lastValueFrom(
      of({ prompt: 'A long text about the green door.', question: 'What is the number of the green door?', system: 'Be brief.' }).pipe(
        compressPrompt(engine, { rate: 0.5, keep: ['green door'], sampling: { maxTokens: 8 }, context: { seed: 3, owner: 'run1' } }),
        outputs(),
      ),
    );
    expect(out).toBe('85448');
    expect(engine.requests).toHaveLength(1);
    expect(engine.requests[0]).toMatchObject({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'A long text about the green door.\n\nWhat is the number of the green door?' },
      ],
      sampling: { maxTokens: 8, seed: 3 },
      stages: { compress: { rate: 0.5, keep: ['green door', 'What is the number of the green door?'] } },
      owner: 'run1',
    });
  });

  it('a plain string keeps its other stages and adds no keep list', async () => {
    const engine = createFakeEngine({ supportedStages: ['compress', 'skipLayers'] });
    await lastValueFrom(of('hello there').pipe(compressPrompt(engine, { rate: 0.33, chat: false, stages: { skipLayers: { targetSpeedup: 2 } } })));
    expect(engine.requests[0]).toMatchObject({ prompt: 'hello there', stages: { compress: { rate: 0.33 }, skipLayers: { targetSpeedup: 2 } } });
    expect(engine.requests[0]!.stages!.compress!.keep).toBeUndefined();
  });

  it('unsubscribing early cancels the generation and leaves nothing live', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, supportedStages: ['compress'], script: [{ match: /./, reply: 'one two three four five' }] });
      const src = cold('-x-', { x: 'a prompt' });
      expectObservable(src.pipe(compressPrompt(engine, { rate: 0.5 }), outputs()), '---!').toBe('---');
      expectSubscriptions(src.subscriptions).toBe('^--!');
      flush();
      expect(engine.started).toBe(1);
      expect(engine.cancelled).toBe(1);
      expect(engine.live).toBe(0);
    });
  });

  it('one generation per value, in order', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const engine = createFakeEngine({ delayMs: 1, supportedStages: ['compress'], script: [{ match: 'first', reply: 'A' }, { match: 'second', reply: 'B' }] });
      const src = cold('-a-b|', { a: 'first', b: 'second' });
      expectObservable(src.pipe(compressPrompt(engine, { rate: 0.5 }), outputs())).toBe('---a-(b|)', { a: 'A', b: 'B' });
    });
  });

  it('refuses an engine without the stage, and a bad rate, without calling the engine', async () => {
    const plain = createFakeEngine();
    await expect(lastValueFrom(of('x').pipe(compressPrompt(plain, { rate: 0.5 })))).rejects.toBeInstanceOf(StageUnavailableError);
    const engine = createFakeEngine({ supportedStages: ['compress'] });
    await expect(lastValueFrom(of('x').pipe(compressPrompt(engine, { rate: 0 })))).rejects.toBeInstanceOf(BadRequestError);
    expect(plain.started + engine.started).toBe(0);
  });
});
