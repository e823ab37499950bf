/**
 * Embeddings on the engine's own model: an input's vector is the mean of the final hidden
 * states (after the final norm) of its tokens, L2-normalised. The served models are
 * generative chat models, not trained as embedding models: their pooled states place
 * similar texts nearer than unrelated ones, but are no match for a model trained for
 * retrieval. The vectors are what the model gives, not more.
 *
 * The work runs on the model's thread between the scheduler's steps, at most
 * `tokensPerStep` tokens per step, so decoding sequences keep their pace while a large
 * request is embedded: the inputs of one or several requests share one batched forward
 * (`hiddenOnly`: no LM head), and an input longer than a step's budget goes in chunks,
 * its keys and values carried to the next chunk outside the KV pool (no blocks are taken,
 * nothing is cached) and freed when it is done, cancelled or failed.
 *
 * @example
 * const queue = new EmbeddingQueue(model);
 * queue.submit('r1', [[1, 2, 3]], (vectors) => console.log(vectors[0]!.length), console.error);
 * while (queue.hasWork()) queue.step();
 */
import * as tf from '@tensorflow/tfjs-core';
import { forward } from '../model/forward.js';
import type { ForwardSequence, LayerKvChunks, LoadedModel } from '../model/types.js';

/**
 * Tokens per step: a step of 512 tokens on SmolLM2 costs about what a prefill chunk
 * does, so decoding sequences wait no longer for embeddings than for a new prompt.
 */
export const EMBED_TOKENS_PER_STEP = 512;

interface InputState {
  index: number;
  ids: number[];
  /** Tokens already run. */
  done: number;
  /** Sum of the hidden rows so far (f64: thousands of rows are added). */
  sum: Float64Array;
  /** Keys and values of the tokens already run, per layer; absent before the first chunk. */
  past?: LayerKvChunks[];
}

interface Job {
  requestId: string;
  /** Inputs still running, in order. */
  waiting: InputState[];
  vectors: Float32Array[];
  resolve: (vectors: Float32Array[]) => void;
  reject: (error: Error) => void;
}

export class EmbeddingQueue {
  private readonly jobs: Job[] = [];

  constructor(
    private readonly model: LoadedModel,
    private readonly tokensPerStep = EMBED_TOKENS_PER_STEP,
  ) {}

  /** Queues one request's inputs (checked token ids); one vector per input comes back in order. */
  submit(requestId: string, inputs: number[][], resolve: (vectors: Float32Array[]) => void, reject: (error: Error) => void): void {
    const hidden = this.model.config.hiddenSize;
    this.jobs.push({
      requestId,
      waiting: inputs.map((ids, index) => ({ index, ids, done: 0, sum: new Float64Array(hidden) })),
      vectors: new Array<Float32Array>(inputs.length),
      resolve,
      reject,
    });
  }

  hasWork(): boolean {
    return this.jobs.length > 0;
  }

  /** One batched forward over the next chunks of the oldest requests' inputs. */
  step(): void {
    const batch: Array<{ job: Job; input: InputState; ids: number[] }> = [];
    let budget = this.tokensPerStep;
    for (const job of this.jobs) {
      for (const input of job.waiting) {
        if (budget === 0) break;
        const ids = input.ids.slice(input.done, input.done + budget);
        budget -= ids.length;
        batch.push({ job, input, ids });
      }
      if (budget === 0) break;
    }
    if (batch.length === 0) return;
    const seqs: ForwardSequence[] = batch.map(({ input, ids }) => ({ ids, hiddenOnly: true, ...(input.past ? { past: input.past } : {}) }));
    let results;
    try {
      results = forward(this.model, seqs);
    } catch (err) {
      for (const job of new Set(batch.map((b) => b.job))) this.end(job, err instanceof Error ? err : new Error(String(err)));
      return;
    }
    batch.forEach(({ job, input, ids }, b) => {
      const r = results[b]!;
      for (const row of r.hidden!) for (let d = 0; d < row.length; d++) input.sum[d]! += row[d]!;
      input.done += ids.length;
      if (input.done < input.ids.length) {
        input.past = r.newKv.map((kv, l) => ({ k: [...(input.past?.[l]?.k ?? []), kv!.k], v: [...(input.past?.[l]?.v ?? []), kv!.v] }));
        return;
      }
      for (const kv of r.newKv) if (kv) tf.dispose([kv.k, kv.v]);
      disposePast(input);
      job.vectors[input.index] = meanNormalised(input.sum, input.ids.length);
      job.waiting.splice(job.waiting.indexOf(input), 1);
      if (job.waiting.length === 0) {
        this.jobs.splice(this.jobs.indexOf(job), 1);
        job.resolve(job.vectors);
      }
    });
  }

  /** Drops a request and frees the keys and values its inputs held; nothing more is reported for it. */
  cancel(requestId: string): void {
    const job = this.jobs.find((j) => j.requestId === requestId);
    if (job) this.drop(job);
  }

  close(err: Error): void {
    for (const job of [...this.jobs]) this.end(job, err);
  }

  private end(job: Job, err: Error): void {
    this.drop(job);
    job.reject(err);
  }

  private drop(job: Job): void {
    for (const input of job.waiting) disposePast(input);
    this.jobs.splice(this.jobs.indexOf(job), 1);
  }
}

function disposePast(input: InputState): void {
  for (const layer of input.past ?? []) tf.dispose([...layer.k, ...layer.v]);
  delete input.past;
}

/** The mean of `count` summed rows, scaled to unit length (a zero vector stays zero). */
export function meanNormalised(sum: Float64Array, count: number): Float32Array {
  let norm = 0;
  for (const x of sum) norm += (x / count) ** 2;
  const scale = norm > 0 ? 1 / (count * Math.sqrt(norm)) : 0;
  return Float32Array.from(sum, (x) => x * scale);
}
