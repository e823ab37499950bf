/**
 * The events of Skein's streams. Every operator's Observable carries `OperatorEvent`s —
 * node start, text deltas (with node and branch ids), stage events (what a stage decided
 * and what it cost), node end (with the node's output and metrics), branch errors — so a
 * TypeScript pipeline built with `pipe()` streams the same events a graph run does. A
 * graph run is an Observable<RunEvent>: the operators' events stamped with the run id,
 * time and sequence number, between run-start and run-end; it is saved as JSON lines,
 * replayed, and mapped 1:1 to Server-Sent Events by the HTTP layer.
 *
 * @example
 * run$.subscribe((e) => { if (e.type === 'text-delta') process.stdout.write(e.text); });
 */
import type { StageName } from './stages.js';

export interface NodeUsage {
  tokensIn: number;
  tokensOut: number;
  wallMs: number;
}

export interface StageMetrics {
  tokensIn?: number;
  tokensOut?: number;
  ttftMs?: number;
  tokensPerSec?: number;
  prunedTokens?: number;
  layersRun?: number;
  acceptedDraftTokens?: number;
  kvBlocksShared?: number;
  compressedFrom?: number;
  compressedTo?: number;
  [extra: string]: number | undefined;
}

/**
 * What one stage did for one model call, reported by the engine that ran it: the stage's
 * decision (its options as resolved, e.g. the scorer layers compress used) and its cost.
 */
export interface StageFigures {
  /** Tokens the stage took in and handed on (compress: prompt tokens before and after). */
  tokensIn?: number;
  tokensOut?: number;
  /** Prompt tokens pruned, summed over layers (prunedPrefill). */
  prunedTokens?: number;
  layersRun?: number;
  draftsProposed?: number;
  draftsAccepted?: number;
  kvBlocksShared?: number;
  /** Wall time the stage itself took. */
  wallMs: number;
}

/** The stages a model call can report: the graph's `stages` and KV sharing over a common prefix. */
export type StageEventName = StageName | 'kvShare';

export type ErrorInfo = { name: string; message: string; code?: string };

/** An operator's events: what a pipeline streams before a graph run stamps them. */
export type OperatorEvent =
  | { type: 'node-start'; node: string; branch?: string }
  | { type: 'text-delta'; node: string; branch?: string; text: string; tokenIds: number[] }
  | {
      type: 'stage';
      node: string;
      branch?: string;
      stage: StageEventName;
      decided: Record<string, string | number | boolean>;
      figures: StageFigures;
    }
  | {
      type: 'node-end';
      node: string;
      branch?: string;
      output: unknown;
      metrics: StageMetrics;
      /** Taken from the interrupted run this one resumes (the node did not run again). */
      reused?: true;
    }
  | { type: 'branch-error'; node: string; branch: string; error: ErrorInfo };

export type OperatorEventType = OperatorEvent['type'];

const EVENT = Symbol.for('skein.event');

/**
 * Marks an object as an operator event. Operators pass events through and process every
 * other value, so the mark (non-enumerable: JSON and equality ignore it) keeps a user's
 * value that happens to have a `type: 'node-end'` field from being taken for one.
 */
export function operatorEvent<E extends OperatorEvent>(event: E): E {
  // Top-level work has no branch: leave the key out, as JSON would.
  if (event.branch === undefined) delete event.branch;
  Object.defineProperty(event, EVENT, { value: true, enumerable: false });
  return event;
}

export function isOperatorEvent(value: unknown): value is OperatorEvent {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[EVENT] === true;
}

interface EventBase {
  runId: string;
  /** Milliseconds since the run started. */
  t: number;
  /** Monotonic sequence number within the run (SSE event id). */
  seq: number;
}

export type RunEvent =
  | (EventBase & {
      type: 'run-start';
      graph: string;
      input: Record<string, unknown>;
      seed: number;
      /** The interrupted run this one resumes (same graph, input and seed). */
      resumedFrom?: string;
    })
  | (EventBase & OperatorEvent)
  | (EventBase & {
      type: 'run-end';
      status: 'ok' | 'error' | 'cancelled';
      output?: Record<string, unknown>;
      /** `node`: the node whose operator failed, when the failure is a node's. */
      error?: { name: string; message: string; code?: string; node?: string };
      usage: Record<string, NodeUsage>;
    });

export type RunEventType = RunEvent['type'];

export const runEventTypes: readonly RunEventType[] = ['run-start', 'node-start', 'text-delta', 'stage', 'node-end', 'branch-error', 'run-end'];
