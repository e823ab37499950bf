/**
 * Operator tests on the subscription timeline (TestScheduler marbles, virtual time): the
 * fake engine streams one word per frame, so each test states when values arrive, when
 * the source is unsubscribed, and that nothing is left live after an early unsubscribe.
 */
import { Observable, of, throwError, timer, map, tap, toArray, lastValueFrom } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { BranchesFailedError, ModelOutputError, StageUnavailableError, ToolError, ToolRegistry } from '../core/index.js';
import type { OperatorEvent } from '../core/events.js';
import { expand, fork, generate, join, loop, outputs, parseOutline, route, skeleton, template, tool } from '../operators/index.js';
import { createFakeEngine, sotScript } from './fakes/fake-engine.js';

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

describe('template', () => {
  it('maps each value, binds plain objects by key and anything else to {{in}}', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-b|', { a: { q: 'why', n: { k: 1 } }, b: { q: ['x', 'y'], n: {} } });
      expectObservable(src.pipe(template('Q={{q}} k={{ n.k }}'), outputs())).toBe('-a-b|', { a: 'Q=why k=1', b: 'Q=x\ny k=' });
      expectSubscriptions(src.subscriptions).toBe('^---!');
      expectObservable(cold('a|', { a: 'hi' }).pipe(template('<{{in}}>'), outputs())).toBe('a|', { a: '<hi>' });
      // Its own stream: node-start and node-end (with the text) per value.
      expectObservable(cold('(a|)', { a: 'hi' }).pipe(template('<{{in}}>', { context: { node: 't' } }))).toBe('(se|)', {
        s: { type: 'node-start', node: 't' },
        e: { type: 'node-end', node: 't', output: '<hi>', metrics: {} },
      });
    });
  });

  it('never reads the prototype and fails on an unbound name', async () => {
    expect(await lastValueFrom(of({ a: {} }).pipe(template('{{a.constructor}}'), outputs()))).toBe('');
    await expect(lastValueFrom(of({}).pipe(template('{{missing}}')))).rejects.toThrow(/no value is bound/);
  });
});

describe('generate', () => {
  it('streams node-start, a text-delta per token and node-end with the reply on its own Observable', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: 'hi', reply: 'a b c' }] });
      const src = cold('-x|', { x: 'hi' });
      const out = src.pipe(generate({ engine, context: { node: 'g', branch: 'b1' } }));
      const delta = (text: string) => expect.objectContaining({ type: 'text-delta', node: 'g', branch: 'b1', text, tokenIds: [expect.any(Number)] });
      expectObservable(out).toBe('-sabc(e|)', {
        s: { type: 'node-start', node: 'g', branch: 'b1' },
        a: delta('a'),
        b: delta(' b'),
        c: delta(' c'),
        e: { type: 'node-end', node: 'g', branch: 'b1', output: 'a b c', metrics: { tokensIn: expect.any(Number), tokensOut: 3, ttftMs: 1, tokensPerSec: expect.any(Number) } },
      });
      expectSubscriptions(src.subscriptions).toBe('^-!');
      expectObservable(cold('-x|', { x: 'hi' }).pipe(generate({ engine }), outputs())).toBe('-----(r|)', { r: 'a b c' });
      flush();
      expect(engine.live).toBe(0);
    });
  });

  it('chained operators take the node-end of the one before as their input', async () => {
    const engine = createFakeEngine();
    const events = await lastValueFrom(of('hi').pipe(generate({ engine, context: { node: 'a' } }), generate({ engine, context: { node: 'b' } }), toArray()));
    expect(engine.requests[1]!.messages!.at(-1)!.content).toBe('echo: hi');
    expect(events.filter((e) => e.type === 'node-end').map((e) => [e.node, (e as { output: unknown }).output])).toEqual([['b', 'echo: echo: hi']]);
    expect(events.filter((e) => e.type === 'node-start').map((e) => e.node)).toEqual(['a', 'b']);
  });

  it('unsubscribing early cancels the generation and leaves nothing live', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: /./, reply: 'one two three four five' }] });
      const src = cold('-x-', { x: 'hi' });
      expectObservable(src.pipe(generate({ engine })), '---!').toBe('-sa', {
        s: { type: 'node-start', node: 'generate' },
        a: expect.objectContaining({ type: 'text-delta', text: 'one' }),
      });
      expectSubscriptions(src.subscriptions).toBe('^--!');
      flush();
      expect(engine.cancelled).toBe(1);
      expect(engine.live).toBe(0);
      expect(engine.stats().kvBlocksUsed).toBe(0);
    });
  });

  it('renders chat with system prompt, pins the seed, and passes supported stages', async () => {
    const engine = createFakeEngine({ supportedStages: ['skipLayers'] });
    const out = await lastValueFrom(
      of({ prompt: 'hello' }).pipe(
        generate({ engine, system: 'Be terse.', assistantPrefix: 'Sure:', stages: { skipLayers: { targetSpeedup: 2 } }, context: { seed: 9, owner: 'r1' } }),
        outputs(),
      ),
    );
    expect(out).toBe('Sure:echo: hello');
    expect(engine.requests[0]).toMatchObject({
      messages: [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: 'hello' }],
      assistantPrefix: 'Sure:',
      sampling: { seed: 9 },
      stages: { skipLayers: { targetSpeedup: 2 } },
      owner: 'r1',
    });
  });

  it('fails with the engine\'s StageUnavailableError for a stage it does not run, before any work', async () => {
    const engine = createFakeEngine();
    const run = lastValueFrom(of('x').pipe(generate({ engine, stages: { compress: { rate: 0.5 } } })));
    await expect(run).rejects.toBeInstanceOf(StageUnavailableError);
    await expect(run).rejects.toThrow(/Stage compress is not available for model fake: the fake engine does not run it/);
    expect(engine.started).toBe(0);
  });
});

