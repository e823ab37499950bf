// Providers in the graph format: declared by name, named by model-calling nodes, and the
// checks a schema cannot express (unknown names, what only the local runtime can run).
import { describe, expect, it } from 'vitest';
import { validateGraph } from './validate.js';

const graph = (node: Record<string, unknown>, providers: unknown = { big: { type: 'openai', baseUrl: 'http://127.0.0.1:8000/v1', model: 'm' } }) => ({
  version: 1,
  name: 't',
  ...(providers === null ? {} : { providers }),
  nodes: [{ id: 'q', kind: 'input' }, { id: 'g', kind: 'generate', ...node }, { id: 'o', kind: 'output' }],
  edges: [
    { from: 'q', to: 'g.prompt' },
    { from: 'g', to: 'o' },
  ],
});

describe('graph providers', () => {
  it('accepts a declared provider on a generate node, with compress', () => {
    expect(validateGraph(graph({ provider: 'big', stages: { compress: { rate: 0.5 } } }))).toEqual([]);
  });

  it('refuses an unknown provider name at the node pointer, listing the declared ones', () => {
    expect(validateGraph(graph({ provider: 'small' }))).toEqual([{ pointer: '/nodes/1/provider', message: "unknown provider 'small' (declared: big)" }]);
    expect(validateGraph(graph({ provider: 'small' }, null))[0]).toMatchObject({ message: expect.stringContaining('declares no providers') });
  });

  it.each(['prunedPrefill', 'skipLayers', 'speculate'])('refuses the forward-shaping stage %s on a remote node, saying why', (stage) => {
    const options = { prunedPrefill: { keepRatio: 0.5 }, skipLayers: { targetSpeedup: 2 }, speculate: {} }[stage];
    const problems = validateGraph(graph({ provider: 'big', stages: { [stage]: options } }));
    expect(problems).toHaveLength(1);
    expect(problems[0]!.pointer).toBe(`/nodes/1/stages/${stage}`);
    expect(problems[0]!.message).toMatch(/forward pass.*provider 'big'/);
  });

  it('refuses structured output and raw prompts on a remote node', () => {
    expect(validateGraph(graph({ provider: 'big', output: { choices: ['a', 'b'] } })).map((p) => p.pointer)).toEqual(['/nodes/1/output']);
    expect(validateGraph(graph({ provider: 'big', chat: false })).map((p) => p.pointer)).toEqual(['/nodes/1/chat']);
  });

  it('refuses a node that starts the answer on a provider declared unable to continue it, and only that', () => {
    const noContinuation = { big: { type: 'openai', baseUrl: 'http://127.0.0.1:8000/v1', model: 'm', continueFinalMessage: false } };
    const problems = validateGraph(graph({ provider: 'big', assistantPrefix: '1.' }, noContinuation));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ pointer: '/nodes/1/provider', message: expect.stringContaining("provider 'big' declares continueFinalMessage: false") });
    expect(validateGraph(graph({ provider: 'big' }, noContinuation))).toEqual([]);
    expect(validateGraph(graph({ provider: 'big', assistantPrefix: '1.' }))).toEqual([]);
    const sot = {
      version: 1,
      name: 'sot',
      providers: noContinuation,
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 's', kind: 'skeleton', provider: 'big' },
        { id: 'e', kind: 'expand', provider: 'big' },
        { id: 'o', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 's' },
        { from: 's', to: 'e' },
        { from: 'e', to: 'o' },
      ],
    };
    expect(validateGraph(sot).map((p) => p.pointer)).toEqual(['/nodes/1/provider', '/nodes/2/provider']);
  });

  it('refuses reserved provider names, keys in a provider, and bad fields', () => {
    const reserved = JSON.parse('{"__proto__": {"type": "openai", "baseUrl": "http://h/v1", "model": "m"}}');
    expect(validateGraph(graph({}, reserved)).map((p) => p.pointer)).toContain('/providers/__proto__');
    expect(validateGraph(graph({}, { big: { type: 'openai', baseUrl: 'http://h/v1', model: 'm', apiKey: 'sk-123' } })).map((p) => p.pointer)).toEqual([
      '/providers/big/apiKey',
    ]);
    expect(validateGraph(graph({}, { big: { type: 'openai', baseUrl: 'ftp://h', model: 'm' } })).map((p) => p.pointer)).toEqual(['/providers/big/baseUrl']);
    expect(validateGraph(graph({}, { big: { type: 'openai', baseUrl: 'http://h/v1', model: 'm', apiKeyEnv: 'not a name' } })).map((p) => p.pointer)).toEqual([
      '/providers/big/apiKeyEnv',
    ]);
  });
});
