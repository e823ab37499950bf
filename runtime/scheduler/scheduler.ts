/**
 * The batch scheduler: the one owner of the model and the KV pool. Each `step()` admits
 * waiting sequences while memory allows, gathers every running sequence's next piece of
 * work (a decode token, or a prefill chunk so a long prompt does not stall decoding), runs
 * ONE batched forward, appends the new KV to each block table and samples each sequence
 * with its own sampler. It is synchronous and thread-agnostic: the engine drives it in a
 * worker (or in-process for tests).
 *
 * Memory: a sequence reserves its blocks before the forward. When the pool runs dry,
 * new work waits; a running sequence that must grow preempts the youngest running one,
 * which drops its blocks (its full ones stay cached in the prefix tree) and is recomputed
 * later from prompt + generated tokens, mostly from that cache. A request that could not
 * fit even alone fails at submit with KvExhaustedError.
 *
 * @example
 * const s = new Scheduler({ model, sampler: (p) => greedy });
 * s.submit({ id: 'a', ids: [1, 5, 7], sampling }, { token: (id) => {}, done: (r) => {}, error: (e) => {} });
 * while (s.hasWork()) s.step();
 */
import { BadRequestError, KvExhaustedError, NotAvailableError } from '../../core/errors.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { FinishReason } from '../../core/engine.js';
import { BlockTable } from '../kv/block-table.js';
import { KvPool } from '../kv/pool.js';
import { forward as defaultForward } from '../model/forward.js';
import type { ForwardCallOptions, ForwardSequence, ForwardSequenceResult, LoadedModel } from '../model/types.js';

export type ForwardFn = (model: LoadedModel, seqs: ForwardSequence[], opts?: ForwardCallOptions) => ForwardSequenceResult[];

/** Picks the next token from a logit row; `context` is every token so far (prompt + generated). */
export type TokenSampler = (logits: Float32Array, context: readonly number[]) => number;

export type SchedulingPolicy = 'fcfs' | 'fair';

/**
 * The engine's tuning settings, defined once: the scheduler reads them, createEngine and
 * the worker's init message carry them unchanged (defaults and their reasons are in the
 * Scheduler constructor and KvPool).
 */
export interface EngineTuning {
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** KV memory budget in bytes (default 256 MiB). */
  kvBudgetBytes?: number;
  /** KV budget in blocks; overrides kvBudgetBytes. */
  kvBudgetBlocks?: number;
  /** Most sequences running at once (each gets a slot in every step). */
  maxBatch?: number;
  /** Most new tokens in one forward; bounds how long one step can take. */
  maxStepTokens?: number;
  /** Most prompt tokens of one sequence in one step. */
  prefillChunk?: number;
  /** Reuse KV across sequences through the prefix tree (default true). */
  prefixSharing?: boolean;
  /** fcfs: arrival order. fair: the owner that was served fewest tokens goes first. */
  policy?: SchedulingPolicy;
}

export interface SchedulerOptions extends EngineTuning {
  model: LoadedModel;
  /** One sampler per sequence, made from its settings (seeded, so resumable). */
  sampler: (params: SamplingParams) => TokenSampler;
  forward?: ForwardFn;
}

export interface SubmitRequest {
  id: string;
  ids: number[];
  sampling: SamplingParams;
  owner?: string;
  /** End-of-sequence ids; default the model config's. */
  eosIds?: number[];
}

export interface SequenceSummary {
  reason: Exclude<FinishReason, 'cancelled'>;
  /** Generated ids, a final end-of-sequence token included. */
  ids: number[];
  promptTokens: number;
  completionTokens: number;
  /** Prompt positions whose KV came from the prefix cache or a live sequence at admission. */
  cachedPromptTokens: number;
  /** Blocks shared (not copied, not computed) at admission. */
  kvBlocksShared: number;
  preemptions: number;
}

export interface SequenceListener {
  /**
   * A new token (an end-of-sequence one included); `final` when it ends the sequence.
   * Return true to end the sequence here (a stop string matched).
   */
  token(id: number, final: boolean): boolean | void;
  /** At first admission: how much of the prompt's KV came from the prefix cache or a live sequence. */
  admitted?(info: { promptTokens: number; cachedPromptTokens: number; kvBlocksShared: number }): void;
  done(summary: SequenceSummary): void;
  error(err: Error): void;
}

