/**
 * The Engine contract: the only way operators, graphs and the HTTP layer reach the model.
 * It sits in core/ so that every layer shares it while none imports the runtime that
 * implements it (runtime/engine). Work is submitted as a request and comes back as a cold
 * Observable of events; unsubscribing cancels it and frees its KV. A request's sampling
 * and stage fields are the types read from core's schemas (sampling.ts, stages.ts).
 *
 * @example
 * engine.generate({ prompt: 'Hello', sampling: { maxTokens: 8 } }).subscribe((e) => {
 *   if (e.type === 'token') process.stdout.write(e.text);
 * });
 */
import type { Observable } from 'rxjs';
import type { OutputConstraint } from './output.js';
import type { SamplingParams } from './sampling.js';
import type { StageUnavailableError } from './errors.js';
import type { StageEventName, StageFigures } from './events.js';
import type { StageName, Stages } from './stages.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

export interface GenerateRequest {
  /** Raw text prompt (tokenised with the model's tokenizer, no special tokens added)... */
  prompt?: string;
  /** ...or chat messages rendered with the model's chat template... */
  messages?: ChatMessage[];
  /** ...or token ids. Exactly one of the three. */
  ids?: number[];
  /** When messages are given: text the assistant turn starts with (SoT's pre-filled point). */
  assistantPrefix?: string;
  sampling?: Partial<SamplingParams>;
  stages?: Stages;
  /** Structured output: the generated text is held to a JSON Schema, a regex or a choice of strings. */
  output?: OutputConstraint;
  /** Groups work for fairness and accounting (the run id). */
  owner?: string;
  /** The graph node making the call, named in a remote provider's errors. */
  node?: string;
  /**
   * Opt-in log-probabilities: each token event then carries the token's log-probability
   * and those of this many most likely alternatives (0–20; 0 for the token's own only).
   * Absent: nothing is scored, so requests that do not ask pay nothing.
   */
  logprobs?: number;
  /**
   * OpenAI's length rule: a prompt whose tokens plus `sampling.maxTokens` exceed the
   * model's context is refused (ContextLengthError) before anything runs. Without it the
   * generation runs until the context is full (finish reason 'length').
   */
  maxTokensMustFit?: boolean;
}

/**
 * A token as log-probabilities show it: its text (a half character shows as U+FFFD), its
 * exact bytes, and its natural-log probability in the distribution it was drawn from —
 * after the output constraint's mask, logit_bias and penalties, before temperature,
 * top-k and top-p.
 */
export interface TokenLogprob {
  id: number;
  token: string;
  bytes: number[];
  logprob: number;
}

/** Most alternatives a request may ask for (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

/**
 * Teacher-forced scoring: the model's logits at every position of `ids` (position i scores
 * the token after ids[0..i]), computed in one forward on the engine's model, nothing
 * sampled and no KV kept. `skein logits` and the logit-level oracles use it.
 */
export interface ScoreRequest {
  ids: number[];
  owner?: string;
}

export interface ScoreResult {
  /** One full-vocabulary row per position of the request's ids. */
  logits: Float32Array[];
}

/**
 * Embeddings from the served model (Engine.embed): one vector per input, the mean of the
 * final hidden states (after the final norm) of its tokens, L2-normalised. A chat model
 * is not trained as an embedding model; its vectors are what it gives.
 */
export interface EmbedRequest {
  /** Each a text (tokenized as a prompt is) or token ids; 1 to MAX_EMBED_INPUTS of them. */
  input: Array<string | number[]>;
  /** The vectors' size when the caller states one: must equal the model's hidden size (nothing is truncated or projected). */
  dimensions?: number;
  owner?: string;
}

export interface EmbedResult {
  /** One unit-length vector (hidden size) per input, in order. */
  vectors: Float32Array[];
  /** Tokens of each input. */
  tokens: number[];
}

/** Most inputs in one embedding request (OpenAI takes 2,048; the answer's JSON grows with each). */
export const MAX_EMBED_INPUTS = 512;
/** Most tokens over all inputs of one embedding request (bounds the work one request asks). */
export const MAX_EMBED_TOKENS = 16_384;

export type FinishReason = 'eos' | 'stop' | 'length' | 'cancelled';

export interface GenerationUsage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose KV came from the prefix cache instead of being computed. */
  cachedPromptTokens: number;
}

export interface GenerationMetrics {
  ttftMs: number;
  totalMs: number;
  decodeTokensPerSec: number;
  /** Stage figures, present when the stage ran. */
  prunedTokens?: number;
  layersRun?: number;
  acceptedDraftTokens?: number;
  kvBlocksShared?: number;
  /** Prompt tokens before and after the compress stage (usage.promptTokens is the latter). */
  compressedFrom?: number;
  compressedTo?: number;
  /** Per stage that ran: what it decided and what it cost. */
  stages?: StageReport;
}

