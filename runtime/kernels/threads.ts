/**
 * The kernels' second thread: one worker per process (kernel-thread.mjs) that runs part of a
 * product (a range of weight rows) or of an attention call (a range of heads) on the same
 * shared wasm memory while the calling thread runs the rest. Each part writes its own rows
 * of the output with the same arithmetic as a whole call, so results are bit-identical
 * whatever the split (matmul.test.ts checks it).
 *
 * Why a hand-made pool and not a library (piscina, threads.js): those dispatch by
 * postMessage and a promise (tens of µs and an event-loop turn per task); a decode step here
 * is ~120 products of 0.1–1 ms, each of which must hand half its rows over and wait
 * synchronously inside a tfjs kernel. So the threads meet in an Int32Array on a
 * SharedArrayBuffer with Atomics: the worker spins for a moment after each job and sleeps
 * in Atomics.wait otherwise; the caller spins briefly for the worker's half, then waits.
 *
 * Control words: [0] job number posted (−1: stop), [1] job number done, [2] memory id,
 * [3] function (0 matmul_quant, 1 matmul_x4, 2 matmul_float, 3 attention, 4 matmul_x4r), [4] set when the
 * job threw (a wasm trap), [5] claim (0 open, 1 taken by the worker, 2 taken back by the
 * caller), [6…] arguments.
 *
 * On a busy machine the worker may not be scheduled for milliseconds. So the caller, when it
 * has finished its own half, takes the other half back unless the worker has claimed it
 * already (one compare-and-swap decides): at worst a product runs on one thread as before,
 * never waits on a thread that is not running.
 *
 * This worker serves the wasm build (and the native kernels with SKEIN_NATIVE_POOL=0); the
 * native kernels split their work over their own helper threads instead (native/pool.inc.c),
 * as many as SKEIN_THREADS asks for.
 *
 * How many threads: SKEIN_THREADS=2 turns the second thread on; the default is one. On the
 * 2-vCPU KVM machines this project is measured on it pays only when nothing else runs:
 * SmolLM2 Q4_1 on a quiet box went from 38.4 to 48.8 tok/s decode and 98.9 to 124.6 tok/s
 * prefill (bench decode --arg threads=2, both sides on two threads), but with other work on
 * the cores a bare Atomics ping-pong took anywhere from 0.5 to 360 µs per round trip and
 * decode lost up to 38 % against one thread. A default must not lose like that on a shared
 * machine; who owns the cores turns it on.
 */
import * as os from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';

const POSTED = 0;
const DONE = 1;
const MEMORY = 2;
const FN = 3;
const FAILED = 4;
const CLAIM = 5;
const ARGS = 6;

/** Offers judged together, and how long to stop offering when the worker took too few. */
const OFFER_WINDOW = 32;
const PAUSE_MS = 1000;
const JOIN_SPIN_MS = 5;

export const KERNEL_FN = { matmul_quant: 0, matmul_x4: 1, matmul_float: 2, attention: 3, matmul_x4r: 4 } as const;
export type KernelFn = keyof typeof KERNEL_FN;

/** Threads the kernels use by default: SKEIN_THREADS (at most the cores; the wasm build uses two of them at most), else 1. */
export function defaultKernelThreads(): number {
  const env = process.env.SKEIN_THREADS;
  if (env === undefined || env === '') return 1;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`SKEIN_THREADS must be a whole number ≥ 1, got ${JSON.stringify(env)}`);
  return Math.min(n, os.availableParallelism());
}

class KernelThread {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(4 * (ARGS + 16)));
  private readonly port;
  private readonly worker: Worker;
  private posted = 0;
  private nextMemory = 1;
  private offered = 0;
  private claimed = 0;
  private pausedUntil = 0;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(new URL('./kernel-thread.mjs', import.meta.url), {
      workerData: { control: this.ctl.buffer, port: port2, spinMs: 0.5 },
      transferList: [port2],
    });
    this.worker.unref();
    this.port.unref();
  }

  /**
   * Gives the worker its own instance of `module` on `memory`, with its stack below
   * stackTop; with `native`, its Q4 (relaxed) and Q8_0 x4 products run on the native
   * kernels (native.ts) as the caller's do.
   */
  add(module: WebAssembly.Module, memory: WebAssembly.Memory, stackTop: number, native = false): number {
    const id = this.nextMemory++;
    this.port.postMessage({ type: 'add', id, module, memory, stackTop, native });
    return id;
  }

  drop(id: number): void {
    this.port.postMessage({ type: 'drop', id });
  }

  /** Offers fn(args) to the worker; then `takeBack` or `join`. One job at a time. */
  start(memory: number, fn: KernelFn, args: readonly number[]): void {
    const c = this.ctl;
    c[MEMORY] = memory;
    c[FN] = KERNEL_FN[fn];
    for (let i = 0; i < args.length; i++) c[ARGS + i] = args[i]!;
    Atomics.store(c, CLAIM, 0);
    this.posted++;
    Atomics.store(c, POSTED, this.posted);
    Atomics.notify(c, POSTED);
  }

  /** True when the worker had not claimed the job: the caller runs it itself. */
  takeBack(): boolean {
    const mine = Atomics.compareExchange(this.ctl, CLAIM, 0, 2) === 0;
    this.offered++;
    if (!mine) this.claimed++;
    if (this.offered === OFFER_WINDOW) {
      if (this.claimed < OFFER_WINDOW * 0.75) this.pausedUntil = performance.now() + PAUSE_MS;
      this.offered = this.claimed = 0;
    }
    return mine;
  }

  /**
   * Whether to offer work at all: not for a while after the worker claimed too few of the
   * last offers (other processes hold the cores), so that its spinning does not take CPU
   * from the caller. Measured on this 2-core box at load ~10: offering anyway made a Q4_1
   * 1536×576 product 1.2–1.7× slower than one thread; the worker claimed 7–25 % of offers.
   */
  available(): boolean {
    return performance.now() >= this.pausedUntil;
  }

  /**
   * Waits for the claimed job: spinning, since a sleeping thread takes ~0.1–0.5 ms to wake
   * here, longer than most halves; sleeping only past JOIN_SPIN_MS (a long prefill half).
   */
  join(): void {
    const c = this.ctl;
    const until = performance.now() + JOIN_SPIN_MS;
    for (let n = 1; Atomics.load(c, DONE) !== this.posted; n++) {
      if ((n & 1023) === 0 && performance.now() > until) Atomics.wait(c, DONE, Atomics.load(c, DONE), 1);
    }
    if (Atomics.exchange(c, FAILED, 0) !== 0) throw new Error('wasm kernel trapped on the kernel thread');
  }
}

let shared: KernelThread | null = null;

/** The process's kernel thread, started on first use. */
export function kernelThread(): KernelThread {
  shared ??= new KernelThread();
  return shared;
}

export type { KernelThread };
