/**
 * `skein bench remote`: generate-like nodes on a remote provider, here a second Skein
 * server in its own process (`skein serve` on the same model, loopback), reached through
 * its OpenAI-compatible API by runtime/providers/openai-engine.ts.
 *
 * - SoT over the remote: the K point expansions of one question+skeleton (the expand
 *   operator, each point continuing its "i. point" assistant prefix) sent concurrently,
 *   so the remote batches them and its prefix cache shares the question+skeleton prefix,
 *   vs one after another. remote_sot_concurrent_vs_serial = serial wall time / concurrent
 *   wall time (a speedup; medians of REPS, interleaved). Each measurement asks its own
 *   question, so nothing is cached from an earlier one; `cachedPromptTokens` is what the
 *   remote's usage says it served from its prefix cache.
 * - compress before a remote call: passage-QA prompts compressed to 33 % here, on the
 *   local engine, then sent, vs sent whole. remote_compress33_tokens_vs_full = prompt
 *   tokens the remote read compressed / whole (below 1 is fewer; its own usage block);
 *   the end-to-end time of both (compression included) is reported beside it.
 *
 * @example
 * npx skein bench remote --json
 */
import { lastValueFrom, of, toArray } from 'rxjs';
import { map } from 'rxjs';
import type { Engine, GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { NotAvailableError } from '../../core/errors.js';
import { expand } from '../../operators/expand.js';
import type { Skeleton } from '../../operators/internal/sot.js';
import { benchModel, interleaved, median, round } from '../engine/bench-support.js';
import { createEngine } from '../engine/index.js';
import { ProviderPool } from '../providers/pool.js';
import { spawnSkeinServer } from '../server/spawn.js';
import { registerBench } from './index.js';

const POINTS = ['Choose a sunny spot', 'Test and improve the soil', 'Pick easy plants', 'Plan the watering', 'Add paths and borders', 'Keep a garden diary'];
const EXPAND_TOKENS = 32;
const REPS = 2;
const ANSWER_TOKENS = 16;

const PASSAGE =
  'The Corner Bakery on Mill Street opens at seven in the morning. Its two bakers, Ana and Tom, start baking at four, and the first loaves sell out within an hour. ' +
  'The bakery makes white bread, rye bread and cinnamon rolls. On Mondays it sells only rye bread, because the big oven is cleaned that day. On Sundays the bakery is closed. ' +
  "In summer it also sells lemonade, made from lemons that Tom's sister grows. A loaf of rye costs three euros, and a cinnamon roll costs two. " +
  'The shop has four small tables by the window, and regulars often sit there with the morning paper. Last year the bakery won a prize at the town fair for its rye bread, ' +
  'and since then people come from the villages around to buy it. Ana wants to open a second shop near the station, but Tom thinks they should first buy a bigger oven.';
const QUESTIONS = ['On which day is the bakery closed?', 'Who grows the lemons?', 'What does a loaf of rye cost?', 'When do the bakers start baking?'];

/** Counts what the remote says it served from its prefix cache. */
function counting(engine: Engine, cached: { tokens: number }): Engine {
  return Object.assign(Object.create(engine) as Engine, {
    generate: (request: GenerateRequest) =>
      engine.generate(request).pipe(
        map((e: GenerateEvent) => {
          if (e.type === 'done') cached.tokens += e.usage.cachedPromptTokens;
          return e;
        }),
      ),
  });
}

registerBench('remote', {
  description: 'Remote provider (a second Skein process): SoT points concurrent vs serial; local compress before a remote call vs uncompressed',
  async run({ log, args }) {
    const model = benchModel(args);
    if (typeof model !== 'string') throw new NotAvailableError('remote bench', 'needs a model folder or name for the remote server (skein-mini, or --model)');
    log(`remote: starting skein serve --model ${model} in a second process`);
    const server = await spawnSkeinServer({ model, timeoutMs: 180_000 });
    const local = await createEngine({ model, thread: 'main' });
    const pool = new ProviderPool({ local });
    try {
      const served = ((await (await fetch(new URL('/v1/models', server.url))).json()) as { data: { id: string }[] }).data[0]!.id;
      const far = pool.engine('far', { type: 'openai', baseUrl: `${server.url}v1`, model: served, timeoutMs: 300_000, maxConcurrency: 16 });
      const figures: Record<string, unknown> = { model: served, remote: server.url, points: POINTS.length, expandTokens: EXPAND_TOKENS };

      let asked = 0;
      const sot = async (concurrency: number) => {
        const question = `Case ${++asked}: How do I plan a small garden?`;
        const skeleton: Skeleton = { question, outline: POINTS.map((p, i) => `${i + 1}. ${p}`).join('\n'), points: POINTS };
        const cached = { tokens: 0 };
        const t0 = performance.now();
        await lastValueFrom(of(skeleton).pipe(expand({ engine: counting(far, cached), concurrency, sampling: { maxTokens: EXPAND_TOKENS } }), toArray()));
        return { ms: performance.now() - t0, cached: cached.tokens };
      };
      await sot(POINTS.length); // warm-up: kernels for the batched shapes on the remote
      const [conc, ser] = await interleaved(REPS, [() => sot(POINTS.length), () => sot(1)]);
      const ms = (xs: { ms: number }[]) => median(xs.map((x) => x.ms));
      const ratios: Record<string, number> = { remote_sot_concurrent_vs_serial: round(ms(ser!) / ms(conc!)) };
      figures.sot = { concurrentMs: round(ms(conc!), 1), serialMs: round(ms(ser!), 1), cachedPromptTokensConcurrent: conc![0]!.cached, cachedPromptTokensSerial: ser![0]!.cached };
      log(`remote sot: ${POINTS.length} points concurrent ${ms(conc!).toFixed(0)} ms, serial ${ms(ser!).toFixed(0)} ms (${ratios.remote_sot_concurrent_vs_serial}×)`);

      const answer = async (question: string, n: number, rate?: number) => {
        const prompt = `Read the passage and answer the question.\n\nPassage (${n}):\n${PASSAGE}\n\nQuestion: ${question}\nAnswer:`;
        const t0 = performance.now();
        const events = await lastValueFrom(
          far
            .generate({
              messages: [{ role: 'user', content: prompt }],
              sampling: { maxTokens: ANSWER_TOKENS },
              ...(rate !== undefined ? { stages: { compress: { rate, keep: [`Question: ${question}`, 'Answer:'] } } } : {}),
            })
            .pipe(toArray()),
        );
        const done = events.at(-1) as Extract<GenerateEvent, { type: 'done' }>;
        return { ms: performance.now() - t0, tokens: done.usage.promptTokens, text: done.text };
      };
      let n = 0;
      const full: { ms: number; tokens: number }[] = [];
      const compressed: { ms: number; tokens: number }[] = [];
      for (const q of QUESTIONS) {
        full.push(await answer(q, ++n));
        compressed.push(await answer(q, ++n, 0.33));
      }
      const sum = (xs: { tokens: number }[]) => xs.reduce((a, x) => a + x.tokens, 0);
      const meanMs = (xs: { ms: number }[]) => xs.reduce((a, x) => a + x.ms, 0) / xs.length;
      ratios.remote_compress33_tokens_vs_full = round(sum(compressed) / sum(full), 3);
      ratios.remote_compress33_time_vs_full = round(meanMs(compressed) / meanMs(full), 3);
      figures.compress = {
        items: QUESTIONS.length,
        promptTokensFull: sum(full),
        promptTokensCompressed33: sum(compressed),
        meanMsFull: round(meanMs(full), 1),
        meanMsCompressed33: round(meanMs(compressed), 1),
      };
      log(
        `remote compress: ${sum(full)} prompt tokens sent whole, ${sum(compressed)} compressed to 33 % (${ratios.remote_compress33_tokens_vs_full}×); ` +
          `end to end ${meanMs(full).toFixed(0)} ms vs ${meanMs(compressed).toFixed(0)} ms`,
      );
      return { ratios, ...figures };
    } finally {
      await pool.close();
      await local.close();
      server.stop();
    }
  },
});
