/**
 * `skein bench healthz`: how long `/healthz` takes to answer, on a real socket, while four
 * 1 MiB chat prompts are sent at once and refused for being longer than the context. The
 * prompts are rendered and tokenized in the engine's worker, after a context check that
 * needs only their length, so the HTTP event loop stays free. For contrast, the same four
 * prompts tokenized on the main thread (what the server did before #16) under the same
 * polling. Ratio healthz_p99_main_tokenize_vs_server = p99 with main-thread tokenizing /
 * p99 while the server refuses them. Target: the server's p99 under 50 ms.
 *
 * The client sending the prompts runs in a worker thread (soak-client.ts), booted before
 * the clock starts, so that writing 4 MiB of request bodies is not counted as the server's
 * work; the poller stays in the server's thread (see soak.ts for why).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer } from '../server/index.js';
import { percentile, round } from '../engine/bench-support.js';
import { registerBench } from './index.js';
import { pollHealthz, postInWorker } from './soak-client.js';

const PROMPTS = 4;
// Just under the default 1 MiB body limit once wrapped in the chat request.
const PROMPT_CHARS = 1_000_000;
const POLL_MS = 5;

/** Polls /healthz while `work` runs; returns each answer's latency in ms. */
async function pollWhile(base: string, work: () => Promise<unknown>): Promise<{ latencies: number[]; workMs: number }> {
  const poll = pollHealthz(base, POLL_MS);
  await poll.ready;
  const t0 = performance.now();
  await work();
  const workMs = performance.now() - t0;
  const { latencies } = await poll.stop();
  return { latencies, workMs };
}

registerBench('healthz', {
  description: '/healthz latency (p99) while 4 × 1 MiB prompts are refused, vs tokenizing them on the main thread',
  async run({ log, args }) {
    const server = await startServer({ port: 0, build: false, print: () => {}, log: () => {}, ...(args?.model ? { model: args.model } : {}) });
    const base = server.url.replace(/\/$/, '');
    try {
      const prompt = 'All work and no play makes a dull prompt. '.repeat(Math.ceil(PROMPT_CHARS / 43)).slice(0, PROMPT_CHARS);
      const body = JSON.stringify({ messages: [{ role: 'user', content: prompt }], max_tokens: 8 });
      let statuses: number[] = [];
      const idle = await pollWhile(base, () => sleep(1000));
      const sender = postInWorker(`${base}/v1/chat/completions`, body, PROMPTS);
      await sender.ready;
      const served = await pollWhile(base, async () => {
        statuses = await sender.send();
      });
      const mainThread = await pollWhile(base, async () => {
        for (let i = 0; i < PROMPTS; i++) {
          server.engine.tokenize(prompt);
          // Let the poller in between, as the old per-request tokenizing did.
          await new Promise((r) => setImmediate(r));
        }
      });
      const p99 = (x: { latencies: number[] }) => round(percentile(x.latencies, 99), 1);
      log(
        `healthz: p99 ${p99(served)} ms while ${PROMPTS} × 1 MiB prompts are refused (statuses ${[...new Set(statuses)].join(',')}, ${round(served.workMs, 0)} ms), ` +
          `${p99(mainThread)} ms while the main thread tokenizes them, ${p99(idle)} ms idle`,
      );
      return {
        ratios: { healthz_p99_main_tokenize_vs_server: round(p99(mainThread) / Math.max(p99(served), 0.1)) },
        model: server.engine.modelName,
        prompts: PROMPTS,
        promptChars: PROMPT_CHARS,
        statuses,
        server: { p99Ms: p99(served), p50Ms: round(percentile(served.latencies, 50), 1), polls: served.latencies.length, refuseMs: round(served.workMs, 0) },
        mainThreadTokenize: { p99Ms: p99(mainThread), polls: mainThread.latencies.length, tokenizeMs: round(mainThread.workMs, 0) },
        idle: { p99Ms: p99(idle), polls: idle.latencies.length },
        targetP99Ms: 50,
      };
    } finally {
      await server.close();
    }
  },
});