describe('skeleton and expand (Skeleton-of-Thought)', () => {
  it('parses numbered outlines and stops at broken numbering', () => {
    expect(parseOutline('1. Tools.\n2. **Recipes**\n\n3) Practice\n5. skipped')).toEqual(['Tools', 'Recipes', 'Practice']);
    expect(parseOutline('Sure! Here it is:\n1. a\n2. b\nThat is all.')).toEqual(['a', 'b']);
    expect(parseOutline('1. Choose a spot\n2. Plan it out\n3. Start small\n4. plan it out\n5. Water')).toEqual(['Choose a spot', 'Plan it out', 'Start small']);
    expect(parseOutline('1. a\n2. b\n3. c', 2)).toEqual(['a', 'b']);
    expect(parseOutline('no list')).toEqual([]);
    expect(parseOutline('1. a\n2. Use tools wisely  3. Sleep well\n4. d')).toEqual(['a', 'Use tools wisely', 'Sleep well', 'd']);
    expect(parseOutline('1. Bake at 350 2. degrees\n2. b')).toEqual(['Bake at 350 2. degrees', 'b']);
  });

  it('asks for a skeleton with the SoT prompt and the "1." prefix', async () => {
    const engine = createFakeEngine({ script: sotScript(['A', 'B']) });
    const sk = await lastValueFrom(of('How to cook?').pipe(skeleton({ engine }), outputs()));
    expect(sk).toEqual({ question: 'How to cook?', outline: '1. A\n2. B', points: ['A', 'B'] });
    expect(engine.requests[0]!.assistantPrefix).toBe('1.');
    expect(engine.prompts[0]).toContain("You're an organizer responsible for only giving the skeleton");
    // A point the token limit cut short is left out; a lone point is kept even then.
    const cut = createFakeEngine({ script: sotScript(['Choose a spot', 'Plan it out', 'Start building and make sure someone helps']) });
    const short = await lastValueFrom(of('q').pipe(skeleton({ engine: cut, sampling: { maxTokens: 10 } }), outputs()));
    expect(short).toMatchObject({ points: ['Choose a spot', 'Plan it out'] });
    expect(cut.requests[0]!.sampling?.maxTokens).toBe(10);
    const whole = await lastValueFrom(of('q').pipe(skeleton({ engine: cut }), outputs()));
    expect(whole).toMatchObject({ points: ['Choose a spot', 'Plan it out', 'Start building and make sure someone helps'] });
    const lone = createFakeEngine({ script: sotScript(['Choose a good sunny spot near water']) });
    expect(await lastValueFrom(of('q').pipe(skeleton({ engine: lone, sampling: { maxTokens: 3 } }), outputs()))).toMatchObject({ points: ['Choose a good'] });
    const bad = createFakeEngine({ script: [{ match: /./, reply: '\n\nSorry, I cannot.' }] });
    await expect(lastValueFrom(of('q').pipe(skeleton({ engine: bad })))).rejects.toBeInstanceOf(ModelOutputError);
  });

  it('expands points in parallel within the bound and joins them in point order', () => {
    scheduler().run(({ cold, expectObservable, flush }) => {
      const engine = createFakeEngine({
        delayMs: 1,
        script: [
          // Point 1 is the slowest, so completion order differs from point order.
          { match: /writing of point 1\./, reply: ' x x x x x' },
          { match: /writing of point \d\./, reply: ' y' },
        ],
      });
      const sk = { question: 'Q', outline: '1. a\n2. b\n3. c', points: ['a', 'b', 'c'] };
      const out = cold('x|', { x: sk }).pipe(expand({ engine, concurrency: 2 }), outputs());
      expectObservable(out).toBe('------(r|)', { r: ['1. a x x x x x', '2. b y', '3. c y'] });
      flush();
      expect(engine.peakLive).toBe(2);
      expect(engine.requests.map((r) => r.assistantPrefix)).toEqual(['1. a', '2. b', '3. c']);
      expect(engine.prompts[1]).toContain('Continue and only continue the writing of point 2.');
      expect(engine.live).toBe(0);
    });
  });

  it('a failed point is a branch-error and the others go on; early unsubscribe cancels all points', () => {
    scheduler().run(({ cold, expectObservable, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: /point 2\./, error: new Error('boom'), failAfter: 1 }, { match: /./, reply: ' ok' }] });
      const events: OperatorEvent[] = [];
      const sk = { question: 'Q', outline: '1. a\n2. b\n3. c', points: ['a', 'b', 'c'] };
      const out = cold('x|', { x: sk }).pipe(expand({ engine, context: { node: 'ex' } }), tap((e) => events.push(e)), outputs());
      expectObservable(out).toBe('--(r|)', { r: ['1. a ok', '3. c ok'] });
      flush();
      expect(events.filter((e) => e.type === 'branch-error')).toEqual([{ type: 'branch-error', node: 'ex', branch: 'ex#2', error: { name: 'Error', message: 'boom', code: 'internal' } }]);
      // Each point streams under its branch id; expand's own node-end sums its calls.
      expect(events.filter((e) => e.type === 'node-start').map((e) => e.branch)).toEqual([undefined, 'ex#1', 'ex#2', 'ex#3']);
      expect(events.at(-1)).toMatchObject({ type: 'node-end', node: 'ex', metrics: { tokensOut: 2 } });

      const slow = createFakeEngine({ delayMs: 1, script: [{ match: /./, reply: 'a b c d e f' }] });
      expectObservable(cold('x|', { x: sk }).pipe(expand({ engine: slow }), outputs()), '--!').toBe('--');
      flush();
      expect(slow.started).toBe(3);
      expect(slow.cancelled).toBe(3);
      expect(slow.live).toBe(0);
    });
  });

  it('fails with BranchesFailedError only when every point fails', async () => {
    const engine = createFakeEngine({ script: [{ match: /./, error: new Error('down') }] });
    const sk = { question: 'Q', outline: '1. a', points: ['a'] };
    await expect(lastValueFrom(of(sk).pipe(expand({ engine }), outputs()))).rejects.toBeInstanceOf(BranchesFailedError);
  });
});

