import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import {
  TINY_SPECIAL_TOKENS,
  TINY_TOKENIZER_SIZE,
  tinyTokenizerConfig,
  tinyTokenizerJson,
} from '../../test/fixtures/checkpoints.js';
import { ModelTokenizer } from './tokenizer.js';

let root: string;
let tok: ModelTokenizer;
beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'skein-tok-'));
  tok = new ModelTokenizer(tinyTokenizerJson(), tinyTokenizerConfig(), { eosIds: [TINY_SPECIAL_TOKENS.endOfText] });
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const TEXTS = ['Hello world', ' the tiny test is here', 'héllo wörld — naïve', '日本語のテキスト', 'emoji 🧶🪡 ok', 'tabs\tand\nnewlines  '];

describe('ModelTokenizer', () => {
  it('encode/decode round trips', () => {
    for (const text of TEXTS) expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('uses the merges and knows its size', () => {
    expect(tok.encode('Hello')).toEqual([tok.tokenToId('Hello')]);
    expect(tok.encode(' world')).toEqual([tok.tokenToId('Ġworld')]);
    expect(tok.vocabSize).toBe(TINY_TOKENIZER_SIZE);
  });

  it('special tokens: one id each, skipped on request, no special tokens added by default', () => {
    const ids = tok.encode('<|im_start|>user\nHi<|im_end|>');
    expect(ids[0]).toBe(TINY_SPECIAL_TOKENS.imStart);
    expect(ids.at(-1)).toBe(TINY_SPECIAL_TOKENS.imEnd);
    expect(tok.isSpecial(TINY_SPECIAL_TOKENS.imEnd)).toBe(true);
    expect(tok.isSpecial(ids[1]!)).toBe(false);
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('user\nHi');
    expect(tok.encode('Hi', { addSpecialTokens: true })).toEqual(tok.encode('Hi'));
  });

  it('eos ids merge the given ids with eos_token; bos from bos_token or the option', () => {
    expect(tok.eosIds).toEqual([TINY_SPECIAL_TOKENS.endOfText, TINY_SPECIAL_TOKENS.imEnd]);
    expect(tok.isEos(TINY_SPECIAL_TOKENS.imEnd)).toBe(true);
    expect(tok.bosId).toBeNull();
    const withBos = new ModelTokenizer(tinyTokenizerJson(), { ...tinyTokenizerConfig(), bos_token: { content: '<|endoftext|>' } });
    expect(withBos.bosId).toBe(TINY_SPECIAL_TOKENS.endOfText);
    expect(new ModelTokenizer(tinyTokenizerJson(), tinyTokenizerConfig(), { bosId: 5 }).bosId).toBe(5);
  });
});

describe('renderChat', () => {
  it("renders the checkpoint's template", () => {
    expect(tok.hasChatTemplate).toBe(true);
    expect(tok.renderChat([{ role: 'user', content: 'Hi' }])).toBe(
      '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(
      tok.renderChat(
        [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'Hi' },
          { role: 'assistant', content: 'Hello' },
        ],
        { addGenerationPrompt: false },
      ),
    ).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n');
  });

  it('passes bos/eos strings and extra variables', () => {
    const t = new ModelTokenizer(tinyTokenizerJson(), {
      ...tinyTokenizerConfig(),
      bos_token: '<|endoftext|>',
      chat_template: "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}{% if flag %}!{% endif %}",
    });
    expect(t.renderChat([{ role: 'user', content: 'a' }], { variables: { flag: true } })).toBe('<|endoftext|>a<|im_end|>!');
  });

  it('falls back to ChatML without a template', () => {
    const t = new ModelTokenizer(tinyTokenizerJson(), tinyTokenizerConfig(null));
    expect(t.hasChatTemplate).toBe(false);
    expect(t.renderChat([{ role: 'user', content: 'Hi' }])).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
  });

  it('named templates (list form) and chat_template.jinja', () => {
    const t = new ModelTokenizer(tinyTokenizerJson(), {
      ...tinyTokenizerConfig(null),
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: 'DEFAULT' },
      ],
    });
    expect(t.renderChat([])).toBe('DEFAULT');
    const dir = path.join(root, 'jinja');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tinyTokenizerConfig(null)));
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{{ messages | length }}');
    expect(ModelTokenizer.fromDir(dir).renderChat([{ role: 'user', content: 'x' }])).toBe('1');
  });

  it('a template that does not parse is a CheckpointError', () => {
    const t = new ModelTokenizer(tinyTokenizerJson(), { ...tinyTokenizerConfig(), chat_template: '{% for %}' });
    expect(() => t.renderChat([])).toThrow(CheckpointError);
  });

  it('missing tokenizer.json names the file', () => {
    const dir = path.join(root, 'none');
    fs.mkdirSync(dir);
    try {
      ModelTokenizer.fromDir(dir);
      throw new Error('expected a CheckpointError');
    } catch (err) {
      expect(err).toBeInstanceOf(CheckpointError);
      expect((err as CheckpointError).file).toBe(path.join(dir, 'tokenizer.json'));
    }
  });
});

describe('IncrementalDetokenizer', () => {
  it('streams only complete characters and adds up to the full decode', () => {
    for (const text of TEXTS) {
      const ids = tok.encode(text);
      const d = tok.detokenizer();
      const deltas = ids.map((id) => d.push(id));
      deltas.push(d.flush());
      for (const delta of deltas) expect(delta).not.toContain('\uFFFD');
      expect(deltas.join('')).toBe(text);
      expect(d.text).toBe(text);
    }
  });

  it('holds back a split character until its last byte', () => {
    const ids = tok.encode('🧶');
    expect(ids.length).toBe(4);
    const d = tok.detokenizer();
    expect([d.push(ids[0]!), d.push(ids[1]!), d.push(ids[2]!)]).toEqual(['', '', '']);
    expect(d.push(ids[3]!)).toBe('🧶');
  });

  it('flush releases an incomplete tail as U+FFFD', () => {
    const ids = tok.encode('a🧶');
    const d = tok.detokenizer();
    expect(d.push(ids.slice(0, 3))).toBe('a');
    expect(d.flush()).toBe('\uFFFD');
  });

  it('skips special tokens when asked', () => {
    const ids = [TINY_SPECIAL_TOKENS.imStart, ...tok.encode('Hi'), TINY_SPECIAL_TOKENS.imEnd];
    const d = tok.detokenizer({ skipSpecialTokens: true });
    expect(ids.map((id) => d.push(id)).join('') + d.flush()).toBe('Hi');
    const d2 = tok.detokenizer();
    expect(ids.map((id) => d2.push(id)).join('') + d2.flush()).toBe('<|im_start|>Hi<|im_end|>');
  });
});
