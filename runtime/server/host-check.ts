/**
 * Host and Origin checks against the addresses the server is meant to be reached at.
 * A page on any site can point its own DNS name at 127.0.0.1 (DNS rebinding) and then
 * read a token-less local server as same-origin; its requests still carry the attacker's
 * name in `Host`, so a Host outside the allow-list is refused (403). A cross-origin page's
 * requests carry `Origin`; one that is neither this server's own origin (same host and
 * port as the request's Host) nor a configured CORS origin is refused too, so a browser
 * can only drive the API from the playground itself.
 *
 * @example
 * app.use('*', hostCheck({ allowedHosts: loopbackHosts(), corsOrigins: [] }));
 */
import { networkInterfaces } from 'node:os';
import type { MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';

export interface HostCheckOptions {
  /** Host names and addresses (no port) accepted in Host and Origin; '*' accepts any. */
  allowedHosts: readonly string[];
  /** Origins (scheme://host[:port]) allowed to call from other sites, as CORS allows them. */
  corsOrigins?: readonly string[];
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

/** Bracket-free, lower-cased host: `[::1]` → `::1`, `LocalHost` → `localhost`. */
export function normalizeHost(host: string): string {
  const h = host.trim().toLowerCase();
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

export function isLoopback(host: string): boolean {
  const h = normalizeHost(host);
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

export function isWildcard(host: string): boolean {
  const h = normalizeHost(host);
  return h === '0.0.0.0' || h === '::';
}

/**
 * The hosts a server bound to `bindHost` answers to: the loopback names, the bound
 * address, every local interface address when bound to all of them, and `extra`.
 */
export function defaultAllowedHosts(bindHost: string, extra: readonly string[] = []): string[] {
  const hosts = new Set([...LOOPBACK_NAMES, normalizeHost(bindHost), ...extra.map(normalizeHost)]);
  if (isWildcard(bindHost)) {
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) hosts.add(normalizeHost(a.address));
  }
  return [...hosts];
}

/** The host name of a Host header value (`example.com:8787` → `example.com`, `[::1]:80` → `::1`). */
export function hostName(header: string): string {
  const h = header.trim();
  if (h.startsWith('[')) return normalizeHost(h.slice(0, h.indexOf(']') + 1));
  const colon = h.indexOf(':');
  return normalizeHost(colon >= 0 ? h.slice(0, colon) : h);
}

/** `http://LocalHost:8787` → `localhost:8787`; null for 'null' and malformed origins. */
function originHost(origin: string): string | null {
  try {
    return origin === 'null' ? null : new URL(origin).host.toLowerCase();
  } catch {
    return null;
  }
}

export function hostCheck(options: HostCheckOptions): MiddlewareHandler {
  const any = options.allowedHosts.includes('*');
  const allowed = new Set(options.allowedHosts.map(normalizeHost));
  const cors = new Set(options.corsOrigins ?? []);
  const hostAllowed = (name: string) => any || allowed.has(name);
  return async (c, next) => {
    // @hono/node-server builds the URL from Host; app.request() from its own base.
    const host = c.req.header('Host') ?? new URL(c.req.url).host;
    if (!hostAllowed(hostName(host))) {
      throw new HTTPException(403, { message: `Host ${JSON.stringify(host)} is not one this server answers to (see --allowed-hosts)` });
    }
    const origin = c.req.header('Origin');
    if (origin !== undefined && !cors.has(origin) && originHost(origin) !== host.trim().toLowerCase()) {
      throw new HTTPException(403, { message: `Origin ${JSON.stringify(origin)} may not call this server (see --cors-origin)` });
    }
    await next();
  };
}
