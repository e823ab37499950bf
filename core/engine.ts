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
}

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
    /** Tokens per verification: 1 + accepted drafts, averaged. */
    meanAcceptedLength: number;
    /** Drafts accepted at each depth (head k's token), over verifications. */
    acceptancePerHead: number[];
    decodeMs: number;
  };
  prunedPrefill?: {
    layers: number[];
    /** Cumulative share of each chunk kept from each layer on. */
    keep: number[];
    /** Prompt tokens pruned at each pruning layer (summed over chunks). */
    prunedAtLayer: Record<number, number>;
    /** Wall time of the prefill forwards the sequence took part in. */
    prefillMs: number;
  };
}

export type GenerateEvent =
  | { type: 'token'; id: number; text: string }
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

export interface EngineStats {
  backend: string;
  model: string;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  kvBlocksShared: number;
  queueDepth: number;
  runningSequences: number;
  /** tf tensors alive in the model's worker (leak checks); absent on a main-thread engine. */
  tensors?: number;
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
