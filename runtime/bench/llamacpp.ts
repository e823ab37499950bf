/**
 * The llama.cpp side of the decode bench: node-llama-cpp (devDependency, CPU build) on a
 * GGUF file, timed the way the Skein side is — prefill as one evaluation of n tokens,
 * decode as the mean over every generated token after a warm-up, batch-N decode as N
 * sequences of one context generating together (node-llama-cpp batches them per step).
 *
 * @example
 * const side = await openLlamaCpp(file, { threads: 1, sequences: 16, contextSize: 2048 });
 * const tps = await side.decode(prompt, 16); // tokens/s
 * await side.close();
 */
import type { Token } from 'node-llama-cpp';

export interface LlamaCppSide {
  /** Tokens/s of one prefill of `ids` on a cleared sequence. */
  prefill(ids: number[]): Promise<number>;
  /** Mean ms of a decode step with `ids` as context, over `steps` steps after `warm` ones. */
  decodeStepMs(ids: number[], steps: number, warm?: number): Promise<number>;
  /** Tokens/s of `batch` sequences decoding `steps` tokens each over a shared-length prompt. */
  decodeBatch(ids: number[], batch: number, steps: number): Promise<number>;
  close(): Promise<void>;
}

export async function openLlamaCpp(file: string, opts: { threads: number; sequences: number; contextSize: number }): Promise<LlamaCppSide> {
  const { getLlama } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({ threads: opts.threads, sequences: opts.sequences, contextSize: opts.contextSize * opts.sequences, batchSize: 512 });
  const seqs = Array.from({ length: opts.sequences }, () => context.getSequence());
  const tok = (ids: number[]) => ids as Token[];

  /** Times `steps` generated tokens of one sequence after `warm` untimed ones; ms per step. */
  async function generate(seq: (typeof seqs)[number], last: number, steps: number, warm: number): Promise<number> {
    const it = seq.evaluate(tok([last]), { temperature: 0 });
    let t0 = performance.now();
    let n = 0;
    for await (const _ of it) {
      n++;
      if (n === warm) t0 = performance.now();
      if (n === warm + steps) break;
    }
    return (performance.now() - t0) / steps;
  }

  return {
    async prefill(ids) {
      const seq = seqs[0]!;
      await seq.clearHistory();
      const t0 = performance.now();
      await seq.evaluateWithoutGeneratingNewTokens(tok(ids));
      const ms = performance.now() - t0;
      await seq.clearHistory();
      return (ids.length * 1000) / ms;
    },
    async decodeStepMs(ids, steps, warm = 2) {
      const seq = seqs[0]!;
      await seq.clearHistory();
      await seq.evaluateWithoutGeneratingNewTokens(tok(ids.slice(0, -1)));
      const ms = await generate(seq, ids.at(-1)!, steps, warm);
      await seq.clearHistory();
      return ms;
    },
    async decodeBatch(ids, batch, steps) {
      const used = seqs.slice(0, batch);
      for (const s of used) await s.clearHistory();
      await Promise.all(used.map((s) => s.evaluateWithoutGeneratingNewTokens(tok(ids.slice(0, -1)))));
      const t0 = performance.now();
      await Promise.all(used.map((s) => generate(s, ids.at(-1)!, steps, 0)));
      const ms = performance.now() - t0;
      for (const s of used) await s.clearHistory();
      return (batch * steps * 1000) / ms;
    },
    async close() {
      await context.dispose();
      await model.dispose();
    },
  };
}