describe('fork and join', () => {
  it('fork runs branches concurrently; join modes combine in declared order', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const branches = { a: map((s: string) => `${s}-a`), b: (s: Observable<string>) => s.pipe(map((v) => [v, v])) };
      const src = () => cold('x|', { x: 'v' });
      expectObservable(src().pipe(fork<string, unknown>(branches), join('concat', { separator: '+' }), outputs())).toBe('-(r|)', { r: 'v-a+v+v' });
      expectObservable(src().pipe(fork<string, unknown>(branches), join('list'), outputs())).toBe('-(r|)', { r: ['v-a', 'v', 'v'] });
      expectObservable(src().pipe(fork<string, unknown>(branches), join('object'), outputs())).toBe('-(r|)', { r: { a: 'v-a', b: ['v', 'v'] } });
    });
  });

  it('join first takes the first branch to finish and unsubscribes the rest', () => {
    scheduler().run(({ cold, expectObservable, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: 'slow', reply: 'a b c d e f g' }, { match: /./, reply: 'quick' }] });
      const out = cold('x|', { x: 'go' }).pipe(
        fork<string, string>({
          slow: (s) => s.pipe(map((v) => `slow ${v}`), generate({ engine })),
          fast: (s) => s.pipe(map((v) => `fast ${v}`), generate({ engine })),
        }),
        join('first'),
        outputs(),
      );
      expectObservable(out).toBe('--(r|)', { r: 'quick' });
      flush();
      expect(engine.cancelled).toBe(1);
      expect(engine.live).toBe(0);
    });
  });

  it('a failing branch does not stop its sibling; all failing fails the join', async () => {
    const events = await lastValueFrom(
      of(1).pipe(fork<number, number>({ bad: () => throwError(() => new Error('nope')), good: map((v) => v + 1) }), join('list'), toArray()),
    );
    expect(events.at(-1)).toMatchObject({ type: 'node-end', node: 'join', output: [2] });
    expect(events.find((e) => e.type === 'branch-error')).toMatchObject({ node: 'fork', branch: 'bad', error: { message: 'nope' } });
    await expect(lastValueFrom(of(1).pipe(fork({ bad: () => throwError(() => new Error('x')) }), join('concat')))).rejects.toBeInstanceOf(BranchesFailedError);
  });

  it('unsubscribing early from a fork cancels every branch in flight', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: /./, reply: 'one two three four five' }] });
      const src = cold('-x-', { x: 'go' });
      const out = src.pipe(fork<string, string>({ a: generate({ engine, system: 'A' }), b: generate({ engine, system: 'B' }) }), outputs());
      expectObservable(out, '---!').toBe('---');
      expectSubscriptions(src.subscriptions).toBe('^--!');
      flush();
      expect(engine.started).toBe(2);
      expect(engine.cancelled).toBe(2);
      expect(engine.live).toBe(0);
    });
  });

  it('an unknown join mode is an error, never a default', () => {
    expect(() => join('zip' as never)).toThrow(/unknown join mode "zip"/);
  });
});

