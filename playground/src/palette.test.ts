import { describe, expect, it } from 'vitest';
import { graphJsonSchema, validateGraph } from '../../core/index.js';
import { freshId, kindSchemas, nodeTemplate } from './palette.js';

describe('node palette', () => {
  const kinds = kindSchemas(graphJsonSchema);

  it('reads every node kind from the graph schema', () => {
    expect([...kinds.keys()]).toEqual(expect.arrayContaining(['input', 'generate', 'skeleton', 'expand', 'fork', 'join', 'output']));
    expect(kinds.get('generate')!.description).toMatch(/model call/);
  });

  it('fills required fields with values of the right type', () => {
    expect(nodeTemplate('fork', kinds.get('fork')!, 'fork1')).toEqual({ id: 'fork1', kind: 'fork', branches: ['item1', 'item2'] });
    expect(nodeTemplate('join', kinds.get('join')!, 'j')).toMatchObject({ mode: expect.any(String) });
    expect(nodeTemplate('loop', kinds.get('loop')!, 'l')).toMatchObject({ maxTurns: 1 });
  });

  it('makes nodes the schema accepts (only the graph wiring is left to do)', () => {
    for (const [kind, s] of kinds) {
      const graph = { version: 1, name: 'g', nodes: [nodeTemplate(kind, s, 'n')], edges: [] };
      const schemaProblems = validateGraph(graph).filter((p) => p.pointer.startsWith('/nodes/0/') && /must|unknown field/.test(p.message));
      expect(schemaProblems, kind).toEqual([]);
    }
  });

  it('picks unused ids', () => {
    expect(freshId('expand', new Set(['expand', 'expand2']))).toBe('expand3');
    expect(freshId('join', new Set())).toBe('join');
  });
});
