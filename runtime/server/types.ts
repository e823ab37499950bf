/**
 * What the control plane needs from the dataflow core, as an injectable interface: the
 * server calls these and nothing else, so tests can hand it a scripted double and the
 * real one comes from core/index.ts.
 *
 * @example
 * const dataflow: Dataflow = coreDataflow;
 * const problems = dataflow.validateGraph(json);
 */
import type { Observable } from 'rxjs';
import type { GraphProblem } from '../../core/errors.js';
import type { RunEvent } from '../../core/events.js';
import type { Engine } from '../../core/engine.js';

export interface RunGraphOptions {
  engine: Engine;
  /** The engines of the graph's remote providers, by name (runtime/providers). */
  engineFor?: (provider: string) => Engine;
  /** Absent: the core picks one and reports it in run-start. */
  seed?: number;
  runId?: string;
  /** Aborting ends the run with its own run-end {status: 'cancelled'}. */
  signal?: AbortSignal;
  /** Resuming an interrupted run: core/run.ts RunOptions.resume. */
  resume?: { from: string; outputs: Record<string, unknown> };
}

export interface Dataflow {
  /** With the engine: also the stages its model cannot run. */
  validateGraph(json: unknown, engine?: Engine): GraphProblem[];
  /** Throws GraphValidationError (problems with JSON pointers) when the graph is invalid. */
  parseGraph(json: unknown, source?: string): unknown;
  runGraph(spec: unknown, input: Record<string, unknown>, options: RunGraphOptions): Observable<RunEvent>;
  /** Throws BadRequestError when the input lacks a required value or has one of the wrong type. */
  checkInput?(spec: unknown, input: Record<string, unknown>): void;
  /** The graph JSON Schema, when the core exports one (the playground uses it for hints). */
  graphJsonSchema?: unknown;
}

/** An example graph shipped in graphs/, as listed by GET /v1/graphs. */
export interface ExampleGraph {
  name: string;
  file: string;
  description?: string;
  graph: unknown;
}
