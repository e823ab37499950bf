/**
 * shareKv on the real engine (a tiny checkpoint with its tokenizer): the branches after it
 * all adopt the prefix blocks it prefilled once, their greedy answers are the same as
 * without it, its own kvShare event reports the shared prefill, it passes a lone input on
 * untouched, and unsubscribing early cancels the prefill and leaves nothing behind.
 */
import * as tf from '@tensorflow/tfjs-core';
import { from, lastValueFrom, mergeMap, of, toArray, type Observable } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOperatorEvent } from '../core/events.js';
import { makeTempCheckpoint } from './fixtures/checkpoints.js';
import { initBackend } from '../runtime/backend.js';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import { expand } from '../operators/expand.js';
import { generate } from '../operators/generate.js';
import type { Flow } from '../operators/internal/operate.js';
import type { GenerateInput } from '../operators/generate.js';
import { shareKv } from '../operators/shareKv.js';

const SYSTEM = 'You answer questions about the garden report. The report says the beans grew tall, the tomatoes were late and the herbs did well.';
const QUESTIONS = ['What grew tall?', 'What was late?', 'What did well?'];
const SAMPLING = { maxTokens: 6, temperature: 0 };

let ckpt: ReturnType<typeof makeTempCheckpoint>;
let baseline = 0;

beforeAll(async () => {
  await initBackend();
  ckpt = makeTempCheckpoint({ numKvHeads: 2, maxPositionEmbeddings: 512, seed: 21 });
  baseline = tf.memory().numTensors;
});
afterAll(() => {
  expect(tf.memory().numTensors).toBe(baseline);
  ckpt.cleanup();
});

const freshEngine = (model = ckpt.dir) => createEngine({ model, thread: 'main', blockSize: 4, kvBudgetBlocks: 400 });

/** Each question in its own concurrent generate (node q0, q1, …), as a fork's branches run. */
function branches(engine: EngineFront, source: Observable<Flow<GenerateInput>>): Observable<Flow<GenerateInput>> {
  return source.pipe(
    mergeMap((item) => {
      if (typeof item !== 'string') return of(item);
      return of(item).pipe(generate({ engine, system: SYSTEM, sampling: SAMPLING, context: { node: `q${QUESTIONS.indexOf(item as string)}` } }));
    }),
  );
}

function answers(events: Array<Flow<GenerateInput>>): Record<string, unknown> {
  return Object.fromEntries(events.flatMap((e) => (isOperatorEvent(e) && e.type === 'node-end' ? [[e.node, e.output]] : [])));
}

function stageEvents(events: Array<Flow<GenerateInput>>) {
  return events.flatMap((e) => (isOperatorEvent(e) && e.type === 'stage' ? [e] : []));
}

describe('shareKv', () => {
  it('prefills the common prefix once; every branch adopts its blocks and answers as without it', async () => {
    // skein-mini answers each question differently, so equal answers mean something.
    const plain = await freshEngine('skein-mini');
    const shared = await freshEngine('skein-mini');
    try {
      const without = await lastValueFrom(branches(plain, from(QUESTIONS)).pipe(toArray()));
      const withShare = await lastValueFrom(branches(shared, from(QUESTIONS).pipe(shareKv({ engine: shared, system: SYSTEM }))).pipe(toArray()));

      expect(Object.keys(answers(without))).toHaveLength(3);
      expect(new Set(Object.values(answers(without))).size).toBeGreaterThan(1);
      expect(answers(withShare)).toEqual(answers(without));

      const [own, ...rest] = stageEvents(withShare);
      expect(own).toMatchObject({ node: 'shareKv', stage: 'kvShare', decided: { branches: 3 } });
      expect(own!.decided.prefixChars).toBeGreaterThan(SYSTEM.length);
      expect(own!.figures.tokensIn).toBeGreaterThan(20);
      expect(own!.figures.wallMs).toBeGreaterThan(0);
      // Every branch took the prefix's blocks from the cache, none computed them.
      const adopted = rest.filter((e) => e.stage === 'kvShare');
      expect(adopted.map((e) => e.node).sort()).toEqual(['q0', 'q1', 'q2']);
      const fullBlocks = Math.floor(own!.figures.tokensIn! / 4);
      for (const e of adopted) expect(e.figures.kvBlocksShared).toBeGreaterThanOrEqual(fullBlocks - 1);
      // Without it the first branch computes the prefix while the others wait for it.
      expect(stageEvents(without).filter((e) => e.stage === 'kvShare').length).toBeLessThan(3);
    } finally {
      await plain.close();
      await shared.close();
    }
  });

  it('on expand (shareKv: true): every point adopts the prefix, the expansions are unchanged', async () => {
    const points = ['Gather basic tools', 'Learn simple recipes', 'Practice every week'];
    const skeleton = { question: 'How do I learn to cook?', outline: points.map((p, i) => `${i + 1}. ${p}`).join('\n'), points };
    const plain = await freshEngine('skein-mini');
    const shared = await freshEngine('skein-mini');
    try {
      const run = (engine: EngineFront, shareKv: boolean) => lastValueFrom(of(skeleton).pipe(expand({ engine, shareKv, sampling: SAMPLING }), toArray()));
      const without = await run(plain, false);
      const withShare = await run(shared, true);
      const output = (events: Array<Flow<GenerateInput>>) => events.flatMap((e) => (isOperatorEvent(e) && e.type === 'node-end' && e.branch === undefined ? [e.output] : []));
      expect(output(withShare)).toEqual(output(without));
      expect(output(without)[0]).toHaveLength(3);
      const [own, ...adopted] = stageEvents(withShare);
      expect(own).toMatchObject({ node: 'expand', stage: 'kvShare', decided: { branches: 3 } });
      expect(own!.branch).toBeUndefined();
      expect(adopted.map((e) => e.branch).sort()).toEqual(['expand#1', 'expand#2', 'expand#3']);
      for (const e of adopted) expect(e.figures.kvBlocksShared).toBeGreaterThanOrEqual(Math.floor(own!.figures.tokensIn! / 4) - 1);
    } finally {
      await plain.close();
      await shared.close();
    }
  });

  it('passes a lone input on untouched, without asking the engine', async () => {
    const engine = await freshEngine();
    try {
      const out = await lastValueFrom(of('only one').pipe(shareKv({ engine, system: SYSTEM }), toArray()));
      expect(out).toEqual(['only one']);
      expect(engine.kvStats().kvBlocksCached).toBe(0);
    } finally {
      await engine.close();
    }
  });

  it('unsubscribed during the prefill: cancels it, emits nothing, frees every block', async () => {
    const engine = await freshEngine();
    try {
      const seen: unknown[] = [];
      const sub = from(QUESTIONS)
        .pipe(shareKv({ engine, system: SYSTEM }))
        .subscribe({ next: (x) => seen.push(x), error: (e) => seen.push(e) });
      expect(engine.stats().queueDepth + engine.stats().runningSequences).toBe(1);
      sub.unsubscribe();
      await new Promise((r) => setTimeout(r, 20));
      expect(seen).toEqual([]);
      expect(engine.stats()).toMatchObject({ queueDepth: 0, runningSequences: 0, kvBlocksUsed: 0 });
    } finally {
      await engine.close();
    }
  });
});