export interface StepReport {
  sequences: number;
  prefillTokens: number;
  decodeTokens: number;
  preempted: number;
  ms: number;
}

export interface SchedulerStats {
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  kvBlocksShared: number;
  kvBlocksCached: number;
  kvBytesPerBlock: number;
  queueDepth: number;
  runningSequences: number;
}

class Sequence {
  table: BlockTable | null = null;
  readonly generated: number[] = [];
  /** Set at first admission; a resumed sequence's recompute is not a cache hit. */
  cachedPromptTokens = -1;
  kvBlocksShared = 0;
  preemptions = 0;
  cancelled = false;
  constructor(
    readonly id: string,
    readonly arrival: number,
    readonly owner: string,
    readonly prompt: number[],
    readonly sampling: SamplingParams,
    readonly eosIds: number[],
    readonly sample: TokenSampler,
    readonly listener: SequenceListener,
  ) {}

  /** Every token whose KV the sequence needs: prompt, then generated (the last one not yet run). */
  all(): number[] {
    return this.generated.length === 0 ? this.prompt : this.prompt.concat(this.generated);
  }

  tokenAt(i: number): number {
    return i < this.prompt.length ? this.prompt[i]! : this.generated[i - this.prompt.length]!;
  }

  get length(): number {
    return this.prompt.length + this.generated.length;
  }

  /** Tokens still to run before the next logits. */
  get pending(): number {
    return this.length - (this.table?.length ?? 0);
  }
}

interface WorkItem {
  seq: Sequence;
  ids: number[];
  wantLogits: boolean;
}

export class Scheduler {
  readonly pool: KvPool;
  readonly model: LoadedModel;
  private readonly forwardFn: ForwardFn;
  private readonly makeSampler: (params: SamplingParams) => TokenSampler;
  private readonly maxBatch: number;
  private readonly maxStepTokens: number;
  private readonly prefillChunk: number;
  private readonly policy: SchedulingPolicy;
  private readonly byId = new Map<string, Sequence>();
  private waiting: Sequence[] = [];
  private running: Sequence[] = [];
  /** Tokens run per owner, for the fair policy; dropped when an owner has nothing left. */
  private readonly served = new Map<string, number>();
  private arrivals = 0;
  private inStep = false;
  private deferredCancels: Sequence[] = [];

  constructor(options: SchedulerOptions) {
    const c = options.model.config;
    this.model = options.model;
    this.forwardFn = options.forward ?? defaultForward;
    this.makeSampler = options.sampler;
    this.pool = new KvPool({
      numLayers: c.numLayers,
      kvDim: c.numKvHeads * c.headDim,
      blockSize: options.blockSize,
      budgetBytes: options.kvBudgetBytes,
      budgetBlocks: options.kvBudgetBlocks,
      prefixSharing: options.prefixSharing,
    });
    // 32 sequences keep a 2-core machine busy on decode without making any step long.
    this.maxBatch = options.maxBatch ?? 32;
    // 256 tokens per step: a prefill chunk takes a fraction of a second on small models.
    this.maxStepTokens = options.maxStepTokens ?? 256;
    this.prefillChunk = Math.min(options.prefillChunk ?? 128, this.maxStepTokens);
    this.policy = options.policy ?? 'fcfs';
  }

