/**
 * Running graphs end to end on the fake engine: every example graph, cancellation (no
 * generation left live), branch errors that spare siblings, fatal errors, seeds, events,
 * replay, tools and the CLI's progress view.
 */
import { readFileSync } from 'node:fs';
import { firstValueFrom, lastValueFrom, map, take, toArray, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import {
  ToolRegistry,
  compileGraph,
  deriveSeed,
  parseEvents,
  parseGraph,
  printGraph,
  replayEvents,
  runGraph,
  saveEvents,
  type GraphSpec,
  type NodeSpecOf,
  type RunEvent,
} from '../operators/index.js';
import { ProgressView } from '../core/progress.js';
import { createFakeEngine, sotScript } from './fakes/fake-engine.js';
import type { Engine, GenerateEvent } from '../core/engine.js';

const graph = (name: string): GraphSpec => parseGraph(JSON.parse(readFileSync(new URL(`../graphs/${name}.json`, import.meta.url), 'utf8')), name);
const collect = (run$: Observable<RunEvent>) => lastValueFrom(run$.pipe(toArray()));
const endOf = (events: RunEvent[]) => events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
const ofType = <T extends RunEvent['type']>(events: RunEvent[], type: T) => events.filter((e): e is Extract<RunEvent, { type: T }> => e.type === type);
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('example graphs on the fake engine', () => {
  it('chat: streams deltas and ends with the answer and usage', async () => {
    const engine = createFakeEngine({ script: [{ match: 'Why is the sky blue?', reply: 'Rayleigh scattering of sunlight.' }] });
    const events = await collect(runGraph(graph('chat'), { question: 'Why is the sky blue?' }, { engine, seed: 3, runId: 'r1' }));
    expect(events[0]).toMatchObject({ type: 'run-start', runId: 'r1', graph: 'chat', seed: 3, seq: 0 });
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    expect(ofType(events, 'text-delta').map((e) => e.text).join('')).toBe('Rayleigh scattering of sunlight.');
    expect(ofType(events, 'text-delta')[0]).toMatchObject({ node: 'answer', tokenIds: [expect.any(Number)] });
    const end = endOf(events);
    expect(end).toMatchObject({ status: 'ok', output: { answer: 'Rayleigh scattering of sunlight.' } });
    expect(end.usage.answer).toMatchObject({ tokensOut: 4, tokensIn: expect.any(Number), wallMs: expect.any(Number) });
    expect(end.usage.answer!.tokensIn).toBeGreaterThan(0);
    expect(engine.requests[0]).toMatchObject({ owner: 'r1', sampling: { seed: deriveSeed(3, 'answer') } });
    expect(engine.live).toBe(0);
  });

  it('sot: router A → skeleton → parallel expand → join in order', async () => {
    const engine = createFakeEngine({ script: sotScript(), delayMs: 1 });
    const events = await collect(runGraph(graph('sot'), { question: 'How do I learn to cook?' }, { engine, seed: 1 }));
    const end = endOf(events);
    expect(end.status).toBe('ok');
    expect(String(end.output!.answer).split('\n')).toEqual([
      '1. Gather basic tools matters because it builds skill (point 1).',
      '2. Learn simple recipes matters because it builds skill (point 2).',
      '3. Practice every week matters because it builds skill (point 3).',
    ]);
    expect(engine.peakLive).toBe(3);
    const branches = new Set(ofType(events, 'text-delta').map((e) => e.branch));
    expect(branches).toEqual(new Set(['router.sot', 'router.sot/expand#1', 'router.sot/expand#2', 'router.sot/expand#3', undefined]));
    expect(ofType(events, 'node-start').map((e) => e.node)).not.toContain('direct');
    expect(engine.live).toBe(0);
  });

  it('sot: the streamed skeleton and points read like their results, starting with the pre-filled "1." / "2. point"', async () => {
    const engine = createFakeEngine({ script: sotScript(), delayMs: 1 });
    const events = await collect(runGraph(graph('sot'), { question: 'How do I learn to cook?' }, { engine, seed: 1 }));
    const streamed = (branch: string) => ofType(events, 'text-delta').filter((e) => e.branch === branch).map((e) => e.text).join('');
    const skeletonEnd = ofType(events, 'node-end').find((e) => e.node === 'skeleton')!;
    expect(streamed('router.sot')).toBe((skeletonEnd.output as { outline: string }).outline);
    const points = String(endOf(events).output!.answer).split('\n');
    points.forEach((point, k) => expect(streamed(`router.sot/expand#${k + 1}`)).toBe(point));
  });

  it('sot: router C → direct answer, the skeleton never runs', async () => {
    const engine = createFakeEngine({ script: [{ match: /one letter: A, B or C/, reply: 'C' }, { match: /./, reply: '4' }] });
    const events = await collect(runGraph(graph('sot'), { question: 'What is 2+2?' }, { engine, seed: 1 }));
    expect(endOf(events)).toMatchObject({ status: 'ok', output: { answer: '4' } });
    expect(ofType(events, 'node-start').map((e) => e.node)).toEqual(['question', 'router', 'direct', 'answer', 'out']);
    expect(ofType(events, 'node-end').find((e) => e.node === 'router')!.output).toEqual({ branch: 'direct', answer: 'C' });
  });

  it('debate: two agents argue in a loop until one concedes, then the judge decides', async () => {
    let bobTurns = 0;
    const engine = createFakeEngine({
      script: [
        { match: 'impartial debate judge', reply: 'Alice, because her points stood.' },
        { match: 'You are Alice', reply: 'Tea calms the mind.' },
        { match: 'You are Bob', reply: () => (++bobTurns >= 2 ? 'Fine, I concede.' : 'Coffee wakes you up.') },
      ],
    });
    const events = await collect(runGraph(graph('debate'), { topic: 'Tea beats coffee' }, { engine, seed: 5 }));
    const end = endOf(events);
    expect(end.status).toBe('ok');
    expect(end.output!.verdict).toBe('Alice, because her points stood.');
    expect(String(end.output!.transcript).match(/^Bob: /gm)).toHaveLength(2);
    const aliceStarts = ofType(events, 'node-start').filter((e) => e.node === 'alice');
    expect(aliceStarts.map((e) => e.branch)).toEqual(['rounds#1', 'rounds#2']);
    // Each turn samples with its own seed, derived from the run seed.
    const aliceSeeds = engine.requests.filter((r) => r.messages?.[0]?.content.startsWith('You are Alice')).map((r) => r.sampling?.seed);
    expect(new Set(aliceSeeds).size).toBe(2);
    expect(end.usage.alice!.tokensOut).toBe(8);
  });

  it('debate: the transcript stays bounded however long the turns, so every prompt stays small', async () => {
    const long = (who: string) => () => `${who} says ${'something rather long '.repeat(12)}`.trim();
    const engine = createFakeEngine({
      script: [
        { match: 'impartial debate judge', reply: 'Bob.' },
        { match: 'You are Alice', reply: long('Alice') },
        { match: 'You are Bob', reply: long('Bob') },
      ],
    });
    const spec = graph('debate');
    const rounds = spec.nodes.find((n) => n.id === 'rounds') as NodeSpecOf<'loop'>;
    const events = await collect(runGraph({ ...spec, nodes: spec.nodes.map((n) => (n.id === 'rounds' ? { ...rounds, maxTurns: 8 } : n)) }, { topic: 'Tea' }, { engine }));
    const end = endOf(events);
    expect(end.status).toBe('ok');
    const transcript = String(end.output!.transcript);
    expect(transcript.length).toBeLessThanOrEqual(700);
    expect(transcript).toMatch(/^Alice: /);
    expect(transcript).toMatch(/\nBob: Bob says [^\n]*$/);
    // Unbounded, the eighth round's prompts would carry seven rounds (over 2,500 characters).
    const longest = Math.max(...engine.requests.map((r) => r.messages!.map((m) => m.content).join('').length));
    expect(longest).toBeLessThan(1400);
    expect(engine.requests.at(-1)!.messages!.at(-1)!.content).toContain('on the motion "Tea"');
  });

  it('a model error inside a loop turn names the failing node in run-end and the progress view', async () => {
    const engine = createFakeEngine({
      script: [
        { match: 'You are Alice', reply: 'Tea calms the mind.' },
        { match: 'You are Bob', error: new Error('model fell over') },
      ],
    });
    const events = await collect(runGraph(graph('debate'), { topic: 'Tea beats coffee' }, { engine }));
    // Blame stays with bob, not with the loop that rethrows its error.
    expect(endOf(events)).toMatchObject({ status: 'error', error: { message: 'model fell over', node: 'bob', code: 'internal' } });
    const view = new ProgressView();
    const changed = events.map((e) => view.apply(e));
    expect(changed.at(-1)).toMatch(/^✗ bob \[rounds#1\].*model fell over/);
    expect(view.lines().find((l) => l.includes('rounds '))).toMatch(/^…/);
  });

  it('compress-qa: passes the compression stage to an engine that runs it', async () => {
    const engine = createFakeEngine({ supportedStages: ['compress'] });
    const events = await collect(runGraph(graph('compress-qa'), { passage: 'Long text. '.repeat(50), question: 'What is it?' }, { engine }));
    expect(endOf(events).status).toBe('ok');
    expect(engine.requests[0]!.stages).toEqual({ compress: { rate: 0.7, keep: ['Question:', 'Answer:'] } });
  });

  it('compress-qa: an engine without the stage ends the run with StageUnavailableError at that node', async () => {
    const engine = createFakeEngine();
    const end = endOf(await collect(runGraph(graph('compress-qa'), { passage: 'p', question: 'q' }, { engine })));
    expect(end).toMatchObject({
      status: 'error',
      error: { name: 'StageUnavailableError', code: 'not_available', node: 'answer', message: expect.stringContaining('Stage compress is not available for model fake') },
    });
    expect(engine.started).toBe(0);
  });

  it('perspectives: fork runs both branches concurrently and joins an object', async () => {
    const engine = createFakeEngine({ delayMs: 1, script: [{ match: 'optimist', reply: 'Bright.' }, { match: 'sceptic', reply: 'Doubtful.' }] });
    const end = endOf(await collect(runGraph(graph('perspectives'), { question: 'AI?' }, { engine })));
    expect(end.output).toEqual({ views: { optimist: 'Bright.', sceptic: 'Doubtful.' } });
    expect(engine.peakLive).toBe(2);
  });
});

describe('branch errors and fatal errors', () => {
  it('a failing branch emits branch-error and its sibling goes on', async () => {
    const engine = createFakeEngine({ delayMs: 1, script: [{ match: 'sceptic', error: new Error('GPU on fire'), failAfter: 1 }, { match: /./, reply: 'Fine and good.' }] });
    const events = await collect(runGraph(graph('perspectives'), { question: 'AI?' }, { engine }));
    expect(ofType(events, 'branch-error')).toEqual([
      expect.objectContaining({ node: 'sceptic', branch: 'split.sceptic', error: { name: 'Error', message: 'GPU on fire', code: 'internal' } }),
    ]);
    expect(endOf(events)).toMatchObject({ status: 'ok', output: { views: { optimist: 'Fine and good.' } } });
    expect(engine.live).toBe(0);
  });

  it('a failing expand point is a branch-error; the answer keeps the other points', async () => {
    const engine = createFakeEngine({ script: [{ match: /writing of point 2\./, error: new Error('oops') }, ...sotScript()] });
    const events = await collect(runGraph(graph('sot'), { question: 'How?' }, { engine }));
    expect(ofType(events, 'branch-error').map((e) => e.branch)).toEqual(['router.sot/expand#2']);
    expect(String(endOf(events).output!.answer).split('\n').map((l) => l.slice(0, 2))).toEqual(['1.', '3.']);
  });

  it('a failure outside any branch ends the run with a typed error', async () => {
    const engine = createFakeEngine({ script: [{ match: /./, error: new Error('model crashed') }] });
    const end = endOf(await collect(runGraph(graph('chat'), { question: 'hi' }, { engine })));
    expect(end).toMatchObject({ status: 'error', error: { message: 'model crashed' } });
    const missing = endOf(await collect(runGraph(graph('chat'), {}, { engine })));
    expect(missing).toMatchObject({ status: 'error', error: { name: 'BadRequestError', code: 'bad_request', message: expect.stringContaining('input.question') } });
  });
});

describe('cancellation', () => {
  const slowEngine = () => createFakeEngine({ delayMs: 2, script: [...sotScript(), { match: /./, reply: 'w '.repeat(50) }] });

  it('unsubscribing mid-run stops every generation', async () => {
    const engine = slowEngine();
    const seen: RunEvent[] = [];
    const sub = runGraph(graph('sot'), { question: 'How?' }, { engine }).subscribe((e) => seen.push(e));
    while (!seen.some((e) => e.type === 'node-start' && e.node === 'expand' && e.branch?.includes('#'))) await tick(2);
    expect(engine.live).toBeGreaterThan(0);
    sub.unsubscribe();
    expect(engine.live).toBe(0);
    expect(engine.stats().kvBlocksUsed).toBe(0);
    expect(engine.cancelled).toBeGreaterThan(0);
  });

  it('aborting the signal ends the run with run-end cancelled and nothing live', async () => {
    const engine = slowEngine();
    const abort = new AbortController();
    const run = collect(runGraph(graph('debate'), { topic: 't' }, { engine, signal: abort.signal }));
    await tick(15);
    abort.abort();
    const events = await run;
    expect(endOf(events)).toMatchObject({ type: 'run-end', status: 'cancelled' });
    expect(engine.live).toBe(0);
  });

  it('taking only the first events unsubscribes cleanly', async () => {
    const engine = slowEngine();
    await firstValueFrom(runGraph(graph('perspectives'), { question: 'q' }, { engine }).pipe(take(5), toArray()));
    expect(engine.live).toBe(0);
  });
});

describe('seeds, replay, tools, printing', () => {
  it('the same seed gives the same requests; per-node seeds differ', async () => {
    const run = async (seed: number) => {
      const engine = createFakeEngine({ script: sotScript() });
      await collect(runGraph(graph('sot'), { question: 'How?' }, { engine, seed }));
      return engine.requests.map((r) => r.sampling?.seed);
    };
    const a = await run(11);
    expect(await run(11)).toEqual(a);
    expect(await run(12)).not.toEqual(a);
    expect(new Set(a).size).toBe(a.length);
  });

  it('saves events as JSON lines and replays them, instantly or on their timeline', async () => {
    const engine = createFakeEngine({ script: sotScript() });
    const events = await collect(runGraph(graph('sot'), { question: 'How?' }, { engine }));
    const text = saveEvents(events);
    expect(text.trim().split('\n')).toHaveLength(events.length);
    expect(parseEvents(text)).toEqual(events);
    expect(await collect(replayEvents(text))).toEqual(events);
    expect(() => parseEvents('{"type":"run-start"}\nnot json')).toThrow(/events line 2/);

    const timed = [events[0]!, { ...events[1]!, t: events[0]!.t + 3 }, { ...events[2]!, t: events[0]!.t + 7 }];
    new TestScheduler((x, y) => expect(x).toEqual(y)).run(({ expectObservable }) => {
      expectObservable(replayEvents(timed, { timing: 'realtime', speed: 1 })).toBe('a--b---(c|)', { a: timed[0], b: timed[1], c: timed[2] });
    });
  });

  it('runs tools registered in code by name', async () => {
    const tools = new ToolRegistry().register('wordCount', (text) => String(text).split(/\s+/).filter(Boolean).length);
    const spec: GraphSpec = {
      version: 1,
      name: 'tools',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'count', kind: 'tool', tool: 'wordCount' },
        { id: 'o', kind: 'output', name: 'words' },
      ],
      edges: [
        { from: 'q', to: 'count.in' },
        { from: 'count', to: 'o' },
      ],
    };
    const end = endOf(await collect(runGraph(spec, { q: 'one two three' }, { engine: createFakeEngine(), tools })));
    expect(end.output).toEqual({ words: 3 });
  });

  it('prints a compiled graph with ports, types, branches and loops', () => {
    const text = printGraph(compileGraph(graph('debate')));
    expect(text).toContain('graph debate (v1): 12 nodes, 18 edges');
    expect(text).toContain('  alice (generate) "Alice (for)"  [per turn of rounds]');
    expect(text).toContain('    in  prompt: text ← askAlice.out');
    expect(text).toContain('    out body: text → askAlice.transcript, askBob.transcript, round.transcript');
  });

  it('the progress view keeps one line per node and branch', async () => {
    const engine = createFakeEngine({ script: [{ match: /writing of point 2\./, error: new Error('oops') }, ...sotScript()] });
    const events = await collect(runGraph(graph('sot'), { question: 'How?' }, { engine }));
    const view = new ProgressView();
    for (const e of events) view.apply(e);
    const lines = view.lines();
    expect(lines.find((l) => l.includes('expand [router.sot/expand#1]'))).toMatch(/^✓/);
    expect(lines.find((l) => l.includes('expand [router.sot/expand#2]'))).toMatch(/^✗.*oops/);
    expect(lines.find((l) => l.startsWith('✓ router '))).toContain('1 tok');
  });

  it('the progress view shows rows a cancel stopped as cancelled, not failed', async () => {
    const engine = createFakeEngine({ script: [{ match: /./, reply: 'a long answer that is still streaming', delayMs: 50 }] });
    const abort = new AbortController();
    const view = new ProgressView();
    let changed = '';
    await new Promise<void>((resolve) => {
      runGraph(graph('chat'), { question: 'hi' }, { engine, signal: abort.signal }).subscribe({
        next: (e) => {
          if (e.type === 'text-delta') abort.abort();
          changed = view.apply(e) ?? changed;
        },
        complete: resolve,
      });
    });
    expect(changed).toMatch(/^⊘ answer .*cancelled$/);
    expect(view.lines().find((l) => l.includes('answer'))).toMatch(/^⊘/);
  });
});


describe('stage metrics', () => {
  it('node-end carries the stage figures the engine reports, summed over generations', async () => {
    const base = createFakeEngine({ supportedStages: ['compress'] });
    const withFigures = (e: GenerateEvent) => (e.type === 'done' ? ({ ...e, metrics: { ...e.metrics, compressedFrom: 100, compressedTo: 40 } } as GenerateEvent) : e);
    const engine: Engine = { ...base, generate: (req) => base.generate(req).pipe(map(withFigures)) };
    const events = await collect(runGraph(graph('compress-qa'), { passage: 'p', question: 'q' }, { engine }));
    expect(ofType(events, 'node-end').find((e) => e.node === 'answer')!.metrics).toMatchObject({ compressedFrom: 100, compressedTo: 40 });
  });
});
