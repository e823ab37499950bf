/**
 * A data-parallel training worker (one per core: the wasm backend runs one thread per
 * Node thread). It reads the parameters from the trainer's shared buffer, computes the
 * gradient of its micro-batch into its own shared gradient buffer, and answers with the
 * loss; the trainer averages the buffers and updates the parameters in place.
 *
 * @example
 * const w = spawnTrainWorker({ config, params, grads }); // see trainer.ts
 */
import { parentPort, workerData, Worker, isMainThread } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../backend.js';
import { paramTable, type TrainModelConfig } from './config.js';
import { computeGrads, paramTensors } from './grads.js';
import { forwardConsts, hiddenStates, tokenNll, type ForwardConsts } from './forward.js';

export interface WorkerInit {
  config: TrainModelConfig;
  params: SharedArrayBuffer;
  grads: SharedArrayBuffer;
}

export type WorkerRequest =
  | { type: 'step'; rows: number; seqLen: number; ids: Int32Array; targets: Int32Array; weights?: Float32Array; layers: number[] }
  | { type: 'eval'; rows: number; seqLen: number; ids: Int32Array; targets: Int32Array; layers: number[] };

export type WorkerReply = { type: 'step'; loss: number; ms: number } | { type: 'eval'; nll: Float32Array };

/** Starts a worker thread running this module, under tsx when the sources are TypeScript. */
export function spawnTrainWorker(init: WorkerInit): Worker {
  const url = import.meta.url;
  if (url.endsWith('.ts')) {
    // Node cannot load .ts in a worker by itself; tsx's API registers its loader there.
    const code = `import('tsx/esm/api').then((m) => m.tsImport(${JSON.stringify(url)}, ${JSON.stringify(url)}))`;
    return new Worker(code, { eval: true, workerData: init });
  }
  return new Worker(fileURLToPath(url), { workerData: init });
}

async function serve(init: WorkerInit): Promise<void> {
  await initBackend();
  const cfg = init.config;
  const table = paramTable(cfg);
  const params = new Float32Array(init.params);
  const grads = new Float32Array(init.grads);
  const consts = new Map<number, ForwardConsts>();
  const constsFor = (seqLen: number) => {
    let k = consts.get(seqLen);
    if (k === undefined) {
      k = forwardConsts(cfg, seqLen);
      consts.set(seqLen, k);
    }
    return k;
  };
  parentPort!.on('message', (req: WorkerRequest) => {
    const batch = { rows: req.rows, seqLen: req.seqLen, ids: req.ids, targets: req.targets, weights: req.type === 'step' ? req.weights : undefined };
    if (req.type === 'step') {
      const t0 = performance.now();
      const loss = computeGrads(cfg, table, params, batch, req.layers, constsFor(req.seqLen), grads);
      parentPort!.postMessage({ type: 'step', loss, ms: performance.now() - t0 } satisfies WorkerReply);
    } else {
      // Built outside the tidy: the cache outlives this request.
      const k = constsFor(req.seqLen);
      const nll = tf.tidy(() => {
        const p = paramTensors(table, params, table.entries.map((e) => e.name));
        const h = hiddenStates(cfg, p, batch, req.layers, k);
        return tokenNll(h, p.get('embed') as tf.Tensor2D, req.targets);
      });
      parentPort!.postMessage({ type: 'eval', nll } satisfies WorkerReply, [nll.buffer as ArrayBuffer]);
    }
  });
}

if (!isMainThread && parentPort !== null && (workerData as WorkerInit | undefined)?.params instanceof SharedArrayBuffer) {
  await serve(workerData as WorkerInit);
}
