// Engine supervision (#16 item 3): a dead engine worker used to stay dead while /healthz
// said ok and every run failed with "engine worker exited (code 1)". Now the worker is
// killed mid-run here: the run ends with a typed EngineUnavailableError, /healthz says
// degraded and the KV gauges read zero while it is down, the worker comes back, and the
// next run succeeds with the KV pool back at its baseline.
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineUnavailableError } from '../../core/errors.js';
import { createEngine, type EngineFront } from '../../runtime/engine/index.js';
import { createApp } from '../../runtime/server/index.js';

// No EOS, so a generation runs until maxTokens: long enough to be killed in the middle.
const model = { random: { numLayers: 1, hiddenSize: 32, eosTokenIds: [] }, seed: 7 };
const generation = (maxTokens: number) => ({ ids: [1, 5, 9], sampling: { maxTokens, temperature: 0 } });

let engine: EngineFront;
beforeAll(async () => {
  engine = await createEngine({ model, blockSize: 4, kvBudgetBlocks: 600, restartBackoffMs: 50 });
});
afterAll(async () => {
  await engine?.close();
});

describe('engine supervision', () => {
  it('a worker killed mid-generation fails that generation with a typed error, then serves again', async () => {
    const expected = await lastValueFrom(engine.generate(generation(6)));
    const long = lastValueFrom(engine.generate(generation(1800)).pipe(toArray()));
    await firstValueFrom(engine.generate(generation(1)));
    const restarted = engine.killWorker();
    const err = await long.catch((e: unknown) => e);
    // The worker is down now: work that arrives meanwhile waits for the new one.
    expect(engine.health().status).toBe('degraded');
    const queued = lastValueFrom(engine.generate(generation(6)));
    expect(err).toBeInstanceOf(EngineUnavailableError);
    expect((err as EngineUnavailableError).code).toBe('engine_unavailable');
    expect((err as Error).message).toMatch(/model worker exited/);
    await restarted;
    expect(engine.health()).toEqual({ status: 'ok', restarts: 1 });
    const waited = await queued;
    expect(waited.type === 'done' && waited.ids).toEqual(expected.type === 'done' && expected.ids);
    const again = await lastValueFrom(engine.generate(generation(6)));
    expect(again.type === 'done' && again.ids).toEqual(expected.type === 'done' && expected.ids);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('over HTTP: /healthz is degraded (503) and the KV gauges read zero while the worker is down, then ok', async () => {
    const app = createApp({ engine, log: () => {} });
    const long = lastValueFrom(engine.generate(generation(1800)).pipe(toArray())).catch((e: unknown) => e);
    await firstValueFrom(engine.generate(generation(1)));
    expect(engine.stats().kvBlocksUsed).toBeGreaterThan(0);
    let up = false;
    const restarted = engine.killWorker().then(() => (up = true));
    let degraded: unknown;
    let metrics = '';
    while (!up && degraded === undefined) {
      const health = await app.request('/healthz');
      if (health.status === 503) {
        degraded = await health.json();
        metrics = await (await app.request('/metrics')).text();
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(await long).toBeInstanceOf(EngineUnavailableError);
    await restarted;
    expect(degraded).toMatchObject({ status: 'degraded', detail: expect.stringMatching(/model worker exited/), restarts: 1 });
    expect(metrics).toMatch(/skein_kv_blocks_used 0/);
    expect(metrics).toMatch(/skein_engine_up 0/);
    const health = await app.request('/healthz');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', restarts: 2 });
    const after = await (await app.request('/metrics')).text();
    expect(after).toMatch(/skein_engine_restarts 2/);
    expect(after).toMatch(/skein_engine_up 1/);
    expect(after).toMatch(/skein_kv_blocks_used 0/);
  });
});
