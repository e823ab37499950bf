/**
 * Typed errors shared by every layer of Skein. Each error carries the fields that
 * locate the problem (a file, a tensor, a JSON pointer, a field) and builds its
 * message from them, so callers can both print it and act on it. The HTTP layer maps
 * `code` to a status in one place (runtime/server).
 *
 * @example
 * throw new CheckpointError({ file: 'model.safetensors', tensor: 'lm_head.weight', reason: 'missing' });
 */

export type SkeinErrorCode =
  | 'graph_invalid'
  | 'checkpoint_invalid'
  | 'kv_exhausted'
  | 'not_available'
  | 'bad_request'
  | 'not_found'
  | 'cancelled'
  | 'tool_failed'
  /** The model answered, but not in a form the graph can use: the model's fault, not the server's. */
  | 'model_output'
  /** The model runtime is down (its worker exited) and being restarted: try again shortly. */
  | 'engine_unavailable'
  /** A remote provider failed the call (HTTP error, lost connection, timeout, an answer that is not the API's). */
  | 'provider_failed'
  /** The prompt, or the prompt plus the tokens a request insists on, is longer than the model's context (OpenAI's code). */
  | 'context_length_exceeded'
  | 'internal';

export abstract class SkeinError extends Error {
  abstract readonly code: SkeinErrorCode;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message };
  }
}

/** One problem found in a graph, located by a JSON pointer into the graph document. */
export interface GraphProblem {
  pointer: string;
  message: string;
}

export class GraphValidationError extends SkeinError {
  readonly code = 'graph_invalid';
  constructor(readonly problems: GraphProblem[], readonly source?: string) {
    super(
      `Invalid graph${source ? ` ${source}` : ''}: ${problems.length} problem(s)\n` +
        problems.map((p) => `  ${p.pointer || '/'}: ${p.message}`).join('\n'),
    );
  }
  override toJSON() {
    return { ...super.toJSON(), problems: this.problems };
  }
}

export class CheckpointError extends SkeinError {
  readonly code = 'checkpoint_invalid';
  readonly file: string;
  readonly tensor?: string;
  readonly reason: string;
  constructor(args: { file: string; tensor?: string; reason: string }) {
    super(`Bad checkpoint: ${args.file}${args.tensor ? ` (tensor ${args.tensor})` : ''}: ${args.reason}`);
    this.file = args.file;
    this.tensor = args.tensor;
    this.reason = args.reason;
  }
  override toJSON() {
    return { ...super.toJSON(), file: this.file, tensor: this.tensor, reason: this.reason };
  }
}

export class KvExhaustedError extends SkeinError {
  readonly code = 'kv_exhausted';
  constructor(readonly requested: number, readonly free: number, readonly total: number) {
    super(`KV memory exhausted: the request needs ${requested} blocks, ${free} of ${total} are free and it can never fit`);
  }
}

/** A feature that is validated and declared but not implemented on this runtime (yet). */
export class NotAvailableError extends SkeinError {
  readonly code = 'not_available';
  constructor(readonly feature: string, readonly detail?: string) {
    super(`Not available: ${feature}${detail ? ` (${detail})` : ''}`);
  }
}

/**
 * A stage the loaded model cannot run: what is missing and how to get it. Raised when a
 * graph is validated against a model and when a node asks the engine for the stage.
 */
export class StageUnavailableError extends SkeinError {
  readonly code = 'not_available';
  constructor(
    readonly stage: string,
    readonly model: string,
    readonly missing: string,
    readonly remedy: string,
  ) {
    super(`Stage ${stage} is not available for model ${model}: ${missing}; ${remedy}`);
  }
  override toJSON() {
    return { ...super.toJSON(), stage: this.stage, model: this.model, missing: this.missing, remedy: this.remedy };
  }
}

export class BadRequestError extends SkeinError {
  readonly code = 'bad_request';
  constructor(readonly field: string, detail: string) {
    super(`Bad request: ${field}: ${detail}`);
  }
}

