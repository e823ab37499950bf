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
import * as tf from '@tensorflow/tfjs-core';
import { BadRequestError, ContextLengthError, KvExhaustedError, NotAvailableError } from '../../core/errors.js';
import type { SamplingParams } from '../../core/sampling.js';
import type { FinishReason } from '../../core/engine.js';
import { AuxCache } from '../kv/aux-cache.js';
import { BlockTable, type LayerAppend } from '../kv/block-table.js';
import { KvPool } from '../kv/pool.js';
import { scoreToken, type ScoredToken } from '../generate/logprobs.js';
import { entropy } from '../heads/heads.js';
import { acceptPath, trimTree, treeInput, type TreeInput } from '../heads/tree.js';
import { forward as defaultForward, kvRowJoiner } from '../model/forward.js';
import type { ForwardCallOptions, ForwardSequence, ForwardSequenceResult, LayerKvChunks, LoadedModel, PruneStep, ResumeStep } from '../model/types.js';
import { affordableDrafts, worthProposing, type RowCost } from './draft-budget.js';
import { bestDrafts, type SelfSpecCost } from './self-spec-cost.js';

export type ForwardFn = (model: LoadedModel, seqs: ForwardSequence[], opts?: ForwardCallOptions) => ForwardSequenceResult[];

/**
 * Picks the next token from a logit row; `context` is every token so far (prompt +
 * generated). A sampler that adjusts the row before drawing (penalties, logit_bias) hands
 * the adjusted row to `seen`; one that does not may ignore it, the row given is then the
 * row it drew from. Log-probabilities are scored on that row.
 */
export type TokenSampler = (logits: Float32Array, context: readonly number[], seen?: (row: Float32Array) => void) => number;

export type SchedulingPolicy = 'fcfs' | 'fair';

/**
 * A per-sequence limit on what may be generated (runtime/grammar's GrammarCursor): it
 * masks the logit row before sampling, so sampling settings apply to the allowed tokens.
 */
export interface SequenceConstraint {
  /** Sets the logits of tokens that would break the constraint to -Infinity, in place. */
  maskLogits(logits: Float32Array): void;
  /** Moves past the chosen token; true when the output is complete and nothing may follow. */
  accept(id: number): boolean;
  /**
   * An independent copy at the same place: speculative decoding walks drafts and
   * verification rows ahead of the tokens emitted, each row masked where its prefix leaves
   * the constraint, without moving the sequence's own cursor.
   */
  fork(): SequenceConstraint;
}

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
  /** Most new tokens in one forward; bounds how long one step can take (a LazyLLM prompt goes whole: see prefillTake). */
  maxStepTokens?: number;
  /** Most prompt tokens of one sequence in one step. */
  prefillChunk?: number;
  /** Reuse KV across sequences through the prefix tree (default true). */
  prefixSharing?: boolean;
  /** fcfs: arrival order. fair: the owner that was served fewest tokens goes first. */
  policy?: SchedulingPolicy;
  /** Speculative heads: draft tokens (tree nodes) verified per step over the whole batch. */
  maxDraftTokens?: number;
}

export interface SchedulerOptions extends EngineTuning {
  model: LoadedModel;
  /** One sampler per sequence, made from its settings (seeded, so resumable). */
  sampler: (params: SamplingParams) => TokenSampler;
  forward?: ForwardFn;
}

/**
 * How a sequence's forwards are shaped (runtime/stages builds it from a request's stages).
 * Prefill always runs every layer; pruning only ever withholds KV of positions the
 * sequence computes itself (see BlockTable.tainted for what that means for sharing).
 */
export interface SequenceShape {
  /** Skipped-layer decode: the layers decode steps run, ascending. */
  decodeLayers?: readonly number[];
  /**
   * 'lossy': each decode step runs decodeLayers only. 'self-speculative': decodeLayers
   * draft up to `drafts` tokens one by one, then the full model verifies them in one
   * forward and the sequence's own sampler picks each token from the full model's logits:
   * the output is the plain decode's, token for token.
   */
  skipMode?: 'lossy' | 'self-speculative';
  /** Tokens drafted per verification (self-speculative): the most a chain takes. */
  drafts?: number;
  /**
   * What drafting costs on this machine (self-spec-cost.ts, measured by the engine): with it
   * a self-speculative sequence drafts, after each verification, the chain length of the best
   * expected speedup at its acceptance so far, and none — plain steps, probing again after a
   * doubling wait — where no chain beats plain decoding. Without it the length grows and
   * shrinks with whole acceptances and rejections.
   */
  selfSpecCost?: SelfSpecCost;
  /**
   * The model shallow forwards run on (lossy decode steps and drafts): the kept layers with
   * a skip adapter merged in (runtime/adapters); default the scheduler's model. Rule: its
   * KV never becomes the full model's. A lossy step appends it to the sequence's own table,
   * which a shallow append taints (BlockTable.tainted: never cached, never adopted); a
   * draft's KV stays in the sequence's drafts, outside the pool, and is dropped at
   * verification, where the scheduler's model recomputes the accepted tokens at full depth.
   */
  decodeModel?: LoadedModel;
  /**
   * LazyLLM for the prompt, prefilled in one forward (see prefillTake): from each layer
   * on, keep this share of it, chosen by its final token's attention inside the forward — or, for baselines such as
   * random pruning, by `choose(live, count)` (indices into the chunk, ascending, last kept).
   *
   * `revive` (default 0: static pruning) turns on the Aux Cache: pruned tokens' hidden
   * states are kept, and each later prefill step (a recompute after preemption) and plain full-depth decode step revives
   * up to `revive` of them per pruning layer. Rule: at pruning layer l_i, a token parked
   * there is revived when the step's last token ranks it among the top keep_i share of all
   * the sequence's positions by its attention at the layer before l_i (the keys it has
   * there, its own included) — the same percentile rule as the prefill, applied to the
   * token that now asks. A revived token resumes at l_i from its parked hidden state and
   * runs every later layer, so every token is computed at most once per layer. Steps with
   * skipped layers or drafts (skipLayers, speculate) do not revive: their output is defined
   * against plain decoding over the same KV.
   */
  prune?: { layers: readonly number[]; keep: readonly number[]; choose?: (live: readonly number[], count: number) => number[]; revive?: number };
  /**
   * Speculative heads (Medusa / Cerberus): after each token, the heads propose a candidate
   * tree from the hidden state that produced it; the next step verifies the pending token
   * and the tree in one tree-masked forward and keeps the longest accepted path.
   */
  speculate?: SpeculateShape;
}

