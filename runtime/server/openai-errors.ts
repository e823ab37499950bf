/**
 * Errors of the OpenAI-compatible routes in OpenAI's own shape,
 * `{ error: { message, type, param, code } }`, so that OpenAI clients (the `openai`
 * package, LangChain, the AI SDK) surface them properly. Status and message come from the
 * server's one mapping (errors.ts); `param` is the request field a BadRequestError or
 * GrammarError names.
 *
 * @example
 * app.onError((err, c) => openAiErrorResponse(c, err));
 */
import type { Context } from 'hono';
import { BadRequestError, ContextLengthError, GrammarError, NotAvailableError } from '../../core/errors.js';
import { mapError } from './errors.js';

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const typeOfStatus = (status: number): string =>
  status === 401 ? 'authentication_error' : status === 429 ? 'rate_limit_error' : status === 404 ? 'not_found_error' : status >= 500 ? 'server_error' : 'invalid_request_error';

/**
 * A request field in OpenAI's spelling: the JSON pointers of schema checks
 * (`/messages/0/role`) become `messages[0].role`; other field names pass unchanged.
 */
export function openAiParam(field: string): string | null {
  if (!field.startsWith('/')) return field;
  if (field === '/') return null;
  const parts = field.slice(1).split('/').map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
  return parts.reduce((out, p) => (/^(0|[1-9][0-9]*)$/.test(p) ? `${out}[${p}]` : out ? `${out}.${p}` : p), '');
}

/** The request fields that errors raised deeper down stand for, in the route's own spelling. */
export interface ErrorParams {
  /** Where a GrammarError's schema came from (tools or response_format). */
  grammar?: string;
  /** The prompt (messages for chat) of a ContextLengthError about the prompt. */
  prompt?: string;
  /** max_tokens or max_completion_tokens, as the client sent it. */
  maxTokens?: string;
}

function paramOf(err: unknown, params: ErrorParams): string | null {
  if (err instanceof GrammarError) return params.grammar ?? null;
  if (err instanceof ContextLengthError) return (err.field === 'sampling.maxTokens' ? params.maxTokens : params.prompt) ?? openAiParam(err.field);
  if (err instanceof BadRequestError) return openAiParam(err.field);
  if (err instanceof NotAvailableError) return err.feature;
  return null;
}

export function openAiError(err: unknown, params: ErrorParams = {}): { status: number; body: OpenAiErrorBody; headers?: Record<string, string> } {
  const mapped = mapError(err);
  const param = paramOf(err, params);
  return {
    status: mapped.status,
    headers: mapped.headers,
    body: { error: { message: mapped.body.error.message, type: typeOfStatus(mapped.status), param, code: mapped.body.error.code } },
  };
}

export function openAiErrorResponse(c: Context, err: unknown, params: ErrorParams = {}): Response {
  const e = openAiError(err, params);
  return c.json(e.body, e.status as 400, e.headers);
}