describe('route', () => {
  it('routes by value with declarative conditions and a default', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const r = route<string>({ branches: [{ name: 'math', when: { regex: '\\d+\\s*[+*]' } }, { name: 'greet', when: { startsWith: 'hello', ignoreCase: true } }], default: 'other' });
      expectObservable(cold('a-b-c|', { a: '2 + 2', b: 'Hello there', c: 'why' }).pipe(r, outputs())).toBe('a-b-c|', {
        a: { branch: 'math', value: '2 + 2' },
        b: { branch: 'greet', value: 'Hello there' },
        c: { branch: 'other', value: 'why' },
      });
    });
  });

  it('routes by a model answer (the SoT router) and fails without a match or default', async () => {
    const engine = createFakeEngine({ script: sotScript() });
    const r = await lastValueFrom(of('List ways to relax').pipe(route({ by: 'model', engine, branches: [{ name: 'sot', when: { startsWith: 'A' } }] }), outputs()));
    expect(r).toEqual({ branch: 'sot', value: 'List ways to relax', answer: 'A' });
    expect(engine.prompts[0]).toContain('Question: List ways to relax');
    const c = createFakeEngine({ script: [{ match: /./, reply: 'C' }] });
    await expect(lastValueFrom(of('2+2?').pipe(route({ by: 'model', engine: c, branches: [{ name: 'sot', when: { startsWith: 'A' } }] })))).rejects.toBeInstanceOf(ModelOutputError);
  });
});

