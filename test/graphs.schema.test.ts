import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GraphValidationError, compileGraph, graphJsonSchema, parseGraph, printGraph, validateGraph, ToolRegistry } from '../operators/index.js';
import { schemaFile, schemaText } from '../core/schema/write-schema.js';

const graphsDir = new URL('../graphs/', import.meta.url);
const exampleFiles = readdirSync(graphsDir).filter((f) => f.endsWith('.json'));
const load = (f: string) => JSON.parse(readFileSync(new URL(f, graphsDir), 'utf8'));

/** A small valid graph that cases below break one thing of. */
const base = () => ({
  version: 1,
  name: 't',
  nodes: [
    { id: 'q', kind: 'input' },
    { id: 'p', kind: 'template', template: 'Q: {{question}}' },
    { id: 'g', kind: 'generate' },
    { id: 'o', kind: 'output' },
  ] as Record<string, unknown>[],
  edges: [
    { from: 'q', to: 'p.question' },
    { from: 'p', to: 'g.prompt' },
    { from: 'g', to: 'o' },
  ] as Record<string, unknown>[],
});

const pointers = (json: unknown) => validateGraph(json).map((p) => p.pointer);

describe('graph schema', () => {
  it('ships the JSON Schema file generated from the TypeScript source', () => {
    expect(readFileSync(schemaFile, 'utf8')).toBe(schemaText());
    expect(graphJsonSchema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });

  it.each(exampleFiles)('example %s is valid and compiles', (f) => {
    expect(validateGraph(load(f))).toEqual([]);
    expect(printGraph(compileGraph(parseGraph(load(f), f)))).toContain(`graph ${load(f).name}`);
  });

  it('has the required examples', () => {
    expect(exampleFiles).toEqual(expect.arrayContaining(['chat.json', 'sot.json', 'debate.json', 'compress-qa.json']));
  });

  it('accepts the base graph and layout hints', () => {
    const g = base();
    g.nodes[2] = { ...g.nodes[2], label: 'Answer', position: { x: 1, y: 2 }, notes: 'n' };
    expect(validateGraph(g)).toEqual([]);
  });

  it('reports schema errors with pointers and plain messages', () => {
    expect(validateGraph(null)).toEqual([{ pointer: '', message: 'must be object' }]);
    const g = base();
    (g as Record<string, unknown>).version = 2;
    g.nodes[2] = { id: 'g', kind: 'generate', sampling: { temperature: -1, topk: 3 }, color: 'red' };
    const problems = validateGraph(g);
    expect(problems).toEqual(
      expect.arrayContaining([
        { pointer: '/version', message: 'must be 1' },
        { pointer: '/nodes/2/color', message: "unknown field 'color'" },
        { pointer: '/nodes/2/sampling/topk', message: "unknown field 'topk'" },
        { pointer: '/nodes/2/sampling/temperature', message: 'must be >= 0' },
      ]),
    );
    expect(problems).toHaveLength(4);
  });

  it('reports unknown node kinds and join modes by name', () => {
    const g = base();
    g.nodes.push({ id: 'x', kind: 'magic' }, { id: 'j', kind: 'join', mode: 'zip' });
    expect(validateGraph(g)).toEqual([
      { pointer: '/nodes/4/kind', message: expect.stringMatching(/^unknown node kind "magic" \(known: input, template/) },
      { pointer: '/nodes/5/mode', message: 'unknown join mode "zip" (expected one of: concat, list, first, object)' },
    ]);
  });

  it('reports missing required fields', () => {
    const g = base();
    g.nodes.push({ id: 'l', kind: 'loop' }, { kind: 'output' });
    expect(pointers(g)).toEqual(['/nodes/4/maxTurns', '/nodes/5/id']);
  });

  it('reports dangling, duplicate and conflicting edges and unknown ports', () => {
    const g = base();
    g.edges.push(
      { from: 'nowhere', to: 'o' },
      { from: 'p', to: 'g.prompt' },
      { from: 'q', to: 'g.prompt' },
      { from: 'g.nope', to: 'g.system' },
      { from: 'q', to: 'g' },
    );
    expect(validateGraph(g)).toEqual([
      { pointer: '/edges/3/from', message: "edge source 'nowhere' is not a node of this graph" },
      { pointer: '/edges/4', message: 'duplicate edge p → g.prompt (same as /edges/1)' },
      { pointer: '/edges/5/to', message: 'input g.prompt is already connected by /edges/1' },
      { pointer: '/edges/6/from', message: "node 'g' has no output 'nope' (outputs: out)" },
      { pointer: '/edges/7/to', message: "node 'g' has several inputs (prompt, system): write 'g.<input>'" },
    ]);
  });

  it('reports duplicate node ids and missing required inputs', () => {
    const g = base();
    g.nodes.push({ id: 'g', kind: 'output' });
    g.edges = g.edges.filter((e) => e.to !== 'g.prompt');
    expect(validateGraph(g)).toEqual([
      { pointer: '/nodes/4/id', message: "duplicate node id 'g' (first at /nodes/2)" },
      { pointer: '/nodes/2', message: "node 'g' is missing required input 'prompt' (connect an edge to 'g.prompt')" },
    ]);
  });

  it('reports cycles unless they pass through a loop node', () => {
    const g = base();
    g.nodes.push({ id: 't2', kind: 'template', template: '{{a}}' });
    g.edges.push({ from: 'g', to: 't2.a' }, { from: 't2', to: 'g.system' });
    expect(validateGraph(g)).toEqual([{ pointer: expect.stringMatching(/^\/edges\/[34]$/), message: expect.stringMatching(/^cycle (g → t2 → g|t2 → g → t2): a cycle must pass through a loop node's 'next' input$/) }]);
  });

  it('still checks port types outside a cycle, so every problem is listed at once', () => {
    const g = base();
    g.nodes.push({ id: 't2', kind: 'template', template: '{{a}}' }, { id: 's', kind: 'skeleton' }, { id: 'g2', kind: 'generate' }, { id: 'o2', kind: 'output' });
    g.edges.push({ from: 'g', to: 't2.a' }, { from: 't2', to: 'g.system' });
    g.edges.push({ from: 'q', to: 's.question' }, { from: 's', to: 'g2.prompt' }, { from: 'g2', to: 'o2' });
    const problems = validateGraph(g);
    expect(problems.map((p) => p.message)).toEqual([
      expect.stringMatching(/^cycle /),
      "type mismatch: 's.out' gives skeleton but 'g2.prompt' takes text",
    ]);
    expect(problems[1]!.pointer).toBe('/edges/6');
  });

  it('accepts a cycle through a loop and rejects a loop body that leaks', () => {
    const g = {
      version: 1,
      name: 'l',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'l', kind: 'loop', maxTurns: 3, stop: { regex: 'done$' } },
        { id: 'step', kind: 'template', template: '{{x}}!' },
        { id: 'o', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 'l.init' },
        { from: 'l.body', to: 'step.x' },
        { from: 'step', to: 'l.next' },
        { from: 'l.out', to: 'o' },
      ],
    };
    expect(validateGraph(g)).toEqual([]);
    const leaky = structuredClone(g);
    leaky.nodes.push({ id: 'o2', kind: 'output' } as never);
    leaky.edges.push({ from: 'step', to: 'o2' });
    expect(validateGraph(leaky)).toEqual([
      { pointer: '/edges/4', message: "node 'step' runs once per turn of loop 'l' but feeds 'o2' outside it: take the loop's result from 'l.out'" },
    ]);
    const badRegex = structuredClone(g);
    (badRegex.nodes[1] as { stop: unknown }).stop = { regex: '(' };
    expect(pointers(badRegex)).toEqual(['/nodes/1/stop/regex']);
  });

  it('rejects backreferences and lookarounds in regexes, which cannot run in linear time', () => {
    const withRegex = (regex: string, flags?: string) => ({
      version: 1,
      name: 'r',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'r', kind: 'route', branches: [{ name: 'a', when: { contains: 'x' } }, { name: 'b', when: { regex, ...(flags ? { flags } : {}) } }], default: 'a' },
        { id: 'oa', kind: 'output' },
        { id: 'ob', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 'r.in' },
        { from: 'r.a', to: 'oa' },
        { from: 'r.b', to: 'ob' },
      ],
    });
    const tail = ' is not supported: a graph\'s regular expression must run in linear time, and backreferences and lookarounds can make matching hang on a long text';
    const cases: [string, string, string?][] = [
      ['(a+)\\1', 'the backreference \\1'],
      ['(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\\10', 'the backreference \\10'],
      ['(?<w>a)\\k<w>', 'the named backreference \\k<w>', 'u'],
      ['foo(?=bar)', 'the lookahead (?='],
      ['foo(?!bar)', 'the negative lookahead (?!'],
      ['(?<=\\$)\\d+', 'the lookbehind (?<='],
      ['(?<!x)y', 'the negative lookbehind (?<!'],
    ];
    for (const [regex, what, flags] of cases) {
      expect(validateGraph(withRegex(regex, flags)), regex).toEqual([{ pointer: '/nodes/1/branches/1/when/regex', message: `${what}${tail}` }]);
    }
    // Escaped, inside a class, a named group, a non-capturing group or \0: all linear.
    for (const regex of ['\\(\\?=x', '[(?=\\1]', '(?<name>a)b', '(?:ab)+', 'a\\0', '^DONE\\b', '\\\\1']) {
      expect(validateGraph(withRegex(regex)), regex).toEqual([]);
    }
  });

  it('reports port type mismatches', () => {
    const g = base();
    g.nodes.push({ id: 's', kind: 'skeleton' }, { id: 'g2', kind: 'generate' }, { id: 'o2', kind: 'output' });
    g.edges.push({ from: 'q', to: 's.question' }, { from: 's', to: 'g2.prompt' }, { from: 'g2', to: 'o2' });
    expect(validateGraph(g)).toEqual([{ pointer: '/edges/4', message: "type mismatch: 's.out' gives skeleton but 'g2.prompt' takes text" }]);
    const list = base();
    list.nodes[0] = { id: 'q', kind: 'input', type: 'list' };
    list.edges[0] = { from: 'q', to: 'g.system' };
    list.nodes[1] = { id: 'p', kind: 'template', template: 'x' };
    list.edges.splice(1, 1, { from: 'p', to: 'g.prompt' });
    expect(validateGraph(list)).toEqual([{ pointer: '/edges/0', message: "type mismatch: 'q.out' gives list but 'g.system' takes text" }]);
  });

  it('reports inputs mixed from sibling branches without a join', () => {
    const g = {
      version: 1,
      name: 'b',
      nodes: [
        { id: 'q', kind: 'input' },
        { id: 'f', kind: 'fork', branches: ['a', 'b'] },
        { id: 'mix', kind: 'template', template: '{{a}} {{b}}' },
        { id: 'o', kind: 'output' },
      ],
      edges: [
        { from: 'q', to: 'f.in' },
        { from: 'f.a', to: 'mix.a' },
        { from: 'f.b', to: 'mix.b' },
        { from: 'mix', to: 'o' },
      ],
    };
    expect(validateGraph(g)).toEqual([{ pointer: '/nodes/2', message: "node 'mix' takes inputs from different branches (f.a and f.b): join them first" }]);
  });

  it('parseGraph throws a typed error listing every problem; compileGraph checks tools', () => {
    const g = base();
    g.edges = [];
    try {
      parseGraph(g, 'g.json');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(GraphValidationError);
      const e = err as GraphValidationError;
      expect(e.problems.map((p) => p.pointer)).toEqual(['/nodes/1', '/nodes/2', '/nodes/3']);
      expect(e.message).toContain('Invalid graph g.json: 3 problem(s)');
      expect(e.code).toBe('graph_invalid');
    }
    const t = base();
    t.nodes.push({ id: 'tt', kind: 'tool', tool: 'missing' });
    expect(validateGraph(t)).toEqual([]);
    expect(() => compileGraph(parseGraph(t), { tools: new ToolRegistry().register('other', () => 1) })).toThrow(/\/nodes\/4\/tool: no tool 'missing' is registered \(registered: other\)/);
  });
});
