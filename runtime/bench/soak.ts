/**
 * `skein bench soak`: the server under abuse, from outside, on a real socket. N random
 * graphs (an input, a template, one to three generate branches joined, random short
 * lengths) are started over HTTP; a random third are cancelled at a random moment; random
 * bad bodies (malformed JSON, wrong Content-Type, 200-deep nesting, `__proto__` keys,
 * invalid graphs, a 1 MiB prompt) are sent in between; halfway the engine's worker is
 * killed. Every run must reach a run-end (lost = 0), no response may be a 5xx (`/healthz`
 * answers 503 while the worker restarts, which is its job, and requests in flight on the
 * killed worker get their typed 503 `engine_unavailable`: both are counted apart), and KV
 * blocks in use and the worker's tf tensors must be back at their baseline at the end —
 * tensors counted without those of KV blocks, since finished prompts stay in the prefix
 * cache (evictable, reported apart as cached blocks).
 *
 * Runs are stored in SQLite as `skein serve` does (a temporary data folder). The traffic
 * runs in a worker thread of its own (soak-client.ts), so that its HTTP client work (SSE
 * parsing, 1 MiB bodies) is not counted as the server's; `--arg client=inline` runs it in
 * the server's thread instead, as the bench did first. The `/healthz` poller stays in the
 * server's thread: its latency is then the server loop's turnaround, without the
 * cross-thread wake-ups that a loaded 2-core box delays by tens of ms (a poller in its
 * own thread measured 104 ms p99 where the loop's own delay p99 was 48 ms). The event-loop
 * delay (perf_hooks) is reported beside it.
 *
 * npx skein bench soak --json [--arg n=40] [--arg model=skein-mini] [--arg client=inline]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { percentile, round } from '../engine/bench-support.js';
import type { EngineFront } from '../engine/front.js';
import { startServer } from '../server/index.js';
import { registerBench } from './index.js';
import { pollHealthz, runTraffic, runTrafficInWorker } from './soak-client.js';

/** The worker's tensors that KV blocks do not hold (null on a main-thread engine). */
const nonKv = (s: { tensors?: number; kvTensors: number }): number | null => (s.tensors === undefined ? null : s.tensors - s.kvTensors);

registerBench('soak', {
  description: 'random graphs, random cancels, bad bodies and a worker kill: runs lost, 5xx, KV and tensors back at baseline, /healthz p99',
  async run({ log, args }) {
    const n = Number(args?.n ?? 40);
    const seed = Number(args?.seed ?? 1);
    const inline = args?.client === 'inline';
    // Runs are stored as `skein serve` stores them (SQLite in a data folder), so their writes are part of what is measured.
    const dataDir = mkdtempSync(join(tmpdir(), 'skein-soak-'));
    const server = await startServer({ port: 0, build: false, print: () => {}, log: () => {}, model: args?.model ?? 'skein-mini', maxConcurrentRuns: 64, dataDir });
    const engine = server.engine as EngineFront;
    const base = server.url.replace(/\/$/, '');
    const warmUp = async () => {
      const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }) });
      await res.arrayBuffer();
    };
    const loop = monitorEventLoopDelay({ resolution: 5 });
    try {
      // Baseline after one warm-up generation, so lazily made tensors are counted in it.
      await warmUp();
      const baseline = engine.stats();
      log(`soak: ${n} runs on ${engine.modelName}, client ${inline ? 'in the server thread' : 'in worker threads'}; baseline ${baseline.kvBlocksUsed} KV blocks, ${nonKv(baseline)} tensors outside KV`);
      let killed: Promise<void> | null = null;
      const kill = () => {
        log('soak: killing the engine worker');
        killed = engine.killWorker();
      };
      loop.enable();
      const poll = pollHealthz(base);
      await poll.ready;
      const traffic = await (inline ? runTraffic({ base, n, seed }, kill) : runTrafficInWorker({ base, n, seed }, kill));
      await killed;
      const health = await poll.stop();
      loop.disable();
      // The same warm-up as before the baseline: a restarted worker makes its lazy tensors
      // on its first generation. Stats arrive with the worker's messages: let them settle.
      await warmUp();
      await sleep(500);
      const end = engine.stats();
      const { outcomes } = traffic;
      const count = (status: string) => outcomes.filter((o) => o.status === status).length;
      const failures: Record<string, number> = Object.create(null);
      for (const o of outcomes) if (o.status === 'error') failures[o.code ?? 'unknown'] = (failures[o.code ?? 'unknown'] ?? 0) + 1;
      const figures = {
        client: inline ? 'inline' : 'workers',
        runsStarted: traffic.runsStarted,
        runsCompleted: count('ok'),
        runsCancelled: count('cancelled'),
        runsFailed: count('error'),
        failuresByCode: { ...failures },
        runsLost: count('lost'),
        badBodies: traffic.badBodies,
        badBodiesAnswered4xx: traffic.badBodiesAnswered4xx,
        status5xx: traffic.serverErrors.length + health.other5xx,
        // Requests and polls that got no answer at all (a reset or refused connection): must be 0.
        networkErrors: [...traffic.networkErrors, ...health.failures.map((f) => `GET /healthz at ${f}`)],
        serverErrors: traffic.serverErrors,
        engineUnavailable503: traffic.engineUnavailable503,
        healthz503WhileRestarting: health.degraded503,
        workerRestarts: engine.health().restarts,
        kvBlocks: { baseline: baseline.kvBlocksUsed, end: end.kvBlocksUsed },
        kvBlocksCached: end.kvBlocksCached,
        // Outside the KV blocks: the model's and the forward's own tensors, which must not grow.
        tensors: { baseline: nonKv(baseline), end: nonKv(end) },
        healthzP99Ms: round(percentile(health.latencies, 99), 1),
        healthzP50Ms: round(percentile(health.latencies, 50), 1),
        healthzPolls: health.latencies.length,
        // How late the server's event loop ran its timers (p99, max): its own stalls, whatever the client does.
        eventLoopDelayMs: { p99: round(loop.percentile(99) / 1e6, 1), max: round(loop.max / 1e6, 1) },
      };
      log(
        `soak: ${figures.runsCompleted} ok, ${figures.runsCancelled} cancelled, ${figures.runsFailed} failed, ${figures.runsLost} lost; ` +
          `${figures.status5xx} 5xx (${figures.engineUnavailable503} typed 503s from the killed worker apart), ${figures.networkErrors.length} unanswered; KV in use ${end.kvBlocksUsed}/${baseline.kvBlocksUsed} (${end.kvBlocksCached} cached), ` +
          `tensors outside KV ${nonKv(end)}/${nonKv(baseline)}; /healthz p99 ${figures.healthzP99Ms} ms; event-loop delay p99 ${figures.eventLoopDelayMs.p99} ms`,
      );
      return figures;
    } finally {
      loop.disable();
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
});
