/**
 * Prometheus metrics of one server (prom-client, a registry per app so that tests and
 * several apps in one process never collide): runs by outcome, tokens and the recent
 * token rate, time to first token, and the engine's KV blocks and queue depth read
 * at scrape time.
 *
 * @example
 * const metrics = createMetrics(engine);
 * metrics.tokens(12);
 * const text = await metrics.registry.metrics();
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine } from '../../core/engine.js';

// The token rate is averaged over this window: long enough to be steady, short enough to
// drop to zero soon after work stops.
const RATE_WINDOW_MS = 10_000;

export interface ServerMetrics {
  registry: Registry;
  runStarted(): void;
  runEnded(status: string): void;
  tokens(count: number): void;
  ttft(ms: number): void;
  chatCompletion(stream: boolean): void;
  /** A chat completion whose client went away before the end (its generation was cancelled). */
  chatCompletionCancelled(): void;
  /** A legacy text completion (POST /v1/completions). */
  textCompletion(stream: boolean): void;
}

export function createMetrics(engine: Engine, activeRuns: () => number): ServerMetrics {
  const registry = new Registry();
  const runs = new Counter({ name: 'skein_runs_total', help: 'Graph runs, by final status.', labelNames: ['status'], registers: [registry] });
  const started = new Counter({ name: 'skein_runs_started_total', help: 'Graph runs started.', registers: [registry] });
  new Gauge({
    name: 'skein_runs_active',
    help: 'Runs and completions in progress.',
    registers: [registry],
    collect() {
      this.set(activeRuns());
    },
  });
  const tokens = new Counter({ name: 'skein_tokens_generated_total', help: 'Tokens generated.', registers: [registry] });
  // (time, count) pairs inside the rate window, oldest first.
  const recent: Array<[number, number]> = [];
  new Gauge({
    name: 'skein_tokens_per_second',
    help: `Tokens generated per second over the last ${RATE_WINDOW_MS / 1000} s.`,
    registers: [registry],
    collect() {
      const now = Date.now();
      while (recent.length && recent[0]![0] < now - RATE_WINDOW_MS) recent.shift();
      let sum = 0;
      for (const [, n] of recent) sum += n;
      this.set(sum / (RATE_WINDOW_MS / 1000));
    },
  });
  const ttft = new Histogram({
    name: 'skein_ttft_seconds',
    help: 'Time to first token of each generating node and completion.',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const completions = new Counter({
    name: 'skein_chat_completions_total',
    help: 'OpenAI-compatible chat completions.',
    labelNames: ['stream'],
    registers: [registry],
  });
  const completionsCancelled = new Counter({
    name: 'skein_chat_completions_cancelled_total',
    help: 'Chat completions whose client went away before the end; their generation was cancelled and its KV freed.',
    registers: [registry],
  });
  const textCompletions = new Counter({
    name: 'skein_text_completions_total',
    help: 'OpenAI-compatible legacy text completions.',
    labelNames: ['stream'],
    registers: [registry],
  });
  const engineGauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  engineGauge('skein_kv_blocks_used', 'KV blocks in use.', () => engine.stats().kvBlocksUsed);
  engineGauge('skein_kv_blocks_shared', 'KV blocks shared by more than one sequence.', () => engine.stats().kvBlocksShared);
  engineGauge('skein_kv_blocks_total', 'KV blocks in the pool.', () => engine.stats().kvBlocksTotal);
  engineGauge('skein_aux_cache_entries', 'Pruned tokens parked in LazyLLM Aux Caches (their memory is in the KV blocks used).', () => engine.stats().auxCacheEntries ?? 0);
  engineGauge('skein_queue_depth', 'Sequences waiting for the scheduler.', () => engine.stats().queueDepth);
  engineGauge('skein_running_sequences', 'Sequences being generated.', () => engine.stats().runningSequences);
  engineGauge('skein_engine_up', '1 while the model runtime serves, 0 while its worker is being restarted.', () =>
    (engine.health?.().status ?? 'ok') === 'ok' ? 1 : 0,
  );
  engineGauge('skein_engine_restarts', 'Model worker restarts since the server started.', () => engine.health?.().restarts ?? 0);

  return {
    registry,
    runStarted: () => started.inc(),
    runEnded: (status) => runs.inc({ status }),
    tokens(count) {
      if (count <= 0) return;
      tokens.inc(count);
      recent.push([Date.now(), count]);
      if (recent.length > 100_000) recent.splice(0, recent.length - 50_000);
    },
    ttft: (ms) => ttft.observe(ms / 1000),
    chatCompletion: (stream) => completions.inc({ stream: String(stream) }),
    chatCompletionCancelled: () => completionsCancelled.inc(),
    textCompletion: (stream) => textCompletions.inc({ stream: String(stream) }),
  };
}
