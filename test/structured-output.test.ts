/**
 * Structured output through the engine on skein-mini: each sequence's logits are masked
 * by its own grammar inside the batched scheduler, greedy is deterministic, sampling
 * and self-speculative drafts compose with the mask, unconstrained batch-mates are untouched, bad constraints are
 * typed errors, and cancelling frees KV.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Ajv } from 'ajv';
import { lastValueFrom, take, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrammarError, NotAvailableError } from '../core/errors.js';
import { parseGraph, runGraph, type GraphSpec, type RunEvent } from '../operators/index.js';
import { portsOf } from '../core/ports.js';
import type { OutputConstraint } from '../core/output.js';
import { initBackend } from '../runtime/backend.js';
import { createEngine } from '../runtime/engine/index.js';
import type { EngineFront } from '../runtime/engine/front.js';
import type { GenerateEvent, GenerateRequest } from '../core/engine.js';
import { createFakeEngine } from './fakes/fake-engine.js';

type Done = Extract<GenerateEvent, { type: 'done' }>;

let engine: EngineFront;
let baseline = 0;

async function done(request: GenerateRequest): Promise<Done> {
  const events = await lastValueFrom(engine.generate(request).pipe(toArray()));
  return events.at(-1) as Done;
}

const person = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    pets: { type: 'array', items: { enum: ['cat', 'dog', 'fish'] }, maxItems: 3 },
  },
  required: ['name', 'age'],
  additionalProperties: false,
};

beforeAll(async () => {
  await initBackend();
  baseline = tf.memory().numTensors;
  engine = await createEngine({ model: 'skein-mini', thread: 'main' });
});

afterAll(async () => {
  await engine?.close();
  expect(tf.memory().numTensors).toBe(baseline);
});

describe('structured output in the engine', () => {
  it('greedy with a JSON Schema gives valid JSON, the same twice', async () => {
    const request: GenerateRequest = { prompt: 'Describe a person as JSON:', output: { schema: person }, sampling: { maxTokens: 80 } };
    const a = await done(request);
    const b = await done(request);
    expect(a.reason).toBe('stop');
    const value = JSON.parse(a.text);
    const ajv = new Ajv();
    expect(ajv.validate(person, value), ajv.errorsText()).toBe(true);
    expect(b.ids).toEqual(a.ids);
    expect(b.text).toBe(a.text);
  });

  it('masks per sequence in one batch: constrained and plain requests side by side', async () => {
    const plain: GenerateRequest = { prompt: 'Once upon a time', sampling: { maxTokens: 12 } };
    const solo = await done(plain);
    const constraints: OutputConstraint[] = [{ choices: ['alpha', 'beta', 'gamma'] }, { regex: '[0-9]{3}-[a-z]{2,4}' }];
    const [mixed, choice, regex] = await Promise.all([
      done(plain),
      done({ prompt: 'Pick one:', output: constraints[0]!, sampling: { maxTokens: 8 } }),
      done({ prompt: 'A code:', output: constraints[1]!, sampling: { maxTokens: 12 } }),
    ]);
    expect(mixed!.ids).toEqual(solo.ids);
    expect(['alpha', 'beta', 'gamma']).toContain(choice!.text);
    expect(regex!.text).toMatch(/^[0-9]{3}-[a-z]{2,4}$/);
  });

  it('composes with self-speculative decoding: drafts are made and checked under the grammar, the output is the same', async () => {
    const request: GenerateRequest = { prompt: 'Describe a person as JSON:', output: { schema: person }, sampling: { maxTokens: 80 } };
    const plain = await done(request);
    // All layers draft (target 1): every draft the grammar allows is the full model's own pick.
    const speculated = await done({ ...request, stages: { skipLayers: { targetSpeedup: 1, mode: 'self-speculative', drafts: 4 } } });
    expect(speculated.text).toBe(plain.text);
    const report = speculated.metrics.stages!.skipLayers!;
    expect(report.draftsProposed).toBeGreaterThan(0);
    // All but the drafts of the last verification (at most 4), which run past the end of the JSON, where the grammar completes.
    expect(report.draftsAccepted).toBeGreaterThanOrEqual(report.draftsProposed! - 4);
    expect(report.draftsAccepted).toBeLessThanOrEqual(report.draftsProposed!);
    expect(new Ajv().validate(person, JSON.parse(speculated.text))).toBe(true);
  });

  it('composes with sampling: temperature, top-k and top-p draw among allowed tokens; same seed, same text', async () => {
    const ajv = new Ajv();
    const texts: string[] = [];
    for (const seed of [1, 2, 3, 1]) {
      const d = await done({
        prompt: 'JSON:',
        output: { schema: person },
        sampling: { temperature: 1.2, topK: 40, topP: 0.95, seed, maxTokens: 120 },
      });
      expect(d.reason).not.toBe('length');
      expect(ajv.validate(person, JSON.parse(d.text)), d.text).toBe(true);
      texts.push(d.text);
    }
    expect(texts[3]).toBe(texts[0]);
  });

  it('refuses a constraint it cannot enforce with a typed error naming the place', async () => {
    const err = await lastValueFrom(engine.generate({ prompt: 'x', output: { schema: { type: 'array', uniqueItems: true } } })).catch((e) => e);
    expect(err).toBeInstanceOf(GrammarError);
    expect(String(err.message)).toMatch(/\/uniqueItems/);
  });

  it('unsubscribing a constrained generation frees its KV blocks', async () => {
    await lastValueFrom(engine.generate({ prompt: 'JSON:', output: { schema: person }, sampling: { maxTokens: 60 } }).pipe(take(3)));
    for (let i = 0; i < 50 && engine.stats().runningSequences > 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(engine.stats().runningSequences).toBe(0);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });
});

type RunEnd = Extract<RunEvent, { type: 'run-end' }>;

const extractGraph: GraphSpec = parseGraph({
  version: 1,
  name: 'extract',
  nodes: [
    { id: 'q', kind: 'input' },
    { id: 'x', kind: 'generate', system: 'Answer in JSON.', output: { schema: person }, sampling: { maxTokens: 80 } },
    { id: 'r', kind: 'route', by: 'model', branches: [{ name: 'list', when: { equals: 'A' } }], default: 'other', sampling: { maxTokens: 4 } },
    { id: 'o', kind: 'output' },
    { id: 'listed', kind: 'output' },
    { id: 'other', kind: 'output' },
  ],
  edges: [
    { from: 'q', to: 'x.prompt' },
    { from: 'x', to: 'o' },
    { from: 'q', to: 'r.in' },
    { from: 'r.list', to: 'listed' },
    { from: 'r.other', to: 'other' },
  ],
});

describe('structured output in graphs', () => {
  it('a generate node with output.schema has a json port and outputs the parsed, valid value', () => {
    const node = extractGraph.nodes.find((n) => n.id === 'x')!;
    expect(portsOf(node).outputs[0]!.type).toBe('json');
  });

  it('runs on skein-mini: JSON value out, and the SoT router can only answer A, B or C', async () => {
    const events = await lastValueFrom(runGraph(extractGraph, { q: 'Tell me about Ada.' }, { engine, seed: 3 }).pipe(toArray()));
    const end = events.at(-1) as RunEnd;
    expect(end.status).toBe('ok');
    const ajv = new Ajv();
    expect(ajv.validate(person, end.output!.o), JSON.stringify(end.output!.o)).toBe(true);
    const routed = events.find((e) => e.type === 'node-end' && e.node === 'r') as Extract<RunEvent, { type: 'node-end' }>;
    expect(['A', 'B', 'C']).toContain((routed.output as { answer: string }).answer);
  });

  it('an engine that cannot constrain output refuses a graph that asks for it (never silently ignored)', async () => {
    const fake = createFakeEngine({ script: [{ match: /./, reply: '{"name": "x"}' }] });
    const events = await lastValueFrom(runGraph(extractGraph, { q: 'hi' }, { engine: fake, seed: 1 }).pipe(toArray()));
    const end = events.at(-1) as RunEnd;
    expect(end.status).toBe('error');
    expect(end.error?.name).toBe(NotAvailableError.name);
  });
});