/** What speculative decoding needs per sequence (runtime/stages/speculate-shape.ts builds it). */
export interface SpeculateShape {
  /** Proposes each head's ranked candidates for hidden rows (runtime/heads SpeculativeHeads). */
  heads: { candidates(hidden: readonly Float32Array[], ranks: readonly number[], pending: readonly number[]): number[][][] };
  /** The candidate tree (Medusa's choices: per path, a candidate rank per depth), parents first. */
  tree: readonly (readonly number[])[];
  /** Each head's top-k the tree reads. */
  ranks: readonly number[];
  /**
   * The batch's cost model (draft-budget.ts): per tree node (in tree order, best first) its
   * measured share of accepted steps, and the forward's cost by rows relative to one row.
   * With both, a step keeps only the nodes that raise its expected tokens per cost, and a
   * sequence whose best node cannot pay at the batch's size decodes plainly without
   * running the heads; without them, trees share maxDraftTokens evenly.
   */
  nodeValues?: readonly number[];
  rowCost?: RowCost;
  /** Entropy (nats) of the base model's distribution above which the next step decodes plainly (Cerberus gate); null: never. */
  gate: number | null;
  /**
   * exact: the sequence's own sampler picks each token from the verified rows, so the output
   * is plain decoding's, token for token (greedy or seeded sampling). typical: Medusa's typical
   * acceptance for sampling, a draft kept when p > min(epsilon, delta·exp(−H)); faster but
   * NOT distribution-exact.
   */
  acceptance: 'exact' | 'typical';
  epsilon?: number;
  delta?: number;
}

/** What a sequence's shaping did and cost (present when it had a shape). */
export interface ShapeFigures {
  /** Layers one decode forward ran (skipLayers), and decode forwards at that depth. */
  decodeLayers?: number;
  shallowForwards?: number;
  /** Self-speculative: drafts proposed and accepted, verification forwards. */
  draftsProposed?: number;
  draftsAccepted?: number;
  verifications?: number;
  /** Speculative heads: steps the entropy gate sent to plain decoding, and drafts accepted at each depth (head). */
  gatedSteps?: number;
  /** Speculative heads: steps decoded plainly because no draft could pay for its row at the batch's size (the cost model). */
  unaffordableSteps?: number;
  acceptedAtDepth?: number[];
  /** LazyLLM: prompt tokens pruned at each pruning layer (cumulative, as the layer sees it). */
  prunedAtLayer?: Record<number, number>;
  /** LazyLLM: tokens revived from the Aux Cache at each pruning layer, over the sequence's steps. */
  revivedAtLayer?: Record<number, number>;
  /** Wall time of the forwards the sequence took part in, by kind. */
  prefillMs: number;
  decodeMs: number;
}

export interface SubmitRequest {
  id: string;
  ids: number[];
  sampling: SamplingParams;
  owner?: string;
  /** End-of-sequence ids; default the model config's. */
  eosIds?: number[];
  shape?: SequenceShape;
  /** Structured output: the sequence ends ('stop') as soon as the constraint is complete. */
  constraint?: SequenceConstraint;
  /**
   * Opt-in log-probabilities: each token comes with its own and those of this many most
   * likely alternatives (0 for none), scored on the row it was drawn from (runtime/generate/logprobs.ts).
   * Absent: nothing is scored, a step costs what it did.
   */
  logprobs?: number;
  /** Refuse (ContextLengthError) rather than shorten when prompt + sampling.maxTokens exceed the context. */
  maxTokensMustFit?: boolean;
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
  /** Present when the request had a shape. */
  shape?: ShapeFigures;
}

export interface SequenceListener {
  /**
   * A new token (an end-of-sequence one included); `final` when it ends the sequence.
   * Return true to end the sequence here (a stop string matched). `scored` is present
   * when the request asked for log-probabilities.
   */
  token(id: number, final: boolean, scored?: ScoredToken): boolean | void;
  /**
   * The final hidden state (after the final norm) of the position whose logits chose the
   * next token, before token() gets that token; asking for it makes the forward return it
   * (self-distillation data for speculative heads, runtime/train/heads-data.ts). Plain steps only.
   */
  hidden?(row: Float32Array): void;
  /** At first admission: how much of the prompt's KV came from the prefix cache or a live sequence. */
  admitted?(info: { promptTokens: number; cachedPromptTokens: number; kvBlocksShared: number }): void;
  /**
   * Each speculative step as it happens: drafts verified (heads' tree or layer-skip chain)
   * and how many were accepted, or the Cerberus gate sending the next step to plain decoding.
   */
  draftStep?(step: DraftStep): void;
  done(summary: SequenceSummary): void;
  error(err: Error): void;
}

export interface DraftStep {
  proposed: number;
  accepted: number;
  /** The entropy gate closed: no drafts for the next step. */
  gated: boolean;
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
  /** tf tensors held by KV blocks (cached ones included) and revived LazyLLM rows. */
  kvTensors: number;
  /** Tokens parked in LazyLLM Aux Caches (their blocks are among kvBlocksUsed). */
  auxCacheEntries: number;
  kvBytesPerBlock: number;
  queueDepth: number;
  runningSequences: number;
}

/** Self-speculative drafts in flight: proposed tokens and their shallow KV, outside the pool. */
interface Drafts {
  tokens: number[];
  /** Per layer, the drafts' KV chunks (kept layers only); at most `drafts` rows each. */
  kv: LayerKvChunks[];
}

/**
 * Plain decode steps a self-speculative sequence takes after its drafts kept failing, before
 * it drafts again: PROBE_AFTER, doubled after every probe that fails too, up to PROBE_MOST.
 * A failed probe costs a shallow step and a two-row verification (~1.8 plain steps on
 * SmolLM2 at r = 2) for one token, so a drafter the model never agrees with (SmolLM2's
 * unadapted kept layers: 0 % accepted) lost ~10 % at a fixed 8 and loses ~1–2 % this way.
 */
const PROBE_AFTER = 8;
const PROBE_MOST = 128;

