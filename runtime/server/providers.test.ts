// A graph sent over HTTP may use only the providers the server was started with: its own
// `providers` block would otherwise make the server call any URL with any environment
// variable as the key.
import { describe, expect, it } from 'vitest';
import { ProviderKeyMissingError } from '../../core/errors.js';
import { createServerTestEngine } from '../../test/fakes/server-engine.js';
import { createApp } from './app.js';
import { parseServerProviders, withServerProviders } from './providers.js';

const far = { type: 'openai', baseUrl: 'http://127.0.0.1:9/v1', model: 'm' } as const;
const graph = (providers?: unknown) => ({
  version: 1,
  name: 'g',
  ...(providers !== undefined ? { providers } : {}),
  nodes: [{ id: 'q', kind: 'input' }, { id: 'g', kind: 'generate', provider: 'far' }, { id: 'o', kind: 'output' }],
  edges: [
    { from: 'q', to: 'g.prompt' },
    { from: 'g', to: 'o' },
  ],
});
const post = (body: unknown) => ({ method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

describe('providers over HTTP', () => {
  it('refuses a graph declaring a provider the server does not have, at its pointer, before anything runs', async () => {
    const app = createApp({ engine: createServerTestEngine(1), log: () => {} });
    const evil = graph({ far: { ...far, baseUrl: 'http://attacker.example/v1', apiKeyEnv: 'SKEIN_TOKEN' } });
    const res = await app.request('/v1/runs', post({ graph: evil, input: { q: 'hi' } }));
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/providers\/far.*not one of this server's providers/);
    const validated = (await (await app.request('/v1/graphs/validate', post(evil))).json()) as { valid: boolean; problems: { pointer: string }[] };
    expect(validated).toMatchObject({ valid: false, problems: [{ pointer: '/providers/far' }] });
  });

  it("lets a graph name the server's providers, declared or not, and refuses a changed entry", async () => {
    const app = createApp({ engine: createServerTestEngine(1), log: () => {}, providers: { far } });
    for (const g of [graph(), graph({ far })]) {
      const res = await (await app.request('/v1/graphs/validate', post(g))).json();
      expect(res).toEqual({ valid: true, problems: [] });
    }
    expect(withServerProviders(graph(), { far })).toMatchObject({ providers: { far } });
    expect(() => withServerProviders(graph({ far: { ...far, model: 'other' } }), { far })).toThrow(/providers\/far/);
  });

  it('stops at start when a provider key variable is unset, naming it', () => {
    expect(() => createApp({ engine: createServerTestEngine(1), log: () => {}, providers: { far: { ...far, apiKeyEnv: 'SKEIN_UNSET_TEST_KEY' } } })).toThrow(ProviderKeyMissingError);
  });

  it('reads a --providers document with the graph format schema', () => {
    expect(parseServerProviders({ far })).toEqual({ far });
    expect(() => parseServerProviders({ far: { ...far, apiKey: 'sk-x' } })).toThrow(/apiKey/);
  });
});