  /** Queues a sequence. Throws KvExhaustedError when it could never fit, even alone. */
  submit(request: SubmitRequest, listener: SequenceListener): void {
    if (this.byId.has(request.id)) throw new BadRequestError('id', `sequence ${request.id} already exists`);
    if (request.ids.length === 0) throw new BadRequestError('ids', 'the prompt is empty');
    // Checked here, not in the forward: a bad id there would fail every sequence of its batch.
    const vocab = this.model.config.vocabSize;
    const bad = request.ids.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad !== undefined) throw new BadRequestError('ids', `token id ${bad} is outside the vocabulary (${vocab})`);
    const maxPos = this.model.config.maxPositionEmbeddings;
    if (request.ids.length >= maxPos) {
      throw new BadRequestError('ids', `the prompt has ${request.ids.length} tokens, the model's context is ${maxPos}`);
    }
    const total = Math.min(request.ids.length + request.sampling.maxTokens, maxPos);
    const window = this.model.config.slidingWindow;
    if (window !== null && total > window) {
      // Refused here: the forward would refuse it mid-batch and fail its batch-mates too.
      throw new NotAvailableError('sliding-window attention', `the request may reach ${total} tokens, the window is ${window}`);
    }
    const need = this.pool.blocksFor(total);
    if (need > this.pool.numBlocks) throw new KvExhaustedError(need, this.pool.available, this.pool.numBlocks);
    const seq = new Sequence(
      request.id,
      this.arrivals++,
      request.owner ?? '',
      request.ids.slice(),
      request.sampling,
      request.eosIds ?? this.model.config.eosTokenIds,
      this.makeSampler(request.sampling),
      listener,
    );
    this.byId.set(seq.id, seq);
    this.waiting.push(seq);
  }

  /** Drops a sequence and frees its blocks; no listener call. Safe from inside a listener. */
  cancel(id: string): void {
    const seq = this.byId.get(id);
    if (!seq || seq.cancelled) return;
    seq.cancelled = true;
    if (this.inStep) this.deferredCancels.push(seq);
    else this.remove(seq);
  }

  hasWork(): boolean {
    return this.running.length > 0 || this.waiting.length > 0;
  }

  stats(): SchedulerStats {
    const s = this.pool.stats();
    return {
      kvBlocksTotal: s.total,
      kvBlocksUsed: s.used,
      kvBlocksShared: s.shared,
      kvBlocksCached: s.cached,
      kvBytesPerBlock: this.pool.bytesPerBlock,
      queueDepth: this.waiting.length,
      runningSequences: this.running.length,
    };
  }

  /** Fails every sequence and frees all KV, cached blocks included. */
  close(err: Error): void {
    for (const seq of [...this.running, ...this.waiting]) {
      this.remove(seq);
      seq.listener.error(err);
    }
    this.pool.clearCache();
  }

  step(): StepReport {
    const t0 = performance.now();
    const report: StepReport = { sequences: 0, prefillTokens: 0, decodeTokens: 0, preempted: 0, ms: 0 };
    this.inStep = true;
    try {
      this.admit();
      const items = this.plan(report);
      if (items.length > 0) this.run(items, report);
    } finally {
      this.inStep = false;
      for (const seq of this.deferredCancels) this.remove(seq);
      this.deferredCancels = [];
    }
    report.ms = performance.now() - t0;
    return report;
  }

  private ordered(list: Sequence[]): Sequence[] {
    const byArrival = (a: Sequence, b: Sequence) => a.arrival - b.arrival;
    if (this.policy === 'fcfs') return [...list].sort(byArrival);
    const served = (s: Sequence) => this.served.get(s.owner) ?? 0;
    return [...list].sort((a, b) => served(a) - served(b) || byArrival(a, b));
  }

  private admit(): void {
    for (const seq of this.ordered(this.waiting)) {
      if (this.running.length >= this.maxBatch) break;
      const all = seq.all();
      const table = new BlockTable(this.pool);
      const adopted = table.adopt(all, all.length - 1);
      if (this.prefixInFlight(all, table.length)) {
        // Another sequence is computing this prefix right now: wait for it and share it.
        table.release();
        continue;
      }
      const need = table.blocksNeeded(Math.min(all.length - table.length, this.prefillChunk));
      // Headroom of one block per running sequence, so admitting does not force a preemption.
      if (this.pool.available < need + this.running.length) {
        table.release();
        break;
      }
      seq.table = table;
      if (seq.cachedPromptTokens < 0) {
        seq.cachedPromptTokens = Math.min(adopted.tokens.length, seq.prompt.length);
        seq.kvBlocksShared = adopted.sharedBlocks;
        seq.listener.admitted?.({ promptTokens: seq.prompt.length, cachedPromptTokens: seq.cachedPromptTokens, kvBlocksShared: seq.kvBlocksShared });
      }
      this.waiting.splice(this.waiting.indexOf(seq), 1);
      this.running.push(seq);
    }
  }

  /** Whether a running sequence is still prefilling at least one more block of `all`'s prefix. */
  private prefixInFlight(all: number[], matched: number): boolean {
    const B = this.pool.blockSize;
    for (const r of this.running) {
      if (r.pending <= 1) continue;
      const limit = Math.min(all.length - 1, r.length);
      let n = 0;
      while (n < limit && all[n] === r.tokenAt(n)) n++;
      if (n >= matched + B && (r.table?.length ?? 0) < n) return true;
    }
    return false;
  }

  /** Picks this step's work and reserves its blocks, preempting the youngest when short. */
  private plan(report: StepReport): WorkItem[] {
    let budget = this.maxStepTokens;
    const chosen: { seq: Sequence; n: number }[] = [];
    const running = this.ordered(this.running);
    for (const seq of running) {
      if (seq.pending === 1 && budget > 0) {
        chosen.push({ seq, n: 1 });
        budget--;
      }
    }
    for (const seq of running) {
      if (seq.pending > 1 && budget > 0) {
        const n = Math.min(seq.pending, this.prefillChunk, budget);
        chosen.push({ seq, n });
        budget -= n;
      }
    }
    // Oldest first: they reserve before the young ones that may be preempted for them.
    chosen.sort((a, b) => a.seq.arrival - b.seq.arrival);
    const items: WorkItem[] = [];
    for (const { seq, n } of chosen) {
      if (seq.table === null) continue; // preempted for an older one in this loop
      let ok = seq.table.reserve(n);
      while (!ok) {
        const victim = this.running.reduce((a, b) => (b.arrival > a.arrival ? b : a));
        this.preempt(victim);
        report.preempted++;
        if (victim === seq) break;
        ok = seq.table.reserve(n);
      }
      if (!ok) continue;
      const all = seq.all();
      const start = seq.table.length;
      items.push({ seq, ids: all.slice(start, start + n), wantLogits: start + n === all.length });
    }
    return items;
  }

  private preempt(seq: Sequence): void {
    seq.table?.release();
    seq.table = null;
    seq.preemptions++;
    this.running.splice(this.running.indexOf(seq), 1);
    this.waiting.push(seq);
  }

  private run(items: WorkItem[], report: StepReport): void {
    const inputs: ForwardSequence[] = items.map(({ seq, ids, wantLogits }) => ({
      ids,
      past: seq.table!.past(),
      logits: wantLogits ? 'last' : 'none',
    }));
    let results: ForwardSequenceResult[];
    try {
      results = this.forwardFn(this.model, inputs);
    } catch (err) {
      for (const { seq } of items) this.fail(seq, err);
      return;
    }
    report.sequences = items.length;
    const maxPos = this.model.config.maxPositionEmbeddings;
    items.forEach(({ seq, ids, wantLogits }, i) => {
      const r = results[i]!;
      // One sequence's failure (a listener that throws) must not touch its batch-mates.
      try {
        const k = r.newKv.map((e) => e!.k);
        const v = r.newKv.map((e) => e!.v);
        seq.table!.append(ids, k, v);
        if (ids.length === 1 && wantLogits) report.decodeTokens++;
        else report.prefillTokens += ids.length;
        this.served.set(seq.owner, (this.served.get(seq.owner) ?? 0) + ids.length);
        if (!wantLogits || seq.cancelled) return;
        const token = seq.sample(r.logits[0]!, seq.all());
        seq.generated.push(token);
        const reason = seq.eosIds.includes(token)
          ? 'eos'
          : seq.generated.length >= seq.sampling.maxTokens || seq.length >= maxPos
            ? 'length'
            : null;
        if (seq.listener.token(token, reason !== null) === true) return this.finish(seq, 'stop');
        if (reason !== null) this.finish(seq, reason);
      } catch (err) {
        this.fail(seq, err);
      }
    });
  }

  private finish(seq: Sequence, reason: SequenceSummary['reason']): void {
    if (seq.cancelled) return;
    this.remove(seq);
    seq.listener.done({
      reason,
      ids: seq.generated.slice(),
      promptTokens: seq.prompt.length,
      completionTokens: seq.generated.length,
      cachedPromptTokens: Math.max(0, seq.cachedPromptTokens),
      kvBlocksShared: seq.kvBlocksShared,
      preemptions: seq.preemptions,
    });
  }

  private fail(seq: Sequence, err: unknown): void {
    if (seq.cancelled) return;
    this.remove(seq);
    seq.listener.error(err instanceof Error ? err : new Error(String(err)));
  }

  /** Frees a sequence's blocks and forgets it (idempotent). */
  private remove(seq: Sequence): void {
    seq.cancelled = true;
    if (this.byId.get(seq.id) !== seq) return;
    this.byId.delete(seq.id);
    seq.table?.release();
    seq.table = null;
    this.running = this.running.filter((s) => s !== seq);
    this.waiting = this.waiting.filter((s) => s !== seq);
    if (![...this.running, ...this.waiting].some((s) => s.owner === seq.owner)) this.served.delete(seq.owner);
  }
}
