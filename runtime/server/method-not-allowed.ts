/**
 * 405 instead of 404 when the path exists under other methods, with the `Allow` header
 * listing them (RFC 9110 §15.5.6): `PUT /v1/runs` says "use GET or POST", not "no such
 * thing". Hono answers an unmatched method with its not-found handler, so this reads the
 * app's own route table there; middleware (method ALL) does not count as a route.
 *
 * @example
 * app.notFound((c) => methodNotAllowed(app, c) ?? c.json({ error: … }, 404));
 */
import type { Context, Hono } from 'hono';

interface RouteLike {
  method: string;
  path: string;
}

/** `/v1/runs/:id/events` → a RegExp matching one segment per parameter; `*` matches the rest. */
function pathPattern(path: string): RegExp {
  const source = path
    .split('/')
    .map((part) => (part === '*' ? '.*' : part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${source}/?$`);
}

/** Methods that have a route matching `path`, sorted; HEAD comes with GET. */
export function allowedMethods(routes: readonly RouteLike[], path: string): string[] {
  const methods = new Set<string>();
  for (const r of routes) {
    if (r.method === 'ALL' || !pathPattern(r.path).test(path)) continue;
    methods.add(r.method);
    if (r.method === 'GET') methods.add('HEAD');
  }
  return [...methods].sort();
}

/** The 405 response when `c`'s path has routes under other methods; undefined otherwise. */
export function methodNotAllowed(app: Hono, c: Context): Response | undefined {
  const methods = allowedMethods(app.routes, c.req.path);
  if (!methods.length || methods.includes(c.req.method)) return undefined;
  return c.json(
    { error: { message: `Method ${c.req.method} is not allowed on ${c.req.path}; use ${methods.join(', ')}`, code: 'method_not_allowed' } },
    405,
    { Allow: methods.join(', ') },
  );
}