/**
 * A prompt longer than the model's context, or one that leaves less room than the
 * max_tokens a request insists on (OpenAI's rule: refused, never silently shortened).
 * `field` names what to change: the prompt, or `sampling.maxTokens`.
 */
export class ContextLengthError extends SkeinError {
  readonly code = 'context_length_exceeded';
  constructor(readonly field: string, readonly context: number, detail: string) {
    super(`Bad request: ${field}: ${detail}`);
  }
}

/**
 * An output constraint (JSON Schema, regex, choices) that cannot be compiled to a grammar,
 * located by a JSON pointer into the schema ('' for the whole constraint).
 */
export class GrammarError extends SkeinError {
  readonly code = 'bad_request';
  constructor(readonly pointer: string, readonly reason: string) {
    super(`Bad output constraint${pointer ? ` at ${pointer}` : ''}: ${reason}`);
  }
}

export class NotFoundError extends SkeinError {
  readonly code = 'not_found';
  constructor(readonly kind: string, readonly id: string) {
    super(`No such ${kind}: ${id}`);
  }
}

export class CancelledError extends SkeinError {
  readonly code = 'cancelled';
  constructor(what = 'run') {
    super(`Cancelled: ${what}`);
  }
}

export class ToolError extends SkeinError {
  readonly code = 'tool_failed';
  constructor(readonly tool: string, override readonly cause: unknown) {
    super(`Tool ${tool} failed: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

/** A model answer that a node cannot use (no outline points, no route matched). */
export class ModelOutputError extends SkeinError {
  readonly code = 'model_output';
  constructor(readonly node: string, readonly reason: string) {
    super(`Unusable model output in node ${node}: ${reason}`);
  }
}

/** Every branch a join (or an expand) gathered failed or was skipped, so it has no value. */
export class BranchesFailedError extends SkeinError {
  readonly code = 'model_output';
  constructor(readonly node: string, readonly failures: { branch: string; message: string }[]) {
    super(
      `Every branch of ${node} failed` +
        (failures.length ? `: ${failures.map((f) => `${f.branch}: ${f.message}`).join('; ')}` : ' or was skipped'),
    );
  }
}

/** The model's worker exited: work in flight on it is lost, new work waits for its restart. */
export class EngineUnavailableError extends SkeinError {
  readonly code = 'engine_unavailable';
  constructor(readonly reason: string) {
    super(`Engine unavailable: ${reason}; it is being restarted, retry shortly`);
  }
}

/**
 * A call to a remote provider (runtime/providers/) that failed: which provider, for which
 * node, the HTTP status when the server answered one, and why. `retryable` says whether
 * the client tried again (429, 5xx, a lost connection) before giving up.
 */
export class ProviderError extends SkeinError {
  readonly code = 'provider_failed';
  readonly provider: string;
  readonly node?: string;
  readonly status?: number;
  readonly reason: string;
  constructor(args: { provider: string; node?: string; status?: number; reason: string }) {
    super(`Provider ${args.provider}${args.node ? ` (node ${args.node})` : ''} failed${args.status !== undefined ? ` with HTTP ${args.status}` : ''}: ${args.reason}`);
    this.provider = args.provider;
    this.node = args.node;
    this.status = args.status;
    this.reason = args.reason;
  }
  override toJSON() {
    return { ...super.toJSON(), provider: this.provider, node: this.node, status: this.status, reason: this.reason };
  }
}

/** A provider whose API key variable (its `apiKeyEnv`) is not set: keys come only from the environment. */
export class ProviderKeyMissingError extends SkeinError {
  readonly code = 'not_available';
  constructor(readonly provider: string, readonly variable: string) {
    super(`Provider ${provider} needs its API key in the environment variable ${variable}, which is not set`);
  }
  override toJSON() {
    return { ...super.toJSON(), provider: this.provider, variable: this.variable };
  }
}
