/**
 * `skein bench llamacpp`: Skein next to llama.cpp (node-llama-cpp's CPU build, a
 * devDependency) on the same GGUF file, default SmolLM2-135M-Instruct Q4_1, in one
 * process: load time, RSS added by the load, prefill tok/s (128 tokens) and decode tok/s
 * (greedy, 32 tokens, batch 1). Both sides run on one thread (Skein's wasm backend runs
 * one), get a warm-up, and alternate A B A B over `reps` rounds (default 3); figures are
 * medians, with llama.cpp / Skein ratios.
 *
 * @example
 * npx skein bench llamacpp --arg reps=3 --json
 */
import { last, lastValueFrom } from 'rxjs';
import { NotAvailableError } from '../../core/errors.js';
import { loadModel, resolveModel, type LoadedCheckpoint } from '../checkpoint/load.js';
import { benchPrompt, interleaved, median, round } from '../engine/bench-support.js';
import { engineOnModel } from '../engine/index.js';
import { forward } from '../model/forward.js';
import { catalogueEntry } from '../pull/catalogue.js';
import { DEFAULT_MODEL } from '../pull/default-model.js';
import { installedPath } from '../pull/pull.js';
import { registerBench } from './index.js';

const PREFILL = 128;
const DECODE = 32;

function rssMb(): number {
  return process.memoryUsage().rss / 2 ** 20;
}

function skeinPrefill(model: LoadedCheckpoint, ids: number[]): number {
  const t0 = performance.now();
  const [r] = forward(model, [{ ids, logits: 'last' }]);
  for (const e of r!.newKv) e?.k.dispose(), e?.v.dispose();
  return (ids.length * 1000) / (performance.now() - t0);
}

/** Greedy decode on the shared engine (the scheduler every run uses), over the loaded model. */
async function skeinDecode(model: LoadedCheckpoint, ids: number[]): Promise<number> {
  const engine = engineOnModel(model, null);
  try {
    const done = await lastValueFrom(engine.generate({ ids, sampling: { maxTokens: DECODE, temperature: 0 } }).pipe(last()));
    if (done.type !== 'done') throw new Error('generation ended without a result');
    return done.metrics.decodeTokensPerSec;
  } finally {
    await engine.close();
  }
}

registerBench('llamacpp', {
  description: 'Skein vs llama.cpp on the same GGUF: load time, RSS, prefill and decode tok/s (1 thread each, interleaved)',
  async run({ log, args = {} }) {
    const location = resolveModel(args.model ?? installedPath(catalogueEntry(DEFAULT_MODEL)));
    if (location.format !== 'gguf') throw new NotAvailableError('bench llamacpp', `needs a GGUF model (llama.cpp reads no other format); ${location.dir} is a Hugging Face folder`);
    const file = location.file;
    const reps = Number(args.reps ?? 3);
    let llamaCpp: typeof import('node-llama-cpp');
    try {
      llamaCpp = await import('node-llama-cpp');
    } catch (err) {
      throw new Error(`node-llama-cpp (a devDependency) is not installed: ${(err as Error).message}`);
    }
    const llama = await llamaCpp.getLlama({ gpu: false, build: 'never', logLevel: llamaCpp.LlamaLogLevel.error });
    log(`llamacpp: ${file}, ${reps} interleaved rounds, 1 thread each`);

    // Load: first loads measure RSS added; later ones are timed with a warm file cache on both sides.
    const rss0 = rssMb();
    let skein = await loadModel(file);
    const rssSkein = rssMb() - rss0;
    let lmodel = await llama.loadModel({ modelPath: file });
    let lcontext = await lmodel.createContext({ contextSize: 512, threads: 1 });
    const rssLlama = rssMb() - rss0 - rssSkein;
    const [skeinLoad, llamaLoad] = await interleaved(reps, [
      async () => {
        skein.dispose();
        const t0 = performance.now();
        skein = await loadModel(file);
        return performance.now() - t0;
      },
      async () => {
        await lcontext.dispose();
        await lmodel.dispose();
        const t0 = performance.now();
        lmodel = await llama.loadModel({ modelPath: file });
        lcontext = await lmodel.createContext({ contextSize: 512, threads: 1 });
        return performance.now() - t0;
      },
    ]);
    const sequence = lcontext.getSequence();

    const prompt = benchPrompt(PREFILL, 7);
    const llamaPrefill = async () => {
      await sequence.clearHistory();
      const t0 = performance.now();
      await sequence.controlledEvaluate([...prompt.slice(0, -1), [prompt.at(-1)!, { generateNext: { logits: { filter: { tokens: [], includeMax: true } } } }]] as never);
      return (prompt.length * 1000) / (performance.now() - t0);
    };
    const short = benchPrompt(16, 3);
    const llamaDecode = async () => {
      await sequence.clearHistory();
      let n = 0;
      let tFirst = 0;
      for await (const _ of sequence.evaluate(short as never, { temperature: 0 })) {
        if (n++ === 0) tFirst = performance.now();
        if (n > DECODE) break;
      }
      return (DECODE * 1000) / (performance.now() - tFirst);
    };
    log('llamacpp: warm-up');
    skeinPrefill(skein, prompt);
    await skeinDecode(skein, short);
    await llamaPrefill();
    await llamaDecode();
    const [sp, lp, sd, ld] = await interleaved(reps, [
      async () => skeinPrefill(skein, prompt),
      llamaPrefill,
      () => skeinDecode(skein, short),
      llamaDecode,
    ]);

    const figures = {
      file,
      reps,
      threads: 1,
      skein: { loadMs: round(median(skeinLoad!), 0), rssMb: round(rssSkein, 0), prefillTokPerSec: round(median(sp!), 1), decodeTokPerSec: round(median(sd!), 1) },
      llamaCpp: { loadMs: round(median(llamaLoad!), 0), rssMb: round(rssLlama, 0), prefillTokPerSec: round(median(lp!), 1), decodeTokPerSec: round(median(ld!), 1) },
      ratios: {
        loadLlamaOverSkein: 0,
        prefillLlamaOverSkein: round(median(lp!) / median(sp!)),
        decodeLlamaOverSkein: round(median(ld!) / median(sd!)),
      },
    };
    figures.ratios.loadLlamaOverSkein = round(figures.llamaCpp.loadMs / figures.skein.loadMs);
    log(`load     skein ${figures.skein.loadMs} ms, llama.cpp ${figures.llamaCpp.loadMs} ms`);
    log(`RSS      skein +${figures.skein.rssMb} MB, llama.cpp +${figures.llamaCpp.rssMb} MB (added by the first load)`);
    log(`prefill  skein ${figures.skein.prefillTokPerSec} tok/s, llama.cpp ${figures.llamaCpp.prefillTokPerSec} tok/s (${figures.ratios.prefillLlamaOverSkein}× ) on ${PREFILL} tokens`);
    log(`decode   skein ${figures.skein.decodeTokPerSec} tok/s, llama.cpp ${figures.llamaCpp.decodeTokPerSec} tok/s (${figures.ratios.decodeLlamaOverSkein}×) over ${DECODE} tokens, batch 1`);

    await sequence.dispose();
    await lcontext.dispose();
    await lmodel.dispose();
    await llama.dispose();
    skein.dispose();
    return figures;
  },
});
