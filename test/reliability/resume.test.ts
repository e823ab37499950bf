// Resuming an interrupted run (#16, durable runs): the server stopped after the first of
// two sampled generate nodes had ended. POST /v1/runs/:id/resume starts a new run that
// reuses that node's stored output and runs the second with the same derived seed, so its
// answer is the one the uninterrupted run gave — on a real engine, with temperature 1, so
// a wrong seed or a re-run of the first node would show.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runGraphFile } from '../../runtime/cli/commands/run.js';
import type { RunEvent } from '../../core/events.js';
import { createEngine } from '../../runtime/engine/index.js';
import type { Engine } from '../../core/engine.js';
import { createApp } from '../../runtime/server/index.js';
import { RunDatabase } from '../../runtime/server/run-db.js';
import { makeTempCheckpoint } from '../fixtures/checkpoints.js';
import { tempDir } from '../fixtures/temp-dir.js';
import { parseSse } from '../fakes/sse.js';

const post = (body?: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
const events = async (res: Response) =>
  parseSse(await res.text())
    .filter((m) => m.id !== undefined)
    .map((m) => JSON.parse(m.data) as RunEvent);

const sampled = { maxTokens: 8, temperature: 1 };
const graph = {
  version: 1,
  name: 'two-steps',
  nodes: [
    { id: 'question', kind: 'input' },
    { id: 'first', kind: 'generate', chat: false, sampling: sampled },
    { id: 'second', kind: 'generate', chat: false, sampling: sampled },
    { id: 'out', kind: 'output', name: 'answer' },
  ],
  edges: [
    { from: 'question', to: 'first.prompt' },
    { from: 'first', to: 'second.prompt' },
    { from: 'second', to: 'out' },
  ],
};

async function finished(app: ReturnType<typeof createApp>, id: string): Promise<RunEvent[]> {
  const end = Date.now() + 20_000;
  while ((await (await app.request(`/v1/runs/${id}`)).json()).state === 'running') {
    if (Date.now() > end) throw new Error('run did not finish');
    await new Promise((r) => setTimeout(r, 5));
  }
  return events(await app.request(`/v1/runs/${id}/events`));
}

describe('resuming an interrupted run', () => {
  let checkpoint: ReturnType<typeof makeTempCheckpoint>;
  let engine: Engine;
  beforeAll(async () => {
    checkpoint = makeTempCheckpoint({ seed: 4 });
    engine = await createEngine({ model: checkpoint.dir, thread: 'main', blockSize: 4 });
  });
  afterAll(async () => {
    await engine?.close();
    checkpoint?.cleanup();
  });

  it('reuses the nodes that had ended and gives the uninterrupted answer', async () => {
    // The uninterrupted run, for reference.
    const whole = createApp({ engine, log: () => {} });
    const ref = await (await whole.request('/v1/runs', post({ graph, input: { question: 'hello there' }, seed: 42 }))).json();
    const refEvents = await finished(whole, ref.id);
    const refEnd = refEvents.at(-1)!;
    expect(refEnd).toMatchObject({ type: 'run-end', status: 'ok' });
    const firstEnd = refEvents.findIndex((e) => e.type === 'node-end' && e.node === 'first');

    // The same run as a crashed server left it: written up to the first node's end, still 'running'.
    const dir = tempDir('skein-resume-');
    const crashed = RunDatabase.open(dir);
    crashed.started({ id: 'run_cut', graph: 'two-steps', input: { question: 'hello there' }, seed: 42, model: engine.modelName, definition: graph, state: 'running', createdAt: Date.now(), events: [], tokensOut: 0 });
    for (const e of refEvents.slice(0, firstEnd + 1)) crashed.event('run_cut', { ...e, runId: 'run_cut' });
    crashed.flush();
    crashed.close();

    const db = RunDatabase.open(dir);
    try {
      const app = createApp({ engine, log: () => {}, runDb: db });
      expect((await (await app.request('/v1/runs/run_cut')).json()).state).toBe('interrupted');
      const res = await app.request('/v1/runs/run_cut/resume', post());
      expect(res.status).toBe(201);
      const resumed = await res.json();
      expect(resumed).toMatchObject({ resumedFrom: 'run_cut', reused: ['question', 'first'] });
      const seen = await finished(app, resumed.id);
      expect(seen[0]).toMatchObject({ type: 'run-start', seed: 42, resumedFrom: 'run_cut' });
      expect(seen.find((e) => e.type === 'node-end' && e.node === 'first')).toMatchObject({ reused: true });
      // The first node did not generate again; the second did, with the same seed.
      expect(seen.some((e) => e.type === 'text-delta' && e.node === 'first')).toBe(false);
      expect(seen.some((e) => e.type === 'text-delta' && e.node === 'second')).toBe(true);
      expect(seen.at(-1)).toMatchObject({ type: 'run-end', status: 'ok', output: (refEnd as { output: unknown }).output });

      // Only interrupted runs resume; unknown ids are 404.
      const again = await app.request(`/v1/runs/${resumed.id}/resume`, post());
      expect(again.status).toBe(409);
      expect((await again.json()).error.code).toBe('run_not_resumable');
      expect((await app.request('/v1/runs/run_nope/resume', post())).status).toBe(404);
    } finally {
      db.close();
    }

    // The CLI resumes from the same data folder, and writes its run there.
    const lines: string[] = [];
    const stdout = new Writable({ write: (chunk, _enc, done) => (lines.push(...String(chunk).split('\n').filter(Boolean)), done()) });
    const shared = Object.assign(Object.create(engine) as Engine, { close: async () => {} });
    const status = await runGraphFile(undefined, { input: '{}', resume: 'run_cut', dataDir: dir, json: true }, { openEngine: async () => shared, stdout, stderr: new Writable({ write: (_c, _e, done) => done() }) });
    expect(status).toBe(0);
    const cli = lines.map((l) => JSON.parse(l) as RunEvent);
    expect(cli[0]).toMatchObject({ type: 'run-start', seed: 42, resumedFrom: 'run_cut' });
    expect(cli.at(-1)).toMatchObject({ type: 'run-end', status: 'ok', output: (refEnd as { output: unknown }).output });
    const stored = RunDatabase.open(dir);
    try {
      expect(stored.load(cli[0]!.runId)).toMatchObject({ state: 'ok', seed: 42 });
    } finally {
      stored.close();
    }
  });
});