class Sequence {
  table: BlockTable | null = null;
  /** LazyLLM's Aux Cache, while running with revival on; released with the table. */
  aux: AuxCache | null = null;
  readonly generated: number[] = [];
  drafts: Drafts | null = null;
  /**
   * Self-speculative draft length, adapted: it starts at one, grows by one after a
   * verification that accepts every draft (up to shape.drafts) and shrinks by one after one
   * that accepts none; at zero the sequence decodes plainly for probeAfter tokens, then
   * drafts one again. Drafts the full model keeps rejecting cost a shallow forward each and
   * buy nothing, so this bounds the loss; the output is the same whatever the length.
   * Starting at one rather than shape.drafts: a drafter that fails from the first token
   * wasted shape.drafts verifications of shrinking width before its first plain step.
   */
  draftWidth = 0;
  plainLeft = 0;
  probeAfter = PROBE_AFTER;
  /** Self-speculative drafts accepted so far, and verifications that rejected one (the acceptance estimate for SequenceShape.selfSpecCost). */
  draftsKept = 0;
  draftsRejected = 0;
  /** Speculative heads: the candidate tree to verify with the pending token, and the hidden row the heads read at the end of this step. */
  tree: TreeInput | null = null;
  headsInput: Float32Array | null = null;
  figures: ShapeFigures | null = null;
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
    readonly shape: SequenceShape | null,
    readonly constraint: SequenceConstraint | undefined,
    /** Alternatives to score per token; undefined when log-probabilities were not asked for. */
    readonly logprobs: number | undefined,
  ) {
    if (shape !== null) this.figures = { prefillMs: 0, decodeMs: 0 };
    this.draftWidth = shape?.drafts === undefined ? 0 : Math.min(1, shape.drafts);
  }

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

  /**
   * The one pending token is a generated one (not the prompt's last, which a short final
   * chunk also leaves): only then may a step be shallow, since the prompt is always
   * prefilled at full depth.
   */
  get decoding(): boolean {
    return this.pending === 1 && this.generated.length > 0;
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
  /** prefill: a prompt chunk; decode: one token; draft: one shallow draft token; verify: pending token + drafts; tree: pending token + the heads' tree. */
  kind: 'prefill' | 'decode' | 'draft' | 'verify' | 'tree';
  /** Layers to run; undefined for every layer. */
  layers?: readonly number[];
  /** The model to run (a shallow step's SequenceShape.decodeModel); undefined: the scheduler's. */
  model?: LoadedModel;
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
  private readonly maxDraftTokens: number;
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
      // The default forward keeps copies of the KV rows in its kernels' memory: a filled
      // block's are joined from its rows' (forward.ts kvRowJoiner) rather than made anew.
      joinRows: options.forward === undefined ? kvRowJoiner(options.model) : undefined,
    });
    // 32 sequences keep a 2-core machine busy on decode without making any step long.
    this.maxBatch = options.maxBatch ?? 32;
    // 256 tokens per step: a prefill chunk takes a fraction of a second on small models.
    this.maxStepTokens = options.maxStepTokens ?? 256;
    this.prefillChunk = Math.min(options.prefillChunk ?? 128, this.maxStepTokens);
    this.policy = options.policy ?? 'fcfs';
    // 64 draft rows per step: on 2 cores a forward's cost grows with its rows once the batch
    // is compute-bound, so wide trees for many sequences would cost more than they accept.
    this.maxDraftTokens = options.maxDraftTokens ?? 64;
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
      throw new ContextLengthError('ids', maxPos, `the prompt has ${request.ids.length} tokens, the model's context is ${maxPos}`);
    }
    if (request.maxTokensMustFit && request.ids.length + request.sampling.maxTokens > maxPos) {
      const room = maxPos - request.ids.length;
      throw new ContextLengthError(
        'sampling.maxTokens',
        maxPos,
        `the prompt has ${request.ids.length} tokens and ${request.sampling.maxTokens} more were asked for; the model's context is ${maxPos} (ask for at most ${room})`,
      );
    }
    const total = Math.min(request.ids.length + request.sampling.maxTokens, maxPos);
    const window = this.model.config.slidingWindow;
    if (window !== null && total > window) {
      // Refused here: the forward would refuse it mid-batch and fail its batch-mates too.
      throw new NotAvailableError('sliding-window attention', `the request may reach ${total} tokens, the window is ${window}`);
    }
    if (request.shape !== undefined) this.checkShape(request.shape);
    if (request.logprobs !== undefined && !(Number.isInteger(request.logprobs) && request.logprobs >= 0 && request.logprobs <= vocab)) {
      throw new BadRequestError('logprobs', `must be an integer from 0 to the vocabulary size (${vocab})`);
    }
    // A reviving sequence may park up to its whole length in its Aux Cache beside its KV.
    const parks = (request.shape?.prune?.revive ?? 0) > 0 ? Math.ceil(total / new AuxCache(this.pool, this.model.config.hiddenSize).perBlock) : 0;
    const need = this.pool.blocksFor(total) + parks;
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
      request.shape ?? null,
      request.constraint,
      request.logprobs,
    );
    this.byId.set(seq.id, seq);
    this.waiting.push(seq);
  }

  /** Refuses a shape the forward would refuse mid-batch (and fail its batch-mates with). */
  private checkShape(shape: SequenceShape): void {
    const L = this.model.config.numLayers;
    const ascending = (xs: readonly number[], min: number) => xs.every((x, i) => Number.isInteger(x) && x >= min && x < L && (i === 0 || x > xs[i - 1]!));
    if (shape.decodeLayers !== undefined && !(shape.decodeLayers.length > 0 && ascending(shape.decodeLayers, 0))) {
      throw new BadRequestError('shape.decodeLayers', `must be ascending layers of 0..${L - 1}`);
    }
    const dm = shape.decodeModel?.config;
    if (dm !== undefined && (dm.numLayers !== L || dm.vocabSize !== this.model.config.vocabSize || dm.hiddenSize !== this.model.config.hiddenSize)) {
      throw new BadRequestError('shape.decodeModel', 'must have the shape of the scheduler model (its kept layers adapted)');
    }
    if (shape.skipMode === 'self-speculative' && !(Number.isInteger(shape.drafts) && shape.drafts! >= 1)) {
      throw new BadRequestError('shape.drafts', 'self-speculative decoding needs a positive number of drafts');
    }
    const prune = shape.prune;
    if (prune !== undefined) {
      if (prune.revive !== undefined && !(Number.isInteger(prune.revive) && prune.revive >= 0)) {
        throw new BadRequestError('shape.prune.revive', 'must be a whole number of tokens per layer and step');
      }
      if (!(prune.layers.length === prune.keep.length && ascending(prune.layers, 1))) {
        throw new BadRequestError('shape.prune', `needs ascending layers of 1..${L - 1}, one share each`);
      }
      if (!prune.keep.every((k, i) => k > 0 && k <= 1 && (i === 0 || k <= prune.keep[i - 1]!))) {
        throw new BadRequestError('shape.prune.keep', 'shares must be in (0, 1] and not increase');
      }
    }
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
    const live = [...this.running, ...this.waiting];
    return {
      kvBlocksTotal: s.total,
      kvBlocksUsed: s.used,
      kvBlocksShared: s.shared,
      kvBlocksCached: s.cached,
      kvTensors: s.tensors + live.reduce((n, q) => n + (q.table?.revivedTensors ?? 0), 0),
      auxCacheEntries: live.reduce((n, q) => n + (q.aux?.size ?? 0), 0),
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
      const need = table.blocksNeeded(this.prefillTake(seq, all.length - table.length, this.maxStepTokens));
      // Headroom of one block per running sequence, so admitting does not force a preemption.
      if (this.pool.available < need + this.running.length) {
        table.release();
        break;
      }
      seq.table = table;
      if ((seq.shape?.prune?.revive ?? 0) > 0) seq.aux = new AuxCache(this.pool, this.model.config.hiddenSize);
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
    const treeRows = this.treeRows(running);
    for (const seq of running) {
      if (seq.pending === 1 && budget > 0) {
        if (seq.tree !== null) seq.tree = trimTree(seq.tree, Math.min(treeRows.get(seq) ?? 1, budget, this.tokensLeft(seq)));
        const n = this.decodeWidth(seq);
        chosen.push({ seq, n });
        budget -= n;
      }
    }
    for (const seq of running) {
      if (seq.pending > 1 && budget > 0) {
        const n = this.prefillTake(seq, seq.pending, budget);
        chosen.push({ seq, n });
        budget -= n;
      }
    }
    // Oldest first: they reserve before the young ones that may be preempted for them.
    chosen.sort((a, b) => a.seq.arrival - b.seq.arrival);
    const items: WorkItem[] = [];
    for (const { seq, n } of chosen) {
      if (seq.table === null) continue; // preempted for an older one in this loop
      const all = seq.all();
      const start = seq.table.length;
      const shape = seq.shape;
      if (seq.decoding && shape?.skipMode === 'self-speculative' && n === 1 && this.draftTarget(seq) > (seq.drafts?.tokens.length ?? 0)) {
        // A draft: shallow KV outside the pool, nothing to reserve.
        const last = seq.drafts?.tokens.at(-1) ?? all[start]!;
        items.push({ seq, ids: [last], wantLogits: true, kind: 'draft', layers: shape.decodeLayers, ...(shape.decodeModel ? { model: shape.decodeModel } : {}) });
        continue;
      }
      let ok = this.reserve(seq, n);
      while (!ok) {
        const victim = this.running.reduce((a, b) => (b.arrival > a.arrival ? b : a));
        this.preempt(victim);
        report.preempted++;
        if (victim === seq) break;
        ok = this.reserve(seq, n);
      }
      if (!ok) continue;
      if (!seq.decoding) {
        items.push({ seq, ids: all.slice(start, start + n), wantLogits: start + n === all.length, kind: 'prefill' });
      } else if (seq.drafts !== null) {
        items.push({ seq, ids: [all[start]!, ...seq.drafts.tokens], wantLogits: true, kind: 'verify' });
      } else if (seq.tree !== null) {
        items.push({ seq, ids: seq.tree.ids, wantLogits: true, kind: 'tree' });
      } else {
        const lossy = seq.decoding && shape?.decodeLayers !== undefined && shape.skipMode !== 'self-speculative';
        items.push({
          seq,
          ids: [all[start]!],
          wantLogits: true,
          kind: 'decode',
          ...(lossy ? { layers: shape.decodeLayers, ...(shape.decodeModel ? { model: shape.decodeModel } : {}) } : {}),
        });
      }
    }
    return items;
  }

  /**
   * Prompt tokens a prefilling sequence runs this step, of the `pending` it has left.
   * Plain prefill goes in chunks (prefillChunk, within the step's token budget) so that a
   * long prompt does not stall other sequences' decoding.
   *
   * A LazyLLM sequence (shape.prune) runs its whole remaining prompt in one forward, past
   * the step budget: LazyLLM's rule is that every pruning decision is made by the prompt's
   * final token (the question sits at the end of a QA prompt), and a chunk can only prune
   * by its own last token. Chunked, each 128-token chunk of a 4k passage-QA prompt chose
   * its tokens without the question and the full model's one correct answer was lost
   * (`bench stages --arg parts=lazy`, runtime/bench/HISTORY.md). Other sequences' decode rows still ride in
   * that step's batch, but wait for it: a 4k pruned prefill of SmolLM2-135M is one step of
   * about as long as its TTFT (README's lazy row). The alternative weighed — non-final
   * chunks running only the layers below the first pruning layer and parking their
   * hidden states, the final chunk running the rest over all of them — gives the same
   * TTFT and shortens that one long step by the dense layers below the first pruning
   * layer (8 of 30 on SmolLM2: 8 of the default schedule's 16.2 token-layers, so about
   * half), but needs the forward to prune resumed rows progressively and to batch their
   * attention (today they run every later layer, one attention row at a time): a change
   * to the forward left for later. Every token is still computed at most once per layer,
   * and decode-time revival is unchanged.
   */
  private prefillTake(seq: Sequence, pending: number, budget: number): number {
    return seq.shape?.prune !== undefined ? pending : Math.min(pending, this.prefillChunk, budget);
  }

  /**
   * Takes the blocks a step of n tokens needs: KV for them and, for a pruned prefill chunk
   * with an Aux Cache, room to park all but its last token. All or nothing.
   */
  private reserve(seq: Sequence, n: number): boolean {
    if (!seq.table!.reserve(n)) return false;
    if (seq.aux !== null && !seq.decoding && n > 1 && !seq.aux.reserve(n - 1)) {
      seq.table!.unreserve();
      return false;
    }
    return true;
  }

  /** Tokens a sequence may still generate. */
  private tokensLeft(seq: Sequence): number {
    return Math.min(seq.sampling.maxTokens - seq.generated.length, this.model.config.maxPositionEmbeddings - seq.length);
  }

  /** Drafts worth proposing before the next verification: none past what may still be generated. */
  private draftTarget(seq: Sequence): number {
    return seq.plainLeft > 0 ? 0 : Math.max(0, Math.min(seq.draftWidth, this.tokensLeft(seq) - 1));
  }

  /** Tokens a decode-ready sequence runs this step: 1, or pending + drafts when it verifies. */
  private decodeWidth(seq: Sequence): number {
    if (seq.tree !== null && seq.decoding) return seq.tree.ids.length;
    if (seq.shape?.skipMode !== 'self-speculative' || !seq.decoding) return 1;
    const drafted = seq.drafts?.tokens.length ?? 0;
    return drafted > 0 && drafted >= this.draftTarget(seq) ? 1 + drafted : 1;
  }

  /** Frees a sequence's draft KV (after verification, on preemption, cancel or failure). */
  private dropDrafts(seq: Sequence): void {
    if (seq.drafts === null) return;
    for (const layer of seq.drafts.kv) for (const t of [...layer.k, ...layer.v]) t.dispose();
    seq.drafts = null;
  }

  private preempt(seq: Sequence): void {
    this.dropDrafts(seq);
    // The recompute prunes (and parks) afresh; what was parked belongs to the dropped KV.
    seq.aux?.release();
    seq.aux = null;
    // The tree was drawn from the pending token's hidden state; the recompute gives a new one.
    seq.tree = null;
    seq.headsInput = null;
    seq.table?.release();
    seq.table = null;
    seq.preemptions++;
    this.running.splice(this.running.indexOf(seq), 1);
    this.waiting.push(seq);
  }

  private run(items: WorkItem[], report: StepReport): void {
    // One batched forward per layer set and model: skipped-layer decode and drafts run
    // beside the full-depth work of the same step, each group packed as one batch (adapted
    // shallow steps apart from unadapted ones: other weights).
    const byModel = new Map<LoadedModel, Map<string, WorkItem[]>>();
    for (const item of items) {
      const groupsOf = byModel.get(item.model ?? this.model) ?? byModel.set(item.model ?? this.model, new Map()).get(item.model ?? this.model)!;
      const key = item.layers?.join(',') ?? 'all';
      groupsOf.set(key, [...(groupsOf.get(key) ?? []), item]);
    }
    const groups = [...byModel.values()].flatMap((g) => [...g.values()]);
    report.sequences = items.length;
    for (const group of groups) {
      const t0 = performance.now();
      let results: ForwardSequenceResult[];
      try {
        const layers = group[0]!.layers;
        results = this.forwardFn(group[0]!.model ?? this.model, group.map((item) => this.input(item)), layers ? { layers: [...layers] } : {});
      } catch (err) {
        for (const { seq } of group) this.fail(seq, err);
        continue;
      }
      const ms = performance.now() - t0;
      group.forEach((item, i) => {
        const r = results[i]!;
        const f = item.seq.figures;
        if (f !== null) {
          if (item.kind === 'prefill') f.prefillMs += ms;
          else f.decodeMs += ms;
        }
        // One sequence's failure (a listener that throws) must not touch its batch-mates.
        try {
          if (item.kind === 'draft') this.takeDraft(item, r);
          else if (item.kind === 'verify') this.verify(item, r, report);
          else if (item.kind === 'tree') this.verifyTree(item, r, report);
          else this.advance(item, r, report);
        } catch (err) {
          this.fail(item.seq, err);
        }
      });
    }
    this.proposeTrees(items);
  }

  /**
   * Rows (pending token + tree nodes) each tree may run this step: the step's draft rows
   * (maxDraftTokens) shared evenly among the sequences with one; where the trees carry the
   * batch's cost model (SpeculateShape.nodeValues, rowCost), only the nodes that pay for
   * their rows at this batch's size (draft-budget.ts).
   */
  private treeRows(running: readonly Sequence[]): Map<Sequence, number> {
    const decoding = running.filter((s) => s.pending === 1);
    const trees = decoding.filter((s) => s.decoding && s.tree !== null);
    const share = Math.floor(this.maxDraftTokens / Math.max(1, trees.length));
    const rows = new Map(trees.map((s) => [s, 1 + Math.min(share, s.tree!.ids.length - 1)]));
    const costed = trees.filter((s) => s.shape!.speculate!.nodeValues !== undefined && s.shape!.speculate!.rowCost !== undefined);
    if (costed.length > 0) {
      const drafts = costed.map((s) => ({ values: s.shape!.speculate!.nodeValues!, max: rows.get(s)! - 1 }));
      const kept = affordableDrafts(decoding.length, drafts, costed[0]!.shape!.speculate!.rowCost!, this.maxDraftTokens);
      costed.forEach((s, i) => rows.set(s, 1 + kept[i]!));
    }
    return rows;
  }

  /** The forward input of one work item. */
  private input(item: WorkItem): ForwardSequence {
    const { seq, ids, kind } = item;
    const start = seq.table!.length;
    const positions = ids.map((_, i) => start + (kind === 'draft' ? seq.drafts?.tokens.length ?? 0 : 0) + i);
    const past = seq.table!.past();
    if (kind === 'draft') return { ids, positions, past: this.withDrafts(past, seq.drafts), logits: 'last' };
    if (kind === 'verify') return { ids, positions, past, logits: 'all' };
    if (kind === 'tree') {
      const tree = seq.tree!;
      return { ids, positions: tree.depth.map((d) => start + d), past, logits: 'all', treeMask: tree.mask, returnHidden: true };
    }
    const prune = kind === 'prefill' && ids.length > 1 ? seq.shape?.prune : undefined;
    return {
      ids,
      positions,
      past,
      logits: item.wantLogits ? 'last' : 'none',
      ...(prune ? { prune: pruneSteps(prune, ids.length), ...(seq.aux !== null ? { returnPrunedHidden: true } : {}) } : {}),
      ...this.revival(item),
      ...(item.wantLogits && (this.speculates(seq) || seq.listener.hidden !== undefined) ? { returnHidden: true } : {}),
    };
  }

  /**
   * The resume steps of a prefill chunk or plain full-depth decode step whose sequence has
   * parked tokens (the rule: SequenceShape.prune.revive), with the row positions they need.
   */
  private revival(item: WorkItem): Pick<ForwardSequence, 'resume' | 'pastPositions'> {
    const { seq, kind } = item;
    const prune = seq.shape?.prune;
    const shallow = seq.shape?.decodeLayers !== undefined || seq.shape?.speculate !== undefined;
    if (seq.aux === null || seq.aux.size === 0 || prune === undefined || (kind !== 'prefill' && (kind !== 'decode' || shallow))) return {};
    const total = seq.table!.length + item.ids.length;
    const parked = seq.aux.byLayer();
    const resume: ResumeStep[] = prune.layers.flatMap((l, i) => {
      const at = parked.get(l);
      return at === undefined ? [] : [{ fromLayer: l, ...at, select: { rank: Math.ceil(prune.keep[i]! * total - 1e-9), max: prune.revive ?? 0 } }];
    });
    return resume.length > 0 ? { resume, pastPositions: seq.table!.rowPositions() } : {};
  }

  /** After a step's forward: park what it pruned, keep what it revived (its KV and figures). */
  private absorb(seq: Sequence, start: number, r: ForwardSequenceResult): void {
    const aux = seq.aux;
    if (aux === null) return;
    for (const p of r.prunedHidden ?? []) aux.park(p.fromLayer, p.tokenIndices.map((i) => start + i), p.hidden);
    if (r.resumedKv !== undefined) seq.table!.addRevived(r.resumedKv);
    for (const { fromLayer, positions } of r.resumed ?? []) {
      aux.take(positions);
      const f = seq.figures!;
      f.revivedAtLayer ??= {};
      f.revivedAtLayer[fromLayer] = (f.revivedAtLayer[fromLayer] ?? 0) + positions.length;
    }
    aux.fit();
  }

  /** The table's chunks with the drafts' shallow KV after them (layers without drafts as they are). */
  private withDrafts(past: LayerKvChunks[] | undefined, drafts: Drafts | null): LayerKvChunks[] | undefined {
    if (drafts === null || past === undefined) return past;
    return past.map((layer, l) => {
      const d = drafts.kv[l];
      return d === undefined || d.k.length === 0 ? layer : { k: [...layer.k, ...d.k], v: [...layer.v, ...d.v] };
    });
  }

  /** A prefill chunk or a plain/skipped decode step: append its KV, sample when it has logits. */
  private advance(item: WorkItem, r: ForwardSequenceResult, report: StepReport): void {
    const { seq, ids, wantLogits } = item;
    const start = seq.table!.length;
    seq.table!.appendLayers(ids, r.newKv);
    this.absorb(seq, start, r);
    this.count(item, r);
    if (item.kind === 'decode' && seq.plainLeft > 0 && --seq.plainLeft === 0) seq.draftWidth = 1;
    if (ids.length === 1 && wantLogits) report.decodeTokens++;
    else report.prefillTokens += ids.length;
    this.served.set(seq.owner, (this.served.get(seq.owner) ?? 0) + ids.length);
    if (!wantLogits || seq.cancelled) return;
    const row = r.logits[0]!;
    seq.constraint?.maskLogits(row);
    seq.listener.hidden?.(r.hidden![0]!);
    const { token, scored } = this.pick(seq, row, seq.all());
    if (this.emit(seq, token, scored) && this.speculates(seq)) this.queueHeads(seq, row, r.hidden![0]!);
  }

  /** Whether a sequence drafts with heads. */
  private speculates(seq: Sequence): boolean {
    // A sequence asking for log-probabilities decodes plainly: they are scored on the sampled row.
    return seq.shape?.speculate !== undefined && seq.logprobs === undefined;
  }

  /**
   * The sequence's constraint as it stands after `ahead` (tokens past those emitted:
   * drafts, accepted rows, a tree path), in a copy; 'complete' when `ahead` completes it,
   * so nothing may follow; undefined for a sequence without one.
   */
  private constraintAfter(seq: Sequence, ahead: readonly number[]): SequenceConstraint | 'complete' | undefined {
    if (seq.constraint === undefined) return undefined;
    const cursor = seq.constraint.fork();
    for (const id of ahead) if (cursor.accept(id)) return 'complete';
    return cursor;
  }

  /**
   * After a token: the Cerberus gate reads the base model's entropy at the row that chose
   * it; below the threshold, the row's hidden state waits for the heads at the end of the step.
   */
  private queueHeads(seq: Sequence, logits: Float32Array, hidden: Float32Array): void {
    const spec = seq.shape!.speculate!;
    if (this.tokensLeft(seq) <= 1) return;
    if (spec.gate !== null && entropy(logits) > spec.gate) {
      seq.figures!.gatedSteps = (seq.figures!.gatedSteps ?? 0) + 1;
      seq.listener.draftStep?.({ proposed: 0, accepted: 0, gated: true });
      return;
    }
    seq.headsInput = hidden;
  }

  /** One heads call per heads model for every sequence that queued a hidden row this step; each gets its tree. */
  private proposeTrees(items: WorkItem[]): void {
    // A tree whose best node cannot pay for its row at the next step's batch size would be trimmed away: skip its heads.
    const decoding = [...this.running].filter((s) => s.pending === 1).length;
    for (const { seq } of items) {
      const spec = seq.shape?.speculate;
      if (seq.headsInput === null || spec?.nodeValues === undefined || spec.rowCost === undefined) continue;
      if (worthProposing(decoding, spec.nodeValues[0] ?? 0, spec.rowCost)) continue;
      seq.headsInput = null;
      seq.figures!.unaffordableSteps = (seq.figures!.unaffordableSteps ?? 0) + 1;
    }
    const queued = items.map((i) => i.seq).filter((s) => s.headsInput !== null && !s.cancelled && s.table !== null);
    const byHeads = new Map<SpeculateShape['heads'], Sequence[]>();
    for (const seq of queued) {
      const heads = seq.shape!.speculate!.heads;
      byHeads.set(heads, [...(byHeads.get(heads) ?? []), seq]);
    }
    for (const [heads, seqs] of byHeads) {
      const ranks = seqs[0]!.shape!.speculate!.ranks.map((_, k) => Math.max(...seqs.map((s) => s.shape!.speculate!.ranks[k] ?? 0)));
      let candidates: number[][][];
      try {
        candidates = heads.candidates(seqs.map((s) => s.headsInput!), ranks, seqs.map((s) => s.generated.at(-1)!));
      } catch (err) {
        for (const seq of seqs) this.fail(seq, err);
        continue;
      }
      seqs.forEach((seq, i) => {
        seq.tree = treeInput(seq.shape!.speculate!.tree, seq.generated.at(-1)!, candidates[i]!);
        seq.headsInput = null;
      });
    }
  }

  /**
   * Tree verification: the pending token and every tree node ran in one tree-masked forward.
   * From the root, the base model picks a token at each accepted row (the sequence's own
   * sampler: exact; or typical acceptance); while it is one of the row's children, that child
   * is accepted. The KV of the accepted rows is kept, the rest disposed and its reserved
   * blocks go back to the pool; the last accepted row's hidden state feeds the heads.
   */
  private verifyTree(item: WorkItem, r: ForwardSequenceResult, report: StepReport): void {
    const { seq } = item;
    const tree = seq.tree!;
    seq.tree = null;
    const spec = seq.shape!.speculate!;
    const typical = spec.acceptance === 'typical' && seq.sampling.temperature > 0;
    // A path's rows are masked where the constraint stands after the tokens taken before
    // them; a token that completes it ends the path, as an end-of-sequence token does.
    let complete = false;
    const { rows, picked } = acceptPath(
      tree,
      (row, taken) => {
        // `taken` never completes the constraint: the path ends at the token that does.
        const constraint = this.constraintAfter(seq, taken) as SequenceConstraint | undefined;
        constraint?.maskLogits(r.logits[row]!);
        const token = (typical ? typicalPick(tree, row, r.logits[row]!, seq.sampling.temperature, spec) : undefined) ?? seq.sample(r.logits[row]!, [...seq.all(), ...taken]);
        complete = constraint?.accept(token) === true;
        return token;
      },
      (token) => complete || seq.eosIds.includes(token),
    );
    const keep = rows.length;
    const prefix = rows.every((row, i) => row === i);
    seq.table!.appendLayers(
      rows.map((row) => tree.ids[row]!),
      r.newKv.map((e) => {
        if (e === null) return null;
        if (keep === tree.ids.length) return e;
        const cut = prefix
          ? { k: tf.slice(e.k, [0, 0], [keep, e.k.shape[1]]), v: tf.slice(e.v, [0, 0], [keep, e.v.shape[1]]) }
          : tf.tidy(() => ({ k: tf.gather(e.k, rows) as tf.Tensor2D, v: tf.gather(e.v, rows) as tf.Tensor2D }));
        tf.dispose([e.k, e.v]);
        return { ...cut, tokenIndices: rows.map((_, i) => i) };
      }),
    );
    const f = seq.figures!;
    f.verifications = (f.verifications ?? 0) + 1;
    f.draftsProposed = (f.draftsProposed ?? 0) + tree.ids.length - 1;
    f.draftsAccepted = (f.draftsAccepted ?? 0) + keep - 1;
    f.acceptedAtDepth ??= [];
    for (let d = 1; d < keep; d++) f.acceptedAtDepth[d - 1] = (f.acceptedAtDepth[d - 1] ?? 0) + 1;
    seq.listener.draftStep?.({ proposed: tree.ids.length - 1, accepted: keep - 1, gated: false });
    report.decodeTokens += picked.length;
    this.served.set(seq.owner, (this.served.get(seq.owner) ?? 0) + tree.ids.length);
    for (const token of picked) if (!this.emit(seq, token)) return;
    const last = rows.at(-1)!;
    this.queueHeads(seq, r.logits[last]!, r.hidden![last]!);
  }

  /** The sequence's sampler on one row, with the token's log-probabilities when asked for. */
  private pick(seq: Sequence, row: Float32Array, context: readonly number[]): { token: number; scored?: ScoredToken } {
    if (seq.logprobs === undefined) return { token: seq.sample(row, context) };
    let drawnFrom = row;
    const token = seq.sample(row, context, (adjusted) => (drawnFrom = adjusted));
    return { token, scored: scoreToken(drawnFrom, token, seq.logprobs) };
  }

  /** Stage figures of a prefill chunk or decode step. */
  private count(item: WorkItem, r: ForwardSequenceResult): void {
    const f = item.seq.figures;
    if (f === null) return;
    if (item.layers !== undefined) {
      f.decodeLayers = item.layers.length;
      f.shallowForwards = (f.shallowForwards ?? 0) + 1;
    }
    const prune = item.kind === 'prefill' ? item.seq.shape?.prune : undefined;
    if (prune !== undefined) {
      f.prunedAtLayer ??= {};
      for (const l of prune.layers) f.prunedAtLayer[l] = (f.prunedAtLayer[l] ?? 0) + item.ids.length - (r.newKv[l]?.tokenIndices.length ?? 0);
    }
  }

  /** Samples-side bookkeeping of one token; false when the sequence ended with it. */
  private emit(seq: Sequence, token: number, scored?: ScoredToken): boolean {
    seq.generated.push(token);
    const complete = seq.constraint?.accept(token) === true;
    const reason = seq.eosIds.includes(token)
      ? 'eos'
      : complete
        ? 'stop'
        : seq.generated.length >= seq.sampling.maxTokens || seq.length >= this.model.config.maxPositionEmbeddings
          ? 'length'
          : null;
    if (seq.listener.token(token, reason !== null, scored) === true) {
      this.finish(seq, 'stop');
      return false;
    }
    if (reason !== null) {
      this.finish(seq, reason);
      return false;
    }
    return !seq.cancelled;
  }

  /** A shallow draft token: kept with its KV until the next verification. */
  private takeDraft(item: WorkItem, r: ForwardSequenceResult): void {
    const seq = item.seq;
    seq.drafts ??= { tokens: [], kv: Array.from({ length: this.model.config.numLayers }, () => ({ k: [], v: [] })) };
    r.newKv.forEach((e, l) => {
      if (e === null) return;
      seq.drafts!.kv[l]!.k.push(e.k);
      seq.drafts!.kv[l]!.v.push(e.v);
    });
    // Greedy drafts: the sequence's own sampler (and its seeded state) is kept for the
    // full model's logits, so that sampling sees exactly what plain decoding would. Under a
    // constraint a draft is the best token it allows (one it forbids could never be accepted);
    // past the constraint's end any token does, as verification stops there.
    const row = r.logits[0]!;
    const constraint = this.constraintAfter(seq, seq.drafts.tokens);
    if (constraint !== 'complete') constraint?.maskLogits(row);
    seq.drafts.tokens.push(argmax(row));
    const f = seq.figures!;
    f.draftsProposed = (f.draftsProposed ?? 0) + 1;
    f.decodeLayers = item.layers?.length ?? this.model.config.numLayers;
    f.shallowForwards = (f.shallowForwards ?? 0) + 1;
  }

  /**
   * Verification: the full model ran the pending token and the drafts in one forward. The
   * sequence's sampler picks a token from each row in turn, exactly as plain decoding would
   * from the same prefix; while it picks the draft that follows, the next row is valid too.
   * The KV of the pending token and the accepted drafts is kept, the rest freed.
   */
  private verify(item: WorkItem, r: ForwardSequenceResult, report: StepReport): void {
    const { seq, ids } = item;
    const drafts = seq.drafts!.tokens;
    this.dropDrafts(seq);
    const picked: number[] = [];
    const scores: (ScoredToken | undefined)[] = [];
    for (let i = 0; i <= drafts.length; i++) {
      const constraint = this.constraintAfter(seq, picked);
      if (constraint === 'complete') break;
      constraint?.maskLogits(r.logits[i]!);
      const { token, scored } = this.pick(seq, r.logits[i]!, [...seq.all(), ...picked]);
      picked.push(token);
      scores.push(scored);
      if (token !== drafts[i] || seq.eosIds.includes(token)) break;
    }
    const keep = picked.length; // rows: the pending token and the accepted drafts
    seq.table!.appendLayers(
      ids.slice(0, keep),
      r.newKv.map((e) => {
        if (e === null) return null;
        if (keep === ids.length) return e;
        const cut = { k: tf.slice(e.k, [0, 0], [keep, e.k.shape[1]]), v: tf.slice(e.v, [0, 0], [keep, e.v.shape[1]]), tokenIndices: e.tokenIndices.slice(0, keep) };
        tf.dispose([e.k, e.v]);
        return cut;
      }),
    );
    const f = seq.figures!;
    f.verifications = (f.verifications ?? 0) + 1;
    f.draftsAccepted = (f.draftsAccepted ?? 0) + keep - 1;
    seq.listener.draftStep?.({ proposed: drafts.length, accepted: keep - 1, gated: false });
    seq.draftsKept += keep - 1;
    if (keep - 1 < drafts.length) seq.draftsRejected++;
    const cost = seq.shape!.selfSpecCost;
    let width: number;
    if (cost !== undefined) {
      // The chain that pays best at the acceptance so far (each draft given the ones before
      // it: kept over kept + rejected, one of each assumed to start from).
      width = bestDrafts(cost, (seq.draftsKept + 1) / (seq.draftsKept + seq.draftsRejected + 2), seq.shape!.drafts!).drafts;
    } else {
      width = keep - 1 === drafts.length ? Math.min(seq.shape!.drafts!, seq.draftWidth + 1) : keep === 1 ? seq.draftWidth - 1 : seq.draftWidth;
    }
    if (keep > 1) seq.probeAfter = PROBE_AFTER;
    seq.draftWidth = width;
    if (width === 0) {
      seq.plainLeft = seq.probeAfter;
      seq.probeAfter = Math.min(PROBE_MOST, 2 * seq.probeAfter);
    }
    report.decodeTokens += picked.length;
    this.served.set(seq.owner, (this.served.get(seq.owner) ?? 0) + ids.length);
    for (let i = 0; i < picked.length; i++) if (!this.emit(seq, picked[i]!, scores[i])) return;
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
      ...(seq.figures !== null ? { shape: { ...seq.figures } } : {}),
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
    this.dropDrafts(seq);
    seq.tree = null;
    seq.headsInput = null;
    seq.table?.release();
    seq.table = null;
    seq.aux?.release();
    seq.aux = null;
    this.running = this.running.filter((s) => s !== seq);
    this.waiting = this.waiting.filter((s) => s !== seq);
    if (![...this.running, ...this.waiting].some((s) => s.owner === seq.owner)) this.served.delete(seq.owner);
  }
}

