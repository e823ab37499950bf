/**
 * Operators stream their own events on the real engine with the default model
 * (SmolLM2-135M-Instruct, pulled; skipped with the reason when it is not): `of(prompt).pipe(generate(...))`, with no graph and no side
 * channel, yields node-start, the tokens as text deltas and node-end with the answer and
 * its metrics — the same events a graph run stamps and forwards.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { lastValueFrom, of, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../core/engine.js';
import type { OperatorEvent } from '../core/events.js';
import { generate } from '../operators/index.js';

const root = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const modelDir = root('models/smollm2-135m-instruct/');
const missing = existsSync(`${modelDir}SmolLM2-135M-Instruct.Q4_1.gguf`) ? '' : 'the default model is not pulled (npx skein pull smollm2-135m-instruct)';
if (missing) process.stderr.write(`operators stream test: skipped because ${missing}\n`);

describe.skipIf(missing !== '')(`operator streams on the real engine (default model)${missing ? ` — skipped: ${missing}` : ''}`, () => {
  let engine: Engine;
  beforeAll(async () => {
    const { createEngine } = await import('../runtime/engine/index.js');
    engine = await createEngine({ model: modelDir, thread: 'main' });
  }, 60_000);
  afterAll(async () => engine?.close());

  it('of(prompt).pipe(generate(...)) yields token deltas and an end event on that Observable', async () => {
    const events: OperatorEvent[] = await lastValueFrom(of('Name three colours.').pipe(generate({ engine, sampling: { maxTokens: 12 } }), toArray()));
    expect(events[0]).toEqual({ type: 'node-start', node: 'generate' });
    const deltas = events.filter((e): e is Extract<OperatorEvent, { type: 'text-delta' }> => e.type === 'text-delta');
    expect(deltas.length).toBeGreaterThan(0);
    expect(deltas.every((d) => d.node === 'generate' && d.tokenIds.length === 1)).toBe(true);
    const end = events.at(-1)!;
    expect(end.type).toBe('node-end');
    if (end.type !== 'node-end') return;
    expect(end.output).toBe(deltas.map((d) => d.text).join(''));
    expect(end.metrics.tokensOut).toBe(deltas.length);
    expect(end.metrics.tokensIn).toBeGreaterThan(0);
    expect(end.metrics.ttftMs).toBeGreaterThan(0);
  }, 60_000);
});
