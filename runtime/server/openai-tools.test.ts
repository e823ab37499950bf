import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { parseToolCall, planTools, responseFormatOutput, ToolCallStream } from './openai-tools.js';

const tool = (name: string, parameters: object = { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] }) => ({
  type: 'function',
  function: { name, parameters },
});

describe('planTools', () => {
  it('maps tool_choice to a constraint: auto = call or text, required = a call to any, named = that one, none = text', () => {
    const tools = [tool('a'), tool('b')];
    expect(planTools({ tools }).output).toMatchObject({ orText: true, schema: { anyOf: [{}, {}] } });
    expect(planTools({ tools, tool_choice: 'required' })).toMatchObject({ mode: 'call', output: { schema: { anyOf: [{}, {}] } } });
    const named = planTools({ tools, tool_choice: { type: 'function', function: { name: 'b' } } });
    expect(named.output!.schema).toMatchObject({ properties: { name: { const: 'b' } } });
    expect(named.system).toContain('"b"');
    expect(named.system).not.toContain('"a"');
    expect(planTools({ tools, tool_choice: 'none' })).toEqual({ mode: 'text' });
    expect(planTools({})).toEqual({ mode: 'text' });
  });

  it('refuses bad tools and choices naming the field', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ tools: [] }, 'tools'],
      [{ tools: [{ type: 'retrieval' }] }, 'tools[0].type'],
      [{ tools: [tool('a b')] }, 'tools[0].function.name'],
      [{ tools: [tool('a'), tool('a')] }, 'tools[1].function.name'],
      [{ tools: [tool('a')], tool_choice: 'sometimes' }, 'tool_choice'],
      [{ tool_choice: 'required' }, 'tool_choice'],
      [{ tools: [tool('a')], parallel_tool_calls: true }, 'parallel_tool_calls'],
    ];
    for (const [body, field] of cases) {
      const err = (() => {
        try {
          planTools(body);
        } catch (e) {
          return e;
        }
        return null;
      })();
      expect(err, JSON.stringify(body)).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).field).toBe(field);
    }
  });
});

describe('responseFormatOutput', () => {
  it('text is free, json_object any object, json_schema its schema', () => {
    expect(responseFormatOutput({ type: 'text' })).toBeUndefined();
    expect(responseFormatOutput({ type: 'json_object' })).toEqual({ schema: { type: 'object' } });
    expect(responseFormatOutput({ type: 'json_schema', json_schema: { name: 'n', strict: true, schema: { type: 'integer' } } })).toEqual({ schema: { type: 'integer' } });
    expect(() => responseFormatOutput({ type: 'xml' })).toThrow(/response_format.type/);
  });
});

describe('ToolCallStream', () => {
  it('announces id and name once the name is complete, then streams the arguments without the closing brace', () => {
    const text = '{"name": "add", "arguments": {"a": 1, "b": 22}}';
    for (const cut of [1, 3, 7]) {
      const s = new ToolCallStream('call_1');
      const deltas: Record<string, unknown>[] = [];
      for (let i = 0; i < text.length; i += cut) deltas.push(...s.push(text.slice(i, i + cut)));
      deltas.push(...s.finish());
      expect(deltas[0]).toEqual({ index: 0, id: 'call_1', type: 'function', function: { name: 'add', arguments: '' } });
      const args = deltas.slice(1).map((d) => (d.function as { arguments: string }).arguments).join('');
      expect(JSON.parse(args)).toEqual({ a: 1, b: 22 });
      expect(parseToolCall(text, 'call_1').function).toEqual({ name: 'add', arguments: JSON.stringify({ a: 1, b: 22 }) });
    }
  });
});
