/**
 * The runtime's small public interface: the only way operators, graphs and the HTTP
 * layer reach the model. Work is submitted as a request and comes back as a cold
 * Observable of events; unsubscribing cancels it and frees its KV.
 *
 * @example
 * engine.generate({ prompt: 'Hello', sampling: { maxTokens: 8 } }).subscribe((e) => {
 *   if (e.type === 'token') process.stdout.write(e.text);
 * });
 */
import type { Observable } from 'rxjs';
import type { OutputConstraint } from '../../core/output.js';
import type { SamplingParams } from '../../core/sampling.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

/** Pipeline stages applied by the runtime to one generation (validated by core's schema). */
export interface StageOptions {
  /** Unified Layer Skipping: decode on about numLayers/targetSpeedup layers, chosen evenly. */
  skipLayers?: { targetSpeedup: number; mode?: 'lossy' | 'self-speculative'; drafts?: number };
  /** LazyLLM: progressive pruning of prompt tokens during prefill. */
  prunedPrefill?: { keepRatio: number | number[]; layers?: number[] };
  /** Medusa / Cerberus heads from a heads file beside the model. */
  speculate?: { heads?: string; mode?: 'medusa' | 'cerberus'; entropyGate?: number };
  /** LLMLingua-style prompt compression before prefill: keep about `rate` of the prompt tokens. */
  compress?: { rate: number; keep?: string[] };
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
  stages?: StageOptions;
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
   * The stages this engine runs. A request naming any other stage is refused with
   * NotAvailableError by the dataflow core before it reaches the engine; absent means none.
   */
  readonly supportedStages?: readonly (keyof StageOptions)[];
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