/** What each stage of one generation decided and cost (runtime/stages/shape.ts fills the engine-run ones). */
export interface StageReport {
  compress?: { from: number; to: number };
  skipLayers?: {
    mode: 'lossy' | 'self-speculative';
    targetSpeedup: number;
    /** The layers decode (or drafting) ran. */
    layers: number[];
    /** Whether they ran with the model's skip adapter for the target (`skein train skip`). */
    adapted?: boolean;
    /** Forwards at that depth (decode steps, or drafts). */
    shallowForwards: number;
    draftsProposed?: number;
    draftsAccepted?: number;
    verifications?: number;
    /** Wall time of the decode forwards the sequence took part in. */
    decodeMs: number;
  };
  speculate?: {
    kind: 'medusa' | 'cerberus';
    acceptance: 'exact' | 'typical';
    /** Nodes of the candidate tree (before the batch trims it), and the gate threshold (null: no gate). */
    treeNodes: number;
    gate: number | null;
    /** Tree verifications, tree nodes verified, drafts accepted; steps the gate sent to plain decoding. */
    verifications: number;
    draftsProposed: number;
    draftsAccepted: number;
    gatedSteps: number;
    /** Steps decoded plainly because no draft could pay for its row at the batch's size (the batch's cost model). */
    unaffordableSteps: number;
    /** Tokens per verification: 1 + accepted drafts, averaged. */
    meanAcceptedLength: number;
    /** Drafts accepted at each depth (head k's token), over verifications. */
    acceptancePerHead: number[];
    decodeMs: number;
  };
  prunedPrefill?: {
    layers: number[];
    /** Cumulative share of the prompt kept from each layer on. */
    keep: number[];
    /** Prompt tokens pruned at each pruning layer (summed over prefill steps: one, or more after a preemption). */
    prunedAtLayer: Record<number, number>;
    /** Aux Cache tokens revived per pruning layer and step at most (0: static pruning). */
    revive: number;
    /** Tokens revived at each pruning layer, over the decode steps (and a recompute's prefill). */
    revivedAtLayer: Record<number, number>;
    /** Wall time of the prefill forwards the sequence took part in. */
    prefillMs: number;
  };
}

/** A token event's id when the engine streams text without ids (a remote provider's API). */
export const UNKNOWN_TOKEN_ID = -1;

export type GenerateEvent =
  /**
   * `id` is the token's id in the model's vocabulary, or UNKNOWN_TOKEN_ID; `logprobs` only
   * when the request asked (not on an end-of-sequence token, which adds no text).
   */
  | { type: 'token'; id: number; text: string; logprobs?: TokenLogprob & { top: TokenLogprob[] } }
  /** A stage ran for this request (before its first token for prompt stages). */
  | { type: 'stage'; stage: StageEventName; decided: Record<string, string | number | boolean>; figures: StageFigures }
  | {
      type: 'done';
      reason: FinishReason;
      ids: number[];
      text: string;
      usage: GenerationUsage;
      metrics: GenerationMetrics;
    };

/** A prompt text after the compress stage alone (Engine.compressText). */
export interface CompressedText {
  text: string;
  /** Tokens before and after, in the compressing model's tokenizer. */
  from: number;
  to: number;
  /** What the stage decided (its options as resolved), as its stage event says it. */
  decided: Record<string, string | number | boolean>;
  wallMs: number;
}

export interface EngineStats {
  backend: string;
  model: string;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  kvBlocksShared: number;
  /** Blocks no sequence holds, kept for prefix reuse (evicted when space is needed). */
  kvBlocksCached: number;
  queueDepth: number;
  runningSequences: number;
  /** tf tensors alive in the model's worker (leak checks); absent on a main-thread engine. */
  tensors?: number;
  /** Of those, the ones KV blocks hold (the prefix cache's included) and revived LazyLLM rows. */
  kvTensors: number;
  /** Tokens parked in LazyLLM Aux Caches (prunedPrefill with revival); their memory is in kvBlocksUsed. */
  auxCacheEntries?: number;
}

export interface EngineHealth {
  status: 'ok' | 'degraded';
  /** Why it is degraded: the last worker's exit. */
  detail?: string;
  /** Workers restarted since the engine started. */
  restarts: number;
}

export interface Engine {
  /** Model name or folder it serves. */
  readonly modelName: string;
  /**
   * Whether this engine's model can run a stage: undefined when it can, otherwise the
   * typed error (what is missing, how to get it) that a request naming it fails with.
   * Validation asks it before a run (core's checkGraphStages).
   */
  checkStage(name: StageName): StageUnavailableError | undefined;
  /**
   * Whether the engine enforces `GenerateRequest.output` (constrained decoding); absent
   * means no, and a request carrying `output` is refused with NotAvailableError.
   */
  readonly supportsOutput?: boolean;
  generate(request: GenerateRequest): Observable<GenerateEvent>;
  /**
   * Runs only the compress stage on a text and gives back the kept text, for a model
   * elsewhere to read: a node on a remote provider compresses here, before its request
   * leaves. Absent where the engine cannot compress. Unsubscribing cancels it.
   */
  compressText?(text: string, options: NonNullable<Stages['compress']>, owner?: string): Observable<CompressedText>;
  /**
   * Scores ids without generating (see ScoreRequest): one result, then complete;
   * unsubscribing before it ran drops it. Absent on engines that cannot (scripted fakes).
   */
  score?(request: ScoreRequest): Observable<ScoreResult>;
  /**
   * Embeds inputs with the model (see EmbedRequest): one result, then complete;
   * unsubscribing drops the work. Absent on engines that cannot (remote providers, fakes).
   */
  embed?(request: EmbedRequest): Observable<EmbedResult>;
  tokenize(text: string): number[];
  detokenize(ids: number[]): string;
  /** Render chat messages with the model's chat template (generation prompt appended). */
  renderChat(messages: ChatMessage[], assistantPrefix?: string): string;
  stats(): EngineStats;
  /** Degraded while the model's worker is down and being restarted; absent means always ok. */
  health?(): EngineHealth;
  /** Frees the model and every cached block. */
  close(): Promise<void>;
}