describe('early unsubscribe of model-calling stages', () => {
  it('skeleton and route by model cancel their generation and leave nothing live', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: /./, reply: 'A long answer of many words' }] });
      const q1 = cold('-x-', { x: 'How do I cook?' });
      expectObservable(q1.pipe(skeleton({ engine }), outputs()), '---!').toBe('---');
      expectSubscriptions(q1.subscriptions).toBe('^--!');
      const q2 = cold('-x-', { x: 'Why?' });
      expectObservable(q2.pipe(route({ by: 'model', engine, branches: [{ name: 'sot', when: { startsWith: 'A' } }] }), outputs()), '---!').toBe('---');
      expectSubscriptions(q2.subscriptions).toBe('^--!');
      flush();
      expect(engine.started).toBe(2);
      expect(engine.cancelled).toBe(2);
      expect(engine.live).toBe(0);
    });
  });
});

describe('loop', () => {
  it('runs turns until the stop condition or maxTurns', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const body = (v: string) => cold('-n|', { n: `${v}+` });
      expectObservable(cold('x|', { x: 's' }).pipe(loop({ body, maxTurns: 3 }), outputs())).toBe('------(r|)', { r: 's+++' });
      expectObservable(cold('x|', { x: 's' }).pipe(loop({ body, maxTurns: 10, stop: { regex: '\\+{2}$' } }), outputs())).toBe('----(r|)', { r: 's++' });
    });
  });

  it('unsubscribing mid-turn stops the loop and its generation', () => {
    scheduler().run(({ cold, expectObservable, flush }) => {
      const engine = createFakeEngine({ delayMs: 1, script: [{ match: /./, reply: 'w w w w' }] });
      const out = cold('x|', { x: 'go' }).pipe(loop({ body: (v) => of(v).pipe(generate({ engine })), maxTurns: 5 }), outputs());
      expectObservable(out, '-------!').toBe('--------');
      flush();
      expect(engine.started).toBe(2);
      expect(engine.live).toBe(0);
    });
  });
});

describe('tool', () => {
  it('calls a registered function (value, promise or observable) and wraps failures', async () => {
    const tools = new ToolRegistry()
      .register('upper', (s) => String(s).toUpperCase())
      .register('later', async (s, { args }) => `${s}${args.suffix}`)
      .register('stream', () => of(1, 2, 3))
      .register('bad', () => {
        throw new Error('kaput');
      });
    expect(await lastValueFrom(of('a', 'b').pipe(tool('upper', { registry: tools }), outputs(), toArray()))).toEqual(['A', 'B']);
    expect(await lastValueFrom(of('a').pipe(tool('later', { registry: tools, args: { suffix: '!' } }), outputs()))).toBe('a!');
    expect(await lastValueFrom(of(0).pipe(tool('stream', { registry: tools }), outputs()))).toBe(3);
    await expect(lastValueFrom(of(0).pipe(tool('bad', { registry: tools })))).rejects.toBeInstanceOf(ToolError);
  });

  it('aborts the tool when unsubscribed early', () => {
    scheduler().run(({ cold, expectObservable, flush }) => {
      let aborted = false;
      const tools = new ToolRegistry().register('wait', (_v, { signal }) => {
        signal.addEventListener('abort', () => (aborted = true));
        return timer(5).pipe(map(() => 'done'));
      });
      expectObservable(cold('x|').pipe(tool('wait', { registry: tools }), outputs()), '--!').toBe('--');
      flush();
      expect(aborted).toBe(true);
    });
  });
});
