/**
 * The one place where errors become HTTP responses. Typed Skein errors map to a status by
 * their `code`; hono's HTTPException (401 from bearer auth, 413 from the body limit) keeps
 * its status; anything else is a 500 whose detail stays in the server log. Every error
 * body has the same shape: `{ error: { message, code, problems? } }`.
 *
 * @example
 * app.onError(errorHandler((err) => console.error(err)));
 */
import type { Context, ErrorHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { SkeinError, type GraphProblem, type SkeinErrorCode } from '../../core/errors.js';

/** Past the concurrency limit. Local to the server: only HTTP has a notion of "try later". */
export class TooManyRunsError extends Error {
  readonly code = 'too_many_runs';
  constructor(readonly limit: number) {
    super(`Too many concurrent runs: the limit is ${limit}; retry when one finishes`);
    this.name = 'TooManyRunsError';
  }
}

/** DELETE of a run that has already ended: there is nothing left to cancel. */
export class RunFinishedError extends Error {
  readonly code = 'run_finished';
  constructor(readonly runId: string, readonly state: string) {
    super(`Run ${runId} has already finished (${state}); there is nothing to cancel`);
    this.name = 'RunFinishedError';
  }
}

/** POST /v1/runs/:id/resume of a run that was not interrupted: it finished, failed, was cancelled or still runs. */
export class RunNotResumableError extends Error {
  readonly code = 'run_not_resumable';
  constructor(readonly runId: string, readonly state: string) {
    super(`Run ${runId} is ${state}; only a run the server stopped in the middle (interrupted) can be resumed`);
    this.name = 'RunNotResumableError';
  }
}

const statusOfCode: Record<SkeinErrorCode, ContentfulStatusCode> = {
  graph_invalid: 422,
  bad_request: 400,
  not_found: 404,
  not_available: 501,
  // The request can never fit in KV memory, whatever the load: the client must shrink it.
  kv_exhausted: 422,
  cancelled: 409,
  tool_failed: 502,
  // A model answer the graph cannot use (or every branch failing): unprocessable, not a server fault.
  model_output: 422,
  checkpoint_invalid: 500,
  // The worker is restarting: the client may retry (Retry-After), the server is not broken.
  engine_unavailable: 503,
  // The remote model server failed (after retries): the gateway's upstream, not this server.
  provider_failed: 502,
  context_length_exceeded: 400,
  internal: 500,
};

const codeOfStatus: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'too_many_runs',
};

export interface ErrorBody {
  error: { message: string; code: string; problems?: GraphProblem[] };
}

export interface MappedError {
  status: ContentfulStatusCode;
  body: ErrorBody;
  headers?: Record<string, string>;
}

export function mapError(err: unknown): MappedError {
  if (err instanceof SkeinError) {
    const problems = (err as { problems?: GraphProblem[] }).problems;
    return {
      status: statusOfCode[err.code] ?? 500,
      body: { error: { message: err.message, code: err.code, ...(problems ? { problems } : {}) } },
      ...(err.code === 'engine_unavailable' ? { headers: { 'Retry-After': '1' } } : {}),
    };
  }
  if (err instanceof TooManyRunsError) {
    return { status: 429, body: { error: { message: err.message, code: err.code } }, headers: { 'Retry-After': '1' } };
  }
  if (err instanceof RunNotResumableError) {
    return { status: 409, body: { error: { message: err.message, code: err.code } } };
  }
  if (err instanceof RunFinishedError) {
    return { status: 409, body: { error: { message: err.message, code: err.code } } };
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    const headers: Record<string, string> = {};
    // Bearer auth puts its WWW-Authenticate challenge on the exception's response.
    const challenge = err.res?.headers.get('WWW-Authenticate');
    if (challenge) headers['WWW-Authenticate'] = challenge;
    const code = codeOfStatus[status] ?? (status >= 500 ? 'internal' : 'bad_request');
    return { status, body: { error: { message: err.message || code, code } }, headers };
  }
  return { status: 500, body: { error: { message: 'Internal server error', code: 'internal' } } };
}

export function errorResponse(c: Context, err: unknown): Response {
  const mapped = mapError(err);
  return c.json(mapped.body, mapped.status, mapped.headers);
}

/** The app's onError: maps, and logs only what is the server's fault. */
export function errorHandler(log: (err: unknown) => void = () => {}): ErrorHandler {
  return (err, c) => {
    const mapped = mapError(err);
    if (mapped.status >= 500) log(err);
    return c.json(mapped.body, mapped.status, mapped.headers);
  };
}
