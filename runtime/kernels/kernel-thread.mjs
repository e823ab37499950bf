// A second thread for the wasm kernels (threads.ts starts it). Plain JavaScript so that it
// starts without tsx's loader. It runs its own instance of matmul.wasm (and, where the
// caller's kernels are native, the native addon's products and attention) on each registered
// shared memory and waits for jobs in a shared Int32Array (layout in threads.ts): spinning
// for a short while after each job, since decode posts one every ~50–300 µs, then sleeping
// in Atomics.wait. A job is run only if claimed before the caller takes it back. Registrations arrive as messages, read synchronously
// (receiveMessageOnPort) because this thread's event loop never turns while it waits.
import { createRequire } from 'node:module';
import { receiveMessageOnPort, workerData } from 'node:worker_threads';

const { control, port, spinMs } = workerData;
const ctl = new Int32Array(control);
const POSTED = 0, DONE = 1, MEMORY = 2, FN = 3, FAILED = 4, CLAIM = 5, ARGS = 6, STOP = -1;
const NAMES = ['matmul_quant', 'matmul_x4', 'matmul_float', 'attention', 'matmul_x4r'];
const instances = new Map();

function drain() {
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const msg = m.message;
    if (msg.type === 'add') {
      const { exports } = new WebAssembly.Instance(msg.module, { env: { memory: msg.memory } });
      exports.__stack_pointer.value = msg.stackTop;
      instances.set(msg.id, msg.native ? withNative(exports, msg.memory) : exports);
    } else if (msg.type === 'drop') instances.delete(msg.id);
  }
}

let addon = null;
/** The wasm exports with the products the caller runs natively (matmul.ts) swapped the same way. */
function withNative(exports, memory) {
  addon ??= createRequire(import.meta.url)('./native/build/skein-kernels.node');
  const id = addon.register(new Uint8Array(memory.buffer));
  return {
    ...exports,
    matmul_x4r: (...a) => addon.matmul_x4r(id, ...a),
    matmul_float: (...a) => addon.matmul_float(id, ...a),
    attention: (...a) => addon.attention(id, ...a),
  };
}

let seen = 0;
for (;;) {
  const until = performance.now() + spinMs;
  let n = 0;
  while (Atomics.load(ctl, POSTED) === seen) {
    if ((++n & 1023) === 0 && performance.now() > until) {
      drain();
      Atomics.wait(ctl, POSTED, seen, 50);
    }
  }
  seen = Atomics.load(ctl, POSTED);
  if (seen === STOP) break;
  // The caller takes the job back when it finishes its own half first (threads.ts).
  if (Atomics.compareExchange(ctl, CLAIM, 0, 1) !== 0) continue;
  // Ours: the caller posts nothing new until this one is done, so this number and the
  // arguments below belong together.
  seen = Atomics.load(ctl, POSTED);
  let fns = instances.get(ctl[MEMORY]);
  while (fns === undefined) {
    drain();
    fns = instances.get(ctl[MEMORY]);
  }
  const fn = ctl[FN];
  const argc = fn === 3 ? 16 : 11;
  const args = Array.from(ctl.subarray(ARGS, ARGS + argc));
  try {
    fns[NAMES[fn]](...args);
  } catch {
    Atomics.store(ctl, FAILED, 1);
  }
  Atomics.store(ctl, DONE, seen);
  Atomics.notify(ctl, DONE);
}
