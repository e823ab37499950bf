/**
 * Data-parallel training of a small Llama from scratch: one worker thread per core
 * computes the gradient of its micro-batch (worker.ts), the main thread averages the
 * gradients, clips their global norm and applies AdamW with linear warmup and cosine
 * decay to the shared parameter buffer. Every step draws its window length, its data and
 * each worker's layer-dropout pattern from one seeded generator, so a run is a function of
 * its seed, and a checkpoint (weights, Adam moments, step, generator states) resumes it.
 *
 * @example
 * await train({ out: '.skein/train/skein-mini', data: 'data', config: PRESETS.a256, steps: 600 });
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { openDataset, type Dataset } from './data/pack.js';
import { paramTable, trainFlopsPerToken, type ParamTable, type TrainModelConfig } from './config.js';
import { Rng } from './rng.js';
import { spawnTrainWorker, type WorkerReply, type WorkerRequest } from './worker.js';
import { initParams } from './init.js';

export interface SeqLenChoice {
  seqLen: number;
  weight: number;
}

export interface TrainOptions {
  /** Run folder: checkpoint (ckpt/), log (train.log.jsonl). */
  out: string;
  /** Packed dataset folder (runtime/train/data, docs/TRAIN-DATA.md). */
  data: string;
  config: TrainModelConfig;
  seed: number;
  steps: number;
  workers: number;
  /** Tokens per worker micro-batch; rows = tokensPerWorker / seqLen. */
  tokensPerWorker: number;
  seqLens: SeqLenChoice[];
  lr: number;
  minLr: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  clip: number;
  /** Loss weight of chat-prompt targets (1 = plain LM; data/pack.ts `promptWeight`). */
  promptWeight: number;
  /** Layer-dropout rate of the last layer; layer l drops with layerDrop·l/(L−1). */
  layerDrop: number;
  checkpointMinutes: number;
  evalEvery: number;
  /** Validation windows per data part for the running held-out evaluation. */
  evalPerPart: number;
  evalSeqLen: number;
  /** Stop (after a checkpoint) once this much wall time has passed in this process. */
  maxMinutes: number;
  resume: boolean;
  /** Aborting checkpoints after the current step and returns (the CLI wires SIGINT/SIGTERM). */
  signal?: AbortSignal;
  onStep?: (s: StepInfo) => void;
  onEval?: (e: EvalInfo) => void;
  onLog?: (line: string) => void;
}

/** The settings models/skein-mini was trained with, so a plain resume continues it unchanged. */
export const DEFAULT_TRAIN: Omit<TrainOptions, 'out' | 'data' | 'config' | 'signal'> = {
  seed: 1,
  steps: 1300,
  workers: 2,
  tokensPerWorker: 1024,
  seqLens: [
    { seqLen: 512, weight: 0.82 },
    { seqLen: 1024, weight: 0.15 },
    { seqLen: 2048, weight: 0.03 },
  ],
  lr: 1.5e-3,
  minLr: 1.5e-4,
  warmupSteps: 30,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  clip: 1.0,
  promptWeight: 0.1,
  layerDrop: 0.2,
  checkpointMinutes: 8,
  evalEvery: 100,
  evalPerPart: 8,
  evalSeqLen: 512,
  maxMinutes: Infinity,
  resume: false,
};

export interface StepInfo {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  seqLen: number;
  tokensSeen: number;
  tokensPerSec: number;
  /** Achieved matmul FLOP/s of this step, all workers together. */
  flops: number;
  elapsedSec: number;
  etaSec: number;
}

export interface EvalInfo {
  step: number;
  tokensSeen: number;
  perplexity: Record<string, number>;
  loss: Record<string, number>;
}

/** Everything a checkpoint holds besides the three float buffers. */
export interface TrainState {
  step: number;
  tokensSeen: number;
  /** Wall seconds of training over all sessions. */
  elapsedSec: number;
  rng: number[];
  config: TrainModelConfig;
  options: Omit<TrainOptions, 'onStep' | 'onEval' | 'onLog' | 'resume' | 'signal'>;
  evals: EvalInfo[];
  /** Options that differed on a resume, by step: name → [before, after]. */
  changes?: { step: number; changed: Record<string, [unknown, unknown]> }[];
  /** Set when the Adam moments were not restored (resumed from weights only). */
  optimiserRestarts?: number[];
}

