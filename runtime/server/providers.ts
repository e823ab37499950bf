/**
 * Which remote providers a graph sent over HTTP may use. A graph's `providers` block says
 * where the server sends its requests and which environment variable it reads the key
 * from; taken as given from any client, it would let a request make the server call any
 * URL (SSRF) with any of its environment variables as the bearer token. So the server's
 * operator declares the providers (`skein serve --providers FILE`), a graph sent over HTTP
 * may name those in its nodes, and a `providers` block in it is accepted only where each
 * entry is the server's own, verbatim (the same file then runs under `skein run` and the
 * server alike). The CLI, run by the user on their own machine, takes a graph's providers
 * as written.
 *
 * @example
 * const graph = withServerProviders(body.graph, { big: { type: 'openai', baseUrl: 'http://10.0.0.5:8000/v1', model: 'm' } });
 */
import { isDeepStrictEqual } from 'node:util';
import { BadRequestError, type GraphProblem } from '../../core/errors.js';
import { providerSchema, type ProviderSpec } from '../../core/graph-schema.js';
import { checkRequest } from '../../core/requests.js';

export type ServerProviders = Record<string, ProviderSpec>;

/** The shape of a --providers file: the graph format's `providers` block. */
export const serverProvidersSchema = {
  type: 'object',
  propertyNames: { pattern: '^(?!(?:__proto__|constructor|prototype)$)[A-Za-z_][A-Za-z0-9_-]*$' },
  additionalProperties: providerSchema,
} as const;

/** Reads a --providers document (checked against the graph format's provider schema). */
export function parseServerProviders(json: unknown): ServerProviders {
  return checkRequest(serverProvidersSchema, json) as ServerProviders;
}

/** The first entry of a graph's own `providers` that is not the server's, as a problem at its pointer. */
export function foreignProvider(graph: unknown, allowed: ServerProviders): GraphProblem | undefined {
  if (graph === null || typeof graph !== 'object' || Array.isArray(graph)) return undefined;
  const own = (graph as { providers?: unknown }).providers;
  if (own === undefined || own === null || typeof own !== 'object' || Array.isArray(own)) return undefined;
  for (const [name, spec] of Object.entries(own)) {
    if (Object.hasOwn(allowed, name) && isDeepStrictEqual(spec, allowed[name])) continue;
    return {
      pointer: `/providers/${name}`,
      message: `is not one of this server's providers (${Object.keys(allowed).join(', ') || 'it has none'}): a graph sent over HTTP may only use the providers the server was started with (skein serve --providers FILE), so that it cannot make the server call other URLs or send other environment variables as keys`,
    };
  }
  return undefined;
}

/**
 * The graph with the server's providers as its `providers`; a BadRequestError at the first
 * entry of its own block that is not the server's. A graph that is not an object (or whose
 * block is malformed) is passed on for the validator to refuse.
 */
export function withServerProviders(graph: unknown, allowed: ServerProviders): unknown {
  const foreign = foreignProvider(graph, allowed);
  if (foreign) throw new BadRequestError(foreign.pointer, foreign.message);
  if (graph === null || typeof graph !== 'object' || Array.isArray(graph) || Object.keys(allowed).length === 0) return graph;
  return { ...graph, providers: allowed };
}
