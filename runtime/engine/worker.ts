/**
 * The engine worker: loads the model itself (only its folder name or random spec crosses
 * the boundary), runs an EngineCore in this thread, and answers the main thread with one
 * message per step carrying that step's token/done/error events and fresh KV figures.
 * Started by worker-client.ts through worker-boot.mjs.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import { CancelledError } from '../../core/errors.js';
import { initBackend } from '../backend.js';
import { EngineCore } from './core.js';
import { loadEngineModel } from './model-spec.js';
import { tokenSampler } from './sampling.js';
import { eventToWire, toWire, type FromWorker, type ToWorker, type WireEvent, type WorkerInit } from './wire.js';
import { StepLoop } from './loop.js';

const port = parentPort!;
const { model: modelSpec, ...tuning } = workerData as WorkerInit;
const post = (msg: FromWorker) => port.postMessage(msg);

try {
  const backend = await initBackend();
  const { model, tokenizer } = await loadEngineModel(modelSpec);
  let outbox: WireEvent[] = [];
  const core = new EngineCore({
    model,
    tokenizer,
    sampler: tokenSampler,
    ...tuning,
    emit: (event) => outbox.push(eventToWire(event)),
  });
  const flush = () => {
    post({ type: 'events', events: outbox, stats: core.stats(), tensors: tf.memory().numTensors });
    outbox = [];
  };
  const loop = new StepLoop(core, flush);
  port.on('message', (msg: ToWorker) => {
    switch (msg.type) {
      case 'submit': {
        const { type: _, ...submit } = msg;
        core.submit(submit);
        flush();
        loop.kick();
        break;
      }
      case 'cancel':
        core.cancel(msg.requestId);
        flush();
        break;
      case 'close':
        core.close(new CancelledError('engine closed'));
        void loop.idle().then(() => {
          model.dispose();
          post({ type: 'closed' });
          port.close();
        });
        break;
      default: {
        const never: never = msg;
        throw new Error(`unknown message ${JSON.stringify(never)}`);
      }
    }
  });
  post({ type: 'ready', backend, stats: core.stats(), tensors: tf.memory().numTensors });
} catch (err) {
  post({ type: 'fatal', error: toWire(err instanceof Error ? err : new Error(String(err))) });
  port.close();
}
