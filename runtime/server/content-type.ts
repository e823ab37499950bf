/**
 * JSON routes take only `application/json` bodies (415 otherwise). A web page may send a
 * cross-origin `text/plain` or form POST without a CORS preflight; refusing every other
 * media type means such a "simple request" can never start a run or a completion on a
 * local server, token or not.
 *
 * @example
 * app.use('/v1/*', requireJson());
 */
import type { MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';

const WITH_BODY = new Set(['POST', 'PUT', 'PATCH']);

/** The media type without parameters, lower-cased: `Application/JSON; charset=utf-8` → `application/json`. */
export function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0]!.trim().toLowerCase();
}

export function requireJson(): MiddlewareHandler {
  return async (c, next) => {
    if (WITH_BODY.has(c.req.method)) {
      const type = mediaType(c.req.header('Content-Type'));
      if (type !== 'application/json') {
        throw new HTTPException(415, { message: `Content-Type must be application/json, got ${type ? JSON.stringify(type) : 'none'}` });
      }
    }
    await next();
  };
}