/**
 * Medusa's typical acceptance at a tree row: the child (candidate) with the highest
 * probability among those with p > min(epsilon, delta·exp(−H(p))), p the base model's
 * distribution at the sequence's temperature; undefined when no child passes, so the
 * sequence's sampler picks. Not distribution-exact: it trades exactness for acceptance.
 */
function typicalPick(tree: TreeInput, row: number, logits: Float32Array, temperature: number, spec: SpeculateShape): number | undefined {
  const children: number[] = [];
  for (let j = row + 1; j < tree.ids.length; j++) if (tree.parent[j] === row) children.push(tree.ids[j]!);
  if (children.length === 0) return undefined;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let z = 0;
  let s = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = (logits[i]! - max) / temperature;
    if (x === -Infinity) continue;
    const e = Math.exp(x);
    z += e;
    s += e * x;
  }
  const h = Math.log(z) - s / z;
  const threshold = Math.min(spec.epsilon ?? 0.09, (spec.delta ?? 0.3) * Math.exp(-h));
  let best: number | undefined;
  let bestP = threshold;
  for (const token of children) {
    const p = Math.exp((logits[token]! - max) / temperature) / z;
    if (p > bestP) {
      best = token;
      bestP = p;
    }
  }
  return best;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** The forward's prune steps for a chunk of n tokens: keepTop per layer, or explicit sets from `choose`. */
export function pruneSteps(prune: NonNullable<SequenceShape['prune']>, n: number): PruneStep[] {
  const counts = prune.keep.map((share) => Math.max(1, Math.ceil(share * n - 1e-9)));
  if (prune.choose === undefined) return prune.layers.map((l, i) => ({ fromLayer: l, keepTop: counts[i]! }));
  let live: number[] = Array.from({ length: n }, (_, i) => i);
  return prune.layers.map((l, i) => {
    live = prune.choose!(live, Math.min(live.length, counts[i]!));
    return { fromLayer: l, keep: live };
  });
}
