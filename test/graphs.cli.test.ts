/** `skein run` and `skein validate` with the fake engine and captured output. */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parseEvents } from '../core/index.js';
import { runGraphFile } from '../runtime/cli/commands/run.js';
import { validateGraphFile } from '../runtime/cli/commands/validate.js';
import { createFakeEngine, sotScript } from './fakes/fake-engine.js';
import { tempDir } from './fixtures/temp-dir.js';

const graphs = new URL('../graphs/', import.meta.url).pathname;

function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

describe('skein validate', () => {
  it('prints "valid" and exits 0 for an example, and the compiled graph with --print', () => {
    const out = sink();
    expect(validateGraphFile(join(graphs, 'sot.json'), { print: true }, out.stream)).toBe(0);
    expect(out.text()).toMatch(/sot\.json: valid \(8 nodes, 8 edges\)\ngraph sot \(v1\)/);
  });

  it('lists every problem with its pointer and exits 1', () => {
    const dir = tempDir('skein-');
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ version: 1, name: 'b', nodes: [{ id: 'a', kind: 'nope' }], edges: [{ from: 'a', to: 'zz' }] }));
    const out = sink();
    expect(validateGraphFile(file, {}, out.stream)).toBe(1);
    expect(out.text()).toContain('3 problem(s)');
    expect(out.text()).toContain('  /nodes/0/kind: unknown node kind "nope"');
    expect(out.text()).toContain("  /edges/0/to: edge target 'zz' is not a node of this graph");
    const notJson = join(dir, 'x.json');
    writeFileSync(notJson, '{');
    expect(validateGraphFile(notJson, { json: true }, out.stream)).toBe(1);
    expect(out.text()).toContain('"valid":false');
  });

  it('says on which line and column a file stops being JSON', () => {
    const file = join(tempDir('skein-'), 'broken.json');
    writeFileSync(file, '{\n  "version": 1,\n  "nodes": []\n  "edges": []\n}\n');
    const out = sink();
    expect(validateGraphFile(file, {}, out.stream)).toBe(1);
    expect(out.text()).toContain("/: not JSON at line 4, column 3: Expected ',' or '}' after property value");
    // A message without a position (V8 quotes the text instead) is located by scanning.
    writeFileSync(file, '{\n  "nodes": [ tru ]\n}\n');
    const again = sink();
    validateGraphFile(file, {}, again.stream);
    expect(again.text()).toMatch(/\/: not JSON at line 2, column 14: Unexpected token/);
    expect(again.text()).not.toContain('is not valid JSON');
  });

  it('--model checks the stages against that model before any run, saying what is missing', () => {
    const dir = tempDir('skein-');
    const graph = JSON.parse(readFileSync(join(graphs, 'compress-qa.json'), 'utf8'));
    const answer = graph.nodes.findIndex((n: { id: string }) => n.id === 'answer');
    graph.nodes[answer].stages = { ...graph.nodes[answer].stages, speculate: {}, skipLayers: { targetSpeedup: 2 } };
    const file = join(dir, 'stages.json');
    writeFileSync(file, JSON.stringify(graph));
    const plain = sink();
    expect(validateGraphFile(file, {}, plain.stream)).toBe(0);
    const out = sink();
    expect(validateGraphFile(file, { model: 'skein-mini' }, out.stream)).toBe(1);
    expect(out.text()).toContain('1 problem(s)');
    expect(out.text()).toMatch(new RegExp(`/nodes/${answer}/stages/speculate: Stage speculate is not available for model skein-mini: no trained heads beside the model .*run \`npx skein train heads --model skein-mini\``));
    expect(out.text()).not.toContain('stages/skipLayers');
    expect(validateGraphFile(join(graphs, 'compress-qa.json'), { model: 'skein-mini' }, sink().stream)).toBe(0);
  });
});

describe('skein run', () => {
  it('shows progress per node and branch, prints the output, and saves replayable events', async () => {
    const out = sink();
    const err = sink();
    const save = join(tempDir('skein-'), 'run.jsonl');
    const engine = createFakeEngine({ script: sotScript() });
    const status = await runGraphFile(
      join(graphs, 'sot.json'),
      { input: '{"question": "How do I cook?"}', model: 'fake', seed: '7', save },
      { openEngine: async () => engine, stdout: out.stream, stderr: err.stream },
    );
    expect(status).toBe(0);
    expect(out.text()).toMatch(/^1\. Gather basic tools.*\n2\. .*\n3\. .*\n$/);
    expect(err.text()).toContain('seed 7');
    expect(err.text()).toMatch(/✓ expand \[router\.sot\/expand#2\]/);
    const events = parseEvents(readFileSync(save, 'utf8'));
    expect(events.at(-1)).toMatchObject({ type: 'run-end', status: 'ok' });
  });

  it('--json prints every event as a JSON line; a failed run exits 1', async () => {
    const out = sink();
    const engine = createFakeEngine({ script: [{ match: /./, error: new Error('broken') }] });
    const status = await runGraphFile(join(graphs, 'chat.json'), { input: '{"question": "hi"}', model: 'fake', json: true }, { openEngine: async () => engine, stdout: out.stream, stderr: sink().stream });
    expect(status).toBe(1);
    const lines = out.text().trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0].type).toBe('run-start');
    expect(lines.at(-1)).toMatchObject({ type: 'run-end', status: 'error', error: { message: 'broken', node: 'answer' } });
  });

  it('a failed run names the failing node in its progress and its error line', async () => {
    const err = sink();
    const engine = createFakeEngine({ script: [{ match: /./, error: new Error('broken') }] });
    const status = await runGraphFile(join(graphs, 'chat.json'), { input: '{"question": "hi"}', model: 'fake' }, { openEngine: async () => engine, stdout: sink().stream, stderr: err.stream });
    expect(status).toBe(1);
    expect(err.text()).toMatch(/^✗ answer .*broken$/m);
    expect(err.text()).toContain('skein: node answer failed: broken\n');
  });

  it('rejects bad input before opening the engine', async () => {
    let opened = false;
    const openEngine = async () => ((opened = true), createFakeEngine());
    await expect(runGraphFile(join(graphs, 'chat.json'), { input: '[1]', model: 'x' }, { openEngine })).rejects.toThrow(/--input: must be a JSON object/);
    await expect(runGraphFile(join(graphs, 'chat.json'), { input: '{"question": "hi"}', model: 'x', seed: 'abc' }, { openEngine })).rejects.toThrow(/--seed/);
    await expect(runGraphFile(join(graphs, 'chat.json'), { input: '{}', model: 'x' }, { openEngine })).rejects.toThrow(/input\.question: is required/);
    expect(opened).toBe(false);
  });
});