/** Learning rate at `step` (0-based): linear warmup, then cosine from lr to minLr. */
export function learningRate(o: Pick<TrainOptions, 'lr' | 'minLr' | 'warmupSteps' | 'steps'>, step: number): number {
  if (step < o.warmupSteps) return (o.lr * (step + 1)) / o.warmupSteps;
  const t = Math.min(1, (step - o.warmupSteps) / Math.max(1, o.steps - o.warmupSteps));
  return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos(Math.PI * t));
}

/** The layers a worker runs this step under layer dropout (LayerSkip: rates rise with depth). */
export function dropLayers(numLayers: number, maxRate: number, rng: Rng): number[] {
  const out: number[] = [];
  for (let l = 0; l < numLayers; l++) {
    const p = numLayers > 1 ? (maxRate * l) / (numLayers - 1) : 0;
    if (rng.next() >= p) out.push(l);
  }
  return out;
}

/** The per-layer dropout rates, for the model card. */
export function dropSchedule(numLayers: number, maxRate: number): number[] {
  return Array.from({ length: numLayers }, (_, l) => (numLayers > 1 ? (maxRate * l) / (numLayers - 1) : 0));
}

/** Global gradient-norm clipping and one AdamW update of `params` in place. */
export function adamwStep(
  table: ParamTable,
  params: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  step: number,
  lr: number,
  o: Pick<TrainOptions, 'beta1' | 'beta2' | 'eps' | 'weightDecay' | 'clip'>,
): number {
  let sq = 0;
  for (let i = 0; i < grad.length; i++) sq += grad[i] * grad[i];
  const norm = Math.sqrt(sq);
  const scale = o.clip > 0 && norm > o.clip ? o.clip / norm : 1;
  const b1 = o.beta1;
  const b2 = o.beta2;
  const c1 = 1 - Math.pow(b1, step + 1);
  const c2 = 1 - Math.pow(b2, step + 1);
  for (const e of table.entries) {
    const decay = e.decay ? 1 - lr * o.weightDecay : 1;
    const end = e.offset + e.size;
    for (let i = e.offset; i < end; i++) {
      const g = grad[i] * scale;
      const mi = (m[i] = b1 * m[i] + (1 - b1) * g);
      const vi = (v[i] = b2 * v[i] + (1 - b2) * g * g);
      params[i] = params[i] * decay - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + o.eps);
    }
  }
  return norm;
}

const CKPT = 'ckpt';

function writeF32(file: string, a: Float32Array): void {
  fs.writeFileSync(file, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
}

function readF32Into(file: string, into: Float32Array): void {
  const b = fs.readFileSync(file);
  if (b.byteLength !== into.byteLength) throw new Error(`${file}: ${b.byteLength} bytes, expected ${into.byteLength}`);
  new Uint8Array(into.buffer, into.byteOffset, into.byteLength).set(b);
}

/** Writes ckpt/ atomically: a full copy under a temporary name, then a rename. */
export function saveCheckpoint(out: string, state: TrainState, params: Float32Array, m: Float32Array, v: Float32Array): void {
  const dir = path.join(out, CKPT);
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  writeF32(path.join(tmp, 'params.f32'), params);
  writeF32(path.join(tmp, 'adam_m.f32'), m);
  writeF32(path.join(tmp, 'adam_v.f32'), v);
  fs.writeFileSync(path.join(tmp, 'state.json'), JSON.stringify(state, null, 1));
  const old = `${dir}.old`;
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(dir)) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  fs.rmSync(old, { recursive: true, force: true });
}

export function checkpointExists(out: string): boolean {
  return fs.existsSync(path.join(out, CKPT, 'state.json'));
}

export function loadCheckpoint(out: string, params: Float32Array, m: Float32Array, v: Float32Array): TrainState {
  const dir = path.join(out, CKPT);
  const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as TrainState;
  readF32Into(path.join(dir, 'params.f32'), params);
  if (fs.existsSync(path.join(dir, 'adam_m.f32'))) {
    readF32Into(path.join(dir, 'adam_m.f32'), m);
    readF32Into(path.join(dir, 'adam_v.f32'), v);
  } else {
    state.optimiserRestarts = [...(state.optimiserRestarts ?? []), state.step];
  }
  return state;
}

/** Reads a checkpoint's state, parameters and Adam moments (for export). */
export function readCheckpoint(out: string): { state: TrainState; params: Float32Array; m: Float32Array; v: Float32Array } {
  const state = JSON.parse(fs.readFileSync(path.join(out, CKPT, 'state.json'), 'utf8')) as TrainState;
  const n = paramTable(state.config).total;
  const params = new Float32Array(n);
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  readF32Into(path.join(out, CKPT, 'params.f32'), params);
  readF32Into(path.join(out, CKPT, 'adam_m.f32'), m);
  readF32Into(path.join(out, CKPT, 'adam_v.f32'), v);
  return { state, params, m, v };
}

