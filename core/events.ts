/**
 * The events of a run: a discriminated union streamed as an Observable<RunEvent>,
 * saved as JSON lines, replayed, and mapped 1:1 to Server-Sent Events by the HTTP layer.
 *
 * @example
 * run$.subscribe((e) => { if (e.type === 'text-delta') process.stdout.write(e.text); });
 */

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

interface EventBase {
  runId: string;
  /** Milliseconds since the run started. */
  t: number;
  /** Monotonic sequence number within the run (SSE event id). */
  seq: number;
}

export type RunEvent =
  | (EventBase & { type: 'run-start'; graph: string; input: Record<string, unknown>; seed: number })
  | (EventBase & { type: 'node-start'; node: string; branch?: string })
  | (EventBase & { type: 'text-delta'; node: string; branch?: string; text: string; tokenIds: number[] })
  | (EventBase & { type: 'node-end'; node: string; branch?: string; output: unknown; metrics: StageMetrics })
  | (EventBase & { type: 'branch-error'; node: string; branch: string; error: { name: string; message: string } })
  | (EventBase & {
      type: 'run-end';
      status: 'ok' | 'error' | 'cancelled';
      output?: Record<string, unknown>;
      /** `node`: the node whose operator failed, when the failure is a node's. */
      error?: { name: string; message: string; code?: string; node?: string };
      usage: Record<string, NodeUsage>;
    });

export type RunEventType = RunEvent['type'];
