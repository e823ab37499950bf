/**
 * Shape limits on request bodies, as middleware: the body's JSON text is scanned for
 * nesting depth and key count before any route parses, stores or serialises it, so a
 * 10 KB body nested 5,000 levels deep is one clear 400 instead of a run that breaks
 * `GET /v1/runs` for everyone. Runs after the size limit (413) and the Content-Type check
 * (415); hono keeps the text it read, so the route reads the same body again for free.
 *
 * @example
 * app.use('/v1/*', jsonShapeLimit({ maxDepth: 64, maxKeys: 20_000 }));
 */
import type { MiddlewareHandler } from 'hono';
import { scanJsonText, type ShapeLimits } from '../../core/json-shape.js';

const WITH_BODY = new Set(['POST', 'PUT', 'PATCH']);

export function jsonShapeLimit(limits: ShapeLimits): MiddlewareHandler {
  return async (c, next) => {
    if (WITH_BODY.has(c.req.method)) scanJsonText(await c.req.text(), limits, 'body');
    await next();
  };
}