interface Pool {
  workers: Worker[];
  grads: Float32Array[];
  call(i: number, req: WorkerRequest): Promise<WorkerReply>;
  close(): Promise<void>;
}

function startPool(config: TrainModelConfig, params: SharedArrayBuffer, n: number, total: number): Pool {
  const grads: Float32Array[] = [];
  const workers: Worker[] = [];
  const waiting: ((r: WorkerReply) => void)[][] = [];
  const failures: ((e: Error) => void)[][] = [];
  for (let i = 0; i < n; i++) {
    const g = new SharedArrayBuffer(total * 4);
    grads.push(new Float32Array(g));
    const w = spawnTrainWorker({ config, params, grads: g });
    waiting.push([]);
    failures.push([]);
    w.on('message', (r: WorkerReply) => {
      failures[i].shift();
      waiting[i].shift()!(r);
    });
    w.on('error', (e) => {
      for (const f of failures[i].splice(0)) f(e);
    });
    workers.push(w);
  }
  return {
    workers,
    grads,
    call(i, req) {
      return new Promise((resolve, reject) => {
        waiting[i].push(resolve);
        failures[i].push(reject);
        workers[i].postMessage(req);
      });
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

/** Held-out loss and perplexity per data part on fixed validation windows (all layers). */
async function evaluate(pool: Pool, ds: Dataset, cfg: TrainModelConfig, seqLen: number, perPart: number): Promise<{ loss: Record<string, number>; perplexity: Record<string, number> }> {
  const parts = ds.manifest.parts.filter((p) => p.val.end - p.val.start >= seqLen + 1).map((p) => p.name);
  const batches = ds.evalBatches(seqLen, { perPart, batch: perPart });
  const all = Array.from({ length: cfg.numLayers }, (_, l) => l);
  const sums = await Promise.all(
    batches.map(async (b, i) => {
      const r = await pool.call(i % pool.workers.length, { type: 'eval', rows: b.batch, seqLen, ids: b.inputs, targets: b.targets, layers: all });
      if (r.type !== 'eval') throw new Error('worker answered a step to an eval request');
      let s = 0;
      for (const x of r.nll) s += x;
      return s / r.nll.length;
    }),
  );
  const loss: Record<string, number> = {};
  const perplexity: Record<string, number> = {};
  parts.forEach((p, i) => {
    loss[p] = sums[i];
    perplexity[p] = Math.exp(sums[i]);
  });
  return { loss, perplexity };
}

function pickSeqLen(choices: SeqLenChoice[], rng: Rng): number {
  const total = choices.reduce((a, c) => a + c.weight, 0);
  let u = rng.next() * total;
  for (const c of choices) {
    if (u < c.weight) return c.seqLen;
    u -= c.weight;
  }
  return choices[choices.length - 1].seqLen;
}

/** Trains (or resumes) and leaves the final checkpoint in `out/ckpt`. Returns the final state. */
export async function train(o: TrainOptions): Promise<TrainState> {
  const log = o.onLog ?? (() => {});
  const cfg = o.config;
  const table = paramTable(cfg);
  const shared = new SharedArrayBuffer(table.total * 4);
  const params = new Float32Array(shared);
  const m = new Float32Array(table.total);
  const v = new Float32Array(table.total);
  const { onStep, onEval, onLog, resume, signal, ...options } = o;
  let state: TrainState;
  if (resume && checkpointExists(o.out)) {
    state = loadCheckpoint(o.out, params, m, v);
    if (JSON.stringify(state.config) !== JSON.stringify(cfg)) throw new Error(`checkpoint in ${o.out} has a different model config`);
    const changed: Record<string, [unknown, unknown]> = {};
    for (const [k, v] of Object.entries(options)) {
      const before = (state.options as Record<string, unknown>)[k];
      if (JSON.stringify(before) !== JSON.stringify(v)) changed[k] = [before, v];
    }
    if (Object.keys(changed).length > 0) state.changes = [...(state.changes ?? []), { step: state.step, changed }];
    state.options = options;
    log(`resumed at step ${state.step} (${state.tokensSeen} tokens)`);
  } else {
    const rng = Rng.fromSeed(o.seed);
    initParams(table, params, rng);
    state = { step: 0, tokensSeen: 0, elapsedSec: 0, rng: rng.state(), config: cfg, options, evals: [] };
  }
  fs.mkdirSync(o.out, { recursive: true });
  const logFile = path.join(o.out, 'train.log.jsonl');
  const ds = openDataset(o.data);
  if (ds.manifest.vocabSize !== cfg.vocabSize) throw new Error(`dataset vocab ${ds.manifest.vocabSize} != model vocab ${cfg.vocabSize}`);
  const pool = startPool(cfg, shared, o.workers, table.total);
  const rng = Rng.fromState(state.rng);
  const t0 = performance.now();
  const elapsed0 = state.elapsedSec;
  let lastCkpt = performance.now();
  const grad = new Float32Array(table.total);
  const recent: { tokens: number; sec: number; flops: number }[] = [];
  const snapshot = () => {
    state.rng = rng.state();
    state.elapsedSec = elapsed0 + (performance.now() - t0) / 1000;
    saveCheckpoint(o.out, state, params, m, v);
    lastCkpt = performance.now();
  };
  try {
    while (state.step < o.steps) {
      const ts = performance.now();
      const seqLen = pickSeqLen(o.seqLens, rng);
      const rows = Math.max(1, Math.floor(o.tokensPerWorker / seqLen));
      const dataRng = () => rng.next();
      const jobs = pool.workers.map((_, i) => {
        const b = ds.sample(dataRng, rows, seqLen, { promptWeight: o.promptWeight });
        const layers = dropLayers(cfg.numLayers, o.layerDrop, rng);
        return { i, b, layers };
      });
      const replies = await Promise.all(
        jobs.map(({ i, b, layers }) => pool.call(i, { type: 'step', rows, seqLen, ids: b.inputs, targets: b.targets, weights: b.weights, layers })),
      );
      grad.set(pool.grads[0]);
      for (let w = 1; w < pool.grads.length; w++) {
        const g = pool.grads[w];
        for (let k = 0; k < grad.length; k++) grad[k] += g[k];
      }
      if (pool.grads.length > 1) {
        const s = 1 / pool.grads.length;
        for (let k = 0; k < grad.length; k++) grad[k] *= s;
      }
      const lr = learningRate(o, state.step);
      const gradNorm = adamwStep(table, params, grad, m, v, state.step, lr, o);
      const loss = replies.reduce((a, r) => a + (r.type === 'step' ? r.loss : 0), 0) / replies.length;
      const tokens = rows * seqLen * pool.workers.length;
      const flops = jobs.reduce((a, j) => a + rows * seqLen * trainFlopsPerToken(cfg, seqLen, j.layers.length), 0);
      state.step++;
      state.tokensSeen += tokens;
      const sec = (performance.now() - ts) / 1000;
      recent.push({ tokens, sec, flops });
      if (recent.length > 20) recent.shift();
      const rs = recent.reduce((a, r) => a + r.sec, 0);
      const tokensPerSec = recent.reduce((a, r) => a + r.tokens, 0) / rs;
      const elapsedSec = elapsed0 + (performance.now() - t0) / 1000;
      const info: StepInfo = {
        step: state.step,
        steps: o.steps,
        loss,
        lr,
        gradNorm,
        seqLen,
        tokensSeen: state.tokensSeen,
        tokensPerSec,
        flops: recent.reduce((a, r) => a + r.flops, 0) / rs,
        elapsedSec,
        etaSec: (rs / recent.length) * (o.steps - state.step),
      };
      fs.appendFileSync(logFile, JSON.stringify({ ...info, stepSec: sec, workerMs: replies.map((r) => (r.type === 'step' ? Math.round(r.ms) : 0)) }) + '\n');
      onStep?.(info);
      if (o.evalEvery > 0 && (state.step % o.evalEvery === 0 || state.step === o.steps)) {
        const e = await evaluate(pool, ds, cfg, o.evalSeqLen, o.evalPerPart);
        const ev: EvalInfo = { step: state.step, tokensSeen: state.tokensSeen, ...e };
        state.evals.push(ev);
        fs.appendFileSync(logFile, JSON.stringify({ eval: ev }) + '\n');
        onEval?.(ev);
      }
      const overTime = (performance.now() - t0) / 60000 >= o.maxMinutes;
      const stop = overTime || signal?.aborted === true;
      if ((performance.now() - lastCkpt) / 60000 >= o.checkpointMinutes || state.step === o.steps || stop) snapshot();
      if (stop) {
        log(`stopping at step ${state.step} (${overTime ? `--max-minutes ${o.maxMinutes} reached` : 'interrupted'}); checkpoint saved`);
        break;
      }
    }
  } finally {
    await pool.close();
  }
  return state;
}
