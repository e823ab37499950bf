/**
 * `skein bench healthz`: how long `/healthz` takes to answer, on a real socket, while four
 * 1 MiB chat prompts are sent at once and refused for being longer than the context. The
 * prompts are rendered and tokenized in the engine's worker, after a context check that
 * needs only their length, so the HTTP event loop stays free. For contrast, the same four
 * prompts tokenized on the main thread (what the server did before #16) under the same
 * polling. Ratio healthz_p99_main_tokenize_vs_server = p99 with main-thread tokenizing /
 * p99 while the server refuses them. Target: the server's p99 under 50 ms.
 */
import { startServer } from '../server/index.js';
import { percentile, round } from '../engine/bench-support.js';
import { registerBench } from './index.js';

const PROMPTS = 4;
// Just under the default 1 MiB body limit once wrapped in the chat request.
const PROMPT_CHARS = 1_000_000;
const POLL_MS = 5;

/** Polls /healthz every POLL_MS while `work` runs; returns each answer's latency in ms. */
async function pollWhile(url: string, work: () => Promise<unknown>): Promise<{ latencies: number[]; workMs: number; failures: string[] }> {
  const latencies: number[] = [];
  const failures: string[] = [];
  let done = false;
  const poller = (async () => {
    while (!done) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${url}healthz`);
        await res.arrayBuffer();
        latencies.push(performance.now() - t0);
      } catch (err) {
        failures.push(`${(err as Error).message}: ${String((err as { cause?: unknown }).cause)}`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  })();
  const t0 = performance.now();
  await work();
  const workMs = performance.now() - t0;
  done = true;
  await poller;
  return { latencies, workMs, failures };
}

registerBench('healthz', {
  description: '/healthz latency (p99) while 4 × 1 MiB prompts are refused, vs tokenizing them on the main thread',
  async run({ log, args }) {
    const server = await startServer({ port: 0, build: false, print: () => {}, log: () => {}, ...(args?.model ? { model: args.model } : {}) });
    try {
      const prompt = 'All work and no play makes a dull prompt. '.repeat(Math.ceil(PROMPT_CHARS / 43)).slice(0, PROMPT_CHARS);
      const body = JSON.stringify({ messages: [{ role: 'user', content: prompt }], max_tokens: 8 });
      const statuses: number[] = [];
      const refuse = () =>
        Promise.all(
          Array.from({ length: PROMPTS }, async () => {
            const res = await fetch(`${server.url}v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
            await res.arrayBuffer();
            statuses.push(res.status);
          }),
        );
      const idle = await pollWhile(server.url, () => new Promise((r) => setTimeout(r, 1000)));
      const served = await pollWhile(server.url, refuse);
      const mainThread = await pollWhile(server.url, async () => {
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
        pollFailures: [...served.failures, ...mainThread.failures, ...idle.failures],
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
