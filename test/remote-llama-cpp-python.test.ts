/**
 * Remote providers against a third-party engine: llama-cpp-python's OpenAI-compatible
 * server (built once by .ci/llama-cpp-python.sh) serving the default model's GGUF, in its
 * own process on loopback. This process runs the graphs on a local skein-mini engine with
 * their model nodes pointed at that server. Checked: a remote node's greedy answer equals
 * what the server returns directly; debate (penalties, a loop) has the same structure of
 * events as a local run; compress runs here before the request leaves; a cancel
 * disconnects and the server stops generating; SoT, whose nodes continue an assistant
 * prefix, is refused up front on a server declared unable to continue one.
 *
 * Skipped, saying why, when the build or the GGUF is absent.
 */
import { existsSync } from 'node:fs';
import { lastValueFrom, toArray, type Subscription } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Engine } from '../core/engine.js';
import { runGraph, type GraphSpec, type RunEvent } from '../operators/index.js';
import { findLlamaCppPython, spawnLlamaCppPythonServer, type LlamaCppPythonServer } from '../runtime/providers/llama-cpp-python.js';
import { ProviderPool } from '../runtime/providers/pool.js';
import { catalogueEntry } from '../runtime/pull/catalogue.js';
import { installedPath } from '../runtime/pull/pull.js';
import { loadGraph as load, oneGenerateGraph, onProvider, structure } from './fixtures/remote-graphs.js';

const ggufPath = installedPath(catalogueEntry('smollm2-135m-instruct'));
const build = findLlamaCppPython();
const missing = 'missing' in build ? build.missing : existsSync(ggufPath) ? '' : `${ggufPath} is absent (npx skein pull smollm2-135m-instruct)`;
if (missing) console.warn(`llama-cpp-python provider tests skipped: ${missing}`);

const ALIAS = 'smollm2';
// SmolLM2's <|endoftext|> and <|im_end|>: kept from ending the long answer the cancel test cuts.
const NO_EOS = { 0: -100, 2: -100 };

let server: LlamaCppPythonServer;
let local: Engine;
let pool: ProviderPool;

const onRemote = (graph: GraphSpec): GraphSpec =>
  onProvider(graph, 'llama', { type: 'openai', baseUrl: server.baseUrl, model: ALIAS, timeoutMs: 60_000, continueFinalMessage: false });

const run = (graph: GraphSpec, input: Record<string, unknown>) => lastValueFrom(runGraph(graph, input, { engine: local, engineFor: pool.forGraph(graph), seed: 7 }).pipe(toArray()));

describe.skipIf(Boolean(missing))("remote providers over llama-cpp-python's server (a third-party engine)", () => {
  beforeAll(async () => {
    server = await spawnLlamaCppPythonServer({ model: ggufPath, alias: ALIAS });
    const { createEngine } = await import('../runtime/engine/index.js');
    local = await createEngine({ model: 'skein-mini', thread: 'main' });
    pool = new ProviderPool({ local });
  }, 120_000);

  afterAll(async () => {
    await pool?.close();
    await local?.close();
    server?.stop();
  });

  it('gives a remote generate node the greedy answer the server returns directly, streamed token by token', async () => {
    const events = await run(onRemote(oneGenerateGraph()), { q: 'What is the capital of France?' });
    const end = events.at(-1) as Extract<RunEvent, { type: 'run-end' }>;
    expect(end.status).toBe('ok');
    const response = await fetch(`${server.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        model: ALIAS,
        messages: [
          { role: 'system', content: 'You are brief.' },
          { role: 'user', content: 'What is the capital of France?' },
        ],
        max_tokens: 24,
        temperature: 0,
      }),
    });
    const direct = (await response.json()) as { choices: { message: { content: string } }[]; usage: { completion_tokens: number } };
    expect(direct.choices[0]!.message.content).toMatch(/Paris/);
    expect((end as { output: Record<string, unknown> }).output.o).toBe(direct.choices[0]!.message.content);
    // It sends no usage block when streaming: the streamed chunks are counted instead, one per token.
    expect(events.filter((e) => e.type === 'text-delta' && e.node === 'g').length).toBeGreaterThan(5);
    expect(end.usage.g).toMatchObject({ tokensOut: direct.usage.completion_tokens });
  }, 60_000);

  it('runs debate with every generate node remote (penalties and a loop) like a local run', async () => {
    const graph = load('debate');
    const input = { topic: 'Cities should ban cars from their centres.' };
    const [localEvents, remoteEvents] = [await run(graph, input), await run(onRemote(graph), input)];
    expect(structure(remoteEvents)).toEqual(structure(localEvents));
    expect(remoteEvents.at(-1)).toMatchObject({ type: 'run-end', status: 'ok' });
  }, 180_000);

  it('compresses locally before the remote call and reports the tokens saved', async () => {
    const events = await run(onRemote(load('compress-qa')), {});
    const stage = events.find((e) => e.type === 'stage' && e.stage === 'compress') as Extract<RunEvent, { type: 'stage' }>;
    expect(stage.decided).toMatchObject({ where: 'local', provider: 'llama' });
    expect(stage.figures.tokensOut!).toBeLessThan(stage.figures.tokensIn!);
    expect(events.at(-1)).toMatchObject({ type: 'run-end', status: 'ok' });
    expect(local.stats().kvBlocksUsed).toBe(0);
  }, 60_000);

  it('cancels mid-stream: the server sees the client go and stops generating', async () => {
    const graph = onRemote({
      version: 1,
      name: 'long',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'g', kind: 'generate', sampling: { maxTokens: 1500, logitBias: NO_EOS } },
        { id: 'o', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 'g.prompt' },
        { from: 'g', to: 'o' },
      ],
    });
    const events$ = runGraph(graph, { q: 'Tell me a very long story.' }, { engine: local, engineFor: pool.forGraph(graph), seed: 1 });
    const disconnects = () => server.log().match(/Disconnected from client/g)?.length ?? 0;
    const before = disconnects();
    // One subscription: the run's Observable is cold, and a second one would start a second
    // run against a server that serves one completion at a time.
    let sub: Subscription | undefined;
    await new Promise<void>((resolve, reject) => {
      sub = events$.subscribe({
        next: (e) => e.type === 'text-delta' && resolve(),
        error: reject,
        complete: () => reject(new Error('the run ended before its first token')),
      });
    });
    sub!.unsubscribe();
    for (let i = 0; i < 200 && disconnects() === before; i++) await new Promise((r) => setTimeout(r, 25));
    expect(disconnects()).toBe(before + 1);
    // It serves one completion at a time: had it gone on with the 1,500 tokens, this would wait for them.
    const t0 = performance.now();
    const next = await fetch(`${server.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: ALIAS, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, temperature: 0 }),
    });
    expect(next.status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(pool.engine('llama', graph.providers!.llama!).stats()).toMatchObject({ runningSequences: 0, queueDepth: 0 });
  }, 60_000);

  it('refuses SoT up front: its nodes continue an assistant prefix, which this server would answer as a new turn', () => {
    const sot = onRemote(load('sot'));
    expect(() => runGraph(sot, { question: 'How do I plan a small garden?' }, { engine: local, engineFor: pool.forGraph(sot) })).toThrow(
      /skeleton node starts the assistant's answer itself.*continueFinalMessage: false/,
    );
  });
});
