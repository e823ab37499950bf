/**
 * Remote providers end to end, with real processes on loopback: a second Skein server
 * (`skein serve` on skein-mini, in its own process, behind a bearer token) is the remote;
 * this process runs the graphs on its local skein-mini engine with their model nodes
 * pointed at that server. Checked: the same structure of events as a local run, a remote
 * node's greedy answer equal to what the server returns directly, compress running here
 * before the request leaves, a cancel freeing the remote's KV (its /metrics), and the
 * remote killed mid-stream failing only its branch, with nothing leaked here.
 */
import type { ChildProcess } from 'node:child_process';
import { filter, firstValueFrom, lastValueFrom, share, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../core/engine.js';
import { runGraph, type GraphSpec, type RunEvent } from '../operators/index.js';
import { ProviderPool } from '../runtime/providers/pool.js';
import { spawnSkeinServer } from '../runtime/server/spawn.js';
import { loadGraph as load, oneGenerateGraph, onProvider, structure } from './fixtures/remote-graphs.js';

const TOKEN = 'remote-test-token';
const KEY_ENV = 'SKEIN_REMOTE_TEST_KEY';
const NO_EOS = { 4093: -100, 4095: -100 };

let remote: ChildProcess;
let remoteUrl: string;
let local: Engine;
let pool: ProviderPool;

const remoteFetch = (path: string, init: RequestInit = {}) => fetch(new URL(path, remoteUrl), { ...init, headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json', ...init.headers } });

async function remoteGauge(name: string): Promise<number> {
  const text = await (await remoteFetch('/metrics')).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in the remote's /metrics`);
  return Number(m[1]);
}

const onRemote = (graph: GraphSpec): GraphSpec => onProvider(graph, 'far', { type: 'openai', baseUrl: `${remoteUrl}v1`, model: 'skein-mini', apiKeyEnv: KEY_ENV, timeoutMs: 30_000 });

const run = (graph: GraphSpec, input: Record<string, unknown>) => lastValueFrom(runGraph(graph, input, { engine: local, engineFor: pool.forGraph(graph), seed: 7 }).pipe(toArray()));

describe('remote providers over a second Skein process', () => {
  beforeAll(async () => {
    process.env[KEY_ENV] = TOKEN;
    const started = await spawnSkeinServer({ model: 'skein-mini', token: TOKEN });
    remote = started.child;
    remoteUrl = started.url;
    const { createEngine } = await import('../runtime/engine/index.js');
    local = await createEngine({ model: 'skein-mini', thread: 'main' });
    pool = new ProviderPool({ local });
  }, 90_000);

  afterAll(async () => {
    await pool?.close();
    await local?.close();
    if (remote && remote.exitCode === null) remote.kill('SIGKILL');
    delete process.env[KEY_ENV];
  });

  it('runs the SoT stages remote (the points continue an assistant prefix): one expand branch per skeleton point, as locally', async () => {
    // sot.json past its router: the router may answer "direct" for a question, and this test is about skeleton and expand.
    const sot = load('sot');
    const keep = new Set(['question', 'skeleton', 'expand', 'sotAnswer', 'out']);
    const graph: GraphSpec = {
      ...sot,
      nodes: sot.nodes.filter((n) => keep.has(n.id)),
      edges: [
        { from: 'question', to: 'skeleton.question' },
        { from: 'skeleton', to: 'expand.skeleton' },
        { from: 'expand', to: 'sotAnswer' },
        { from: 'sotAnswer', to: 'out' },
      ],
    };
    const input = { question: 'How do I plan a small garden?' };
    const [localEvents, remoteEvents] = [await run(graph, input), await run(onRemote(graph), input)];
    expect(structure(remoteEvents)).toEqual(structure(localEvents));
    const skeletonEnd = remoteEvents.find((e) => e.type === 'node-end' && e.node === 'skeleton') as Extract<RunEvent, { type: 'node-end' }>;
    const points = (skeletonEnd.output as { points: unknown[] }).points.length;
    expect(points).toBeGreaterThan(1);
    const branches = new Set(remoteEvents.flatMap((e) => (e.type === 'node-end' && e.node === 'expand' && e.branch ? [e.branch] : [])));
    expect(branches.size).toBe(points);
    expect(remoteEvents.at(-1)).toMatchObject({ type: 'run-end', status: 'ok' });
  }, 120_000);

  it('gives a remote generate node the greedy answer the server returns directly, and counts its usage', async () => {
    const events = await run(onRemote(oneGenerateGraph()), { q: 'Tell me about the sea.' });
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end.status).toBe('ok');
    const direct = (await (
      await remoteFetch('/v1/chat/completions', {
        method: 'POST',
        body: JSON.stringify({
          model: 'skein-mini',
          messages: [
            { role: 'system', content: 'You are brief.' },
            { role: 'user', content: 'Tell me about the sea.' },
          ],
          max_tokens: 24,
          temperature: 0,
        }),
      })
    ).json()) as { choices: { message: { content: string } }[]; usage: { prompt_tokens: number; completion_tokens: number } };
    expect(direct.choices[0]!.message.content.length).toBeGreaterThan(10);
    expect((end as { output: Record<string, unknown> }).output.o).toBe(direct.choices[0]!.message.content);
    expect(end.usage.g).toMatchObject({ tokensIn: direct.usage.prompt_tokens, tokensOut: direct.usage.completion_tokens });
  }, 60_000);

  it('runs debate with every generate node remote (penalties and a loop) like a local run', async () => {
    const graph = load('debate');
    const input = { topic: 'Cities should ban cars from their centres.' };
    const [localEvents, remoteEvents] = [await run(graph, input), await run(onRemote(graph), input)];
    expect(structure(remoteEvents)).toEqual(structure(localEvents));
  }, 120_000);

  it('compresses locally before a remote call and reports the tokens saved', async () => {
    const graph = onRemote(load('compress-qa'));
    const events = await run(graph, {});
    const stage = events.find((e) => e.type === 'stage' && e.stage === 'compress') as Extract<RunEvent, { type: 'stage' }>;
    expect(stage.decided).toMatchObject({ where: 'local', provider: 'far' });
    expect(stage.figures.tokensOut!).toBeLessThan(stage.figures.tokensIn!);
    const end = events.find((e) => e.type === 'node-end' && e.node === 'answer') as Extract<RunEvent, { type: 'node-end' }>;
    expect(end.metrics).toMatchObject({ compressedFrom: stage.figures.tokensIn, compressedTo: stage.figures.tokensOut });
    const uncompressed = onRemote({ ...load('compress-qa'), nodes: load('compress-qa').nodes.map((n) => (n.id === 'answer' ? { ...n, stages: undefined } : n)) as GraphSpec['nodes'] });
    const full = (await run(uncompressed, {})).find((e) => e.type === 'node-end' && e.node === 'answer') as Extract<RunEvent, { type: 'node-end' }>;
    expect(end.metrics.tokensIn!).toBeLessThan(full.metrics.tokensIn!);
    expect(local.stats().kvBlocksUsed).toBe(0);
  }, 60_000);

  const longGraph = (): GraphSpec =>
    onRemote({
      version: 1,
      name: 'long',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'f', kind: 'fork', branches: ['far', 'near'] },
        { id: 'farAnswer', kind: 'generate', sampling: { maxTokens: 1500, temperature: 1, logitBias: NO_EOS } },
        { id: 'near', kind: 'generate', sampling: { maxTokens: 12 } },
        { id: 'j', kind: 'join', mode: 'list' },
        { id: 'o', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 'f.in' },
        { from: 'f.far', to: 'farAnswer.prompt' },
        { from: 'f.near', to: 'near.prompt' },
        { from: 'farAnswer', to: 'j' },
        { from: 'near', to: 'j' },
        { from: 'j', to: 'o' },
      ],
    });
  /** Only farAnswer is remote in these two tests: near stays local, as the sibling that goes on. */
  const farOnly = (g: GraphSpec): GraphSpec => ({ ...g, nodes: g.nodes.map((n) => (n.id === 'near' ? { ...n, provider: undefined } : n)) as GraphSpec['nodes'] });

  it('cancels mid-stream: the remote counts the completion cancelled and frees its KV blocks', async () => {
    const graph = farOnly(longGraph());
    const run$ = runGraph(graph, { q: 'Tell me a very long story.' }, { engine: local, engineFor: pool.forGraph(graph), seed: 1 });
    const cancelledBefore = await remoteGauge('skein_chat_completions_cancelled_total');
    const sub = run$.subscribe();
    // Wait until the remote streams, then read its gauges while it holds KV.
    for (let i = 0; i < 200 && (await remoteGauge('skein_kv_blocks_used')) === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await remoteGauge('skein_kv_blocks_used')).toBeGreaterThan(0);
    sub.unsubscribe();
    let used = -1;
    for (let i = 0; i < 200; i++) {
      used = await remoteGauge('skein_kv_blocks_used');
      if (used === 0 && (await remoteGauge('skein_running_sequences')) === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(used).toBe(0);
    expect(await remoteGauge('skein_running_sequences')).toBe(0);
    expect(await remoteGauge('skein_chat_completions_cancelled_total')).toBe(cancelledBefore + 1);
  }, 60_000);

  it('survives the remote being killed mid-stream: that branch fails with a ProviderError, its sibling goes on, nothing leaks here', async () => {
    const graph = farOnly(longGraph());
    const events$ = runGraph(graph, { q: 'Tell me a very long story.' }, { engine: local, engineFor: pool.forGraph(graph), seed: 2 }).pipe(share());
    const all = lastValueFrom(events$.pipe(toArray()));
    const firstRemoteToken = firstValueFrom(events$.pipe(filter((e) => e.type === 'text-delta' && e.node === 'farAnswer')));
    await firstRemoteToken;
    remote.kill('SIGKILL');
    const events = await all;
    const branchError = events.find((e) => e.type === 'branch-error' && e.node === 'farAnswer') as Extract<RunEvent, { type: 'branch-error' }>;
    expect(branchError.error).toMatchObject({ name: 'ProviderError', code: 'provider_failed' });
    expect(branchError.error.message).toMatch(/Provider far \(node farAnswer\) failed: connection lost/);
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end.status).toBe('ok');
    expect((end as { output: Record<string, unknown[]> }).output.o).toHaveLength(1);
    expect(local.stats()).toMatchObject({ kvBlocksUsed: 0, runningSequences: 0 });
    expect(pool.engine('far', graph.providers!.far!).stats()).toMatchObject({ runningSequences: 0, queueDepth: 0 });
  }, 60_000);
});
