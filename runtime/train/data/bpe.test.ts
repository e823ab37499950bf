import { describe, expect, it } from 'vitest';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { BpeTokenizer, bytesToUnicode, countPieces, pretokenize, trainBpe } from './bpe.js';
import { hfTokenizerConfig, hfTokenizerJson, readBpeModel, renderChat, writeTokenizerFiles } from './tokenizer-files.js';
import { readFileSync } from 'node:fs';
import { tempDir } from '../../../test/fixtures/temp-dir.js';

const CORPUS = [
  'A dog is a member of the genus Canis that has been domesticated by man since prehistoric times.',
  'The dog barked all night; the dogs of the village answered. Dogs are loyal.',
  "Fellow-Citizens of the Senate and House of Representatives: I'm glad we're here, they'll say.",
  'Subject: Re: [ILUG] cheap  hosting\n\n\tHi all,\n  does anyone know 1234567 prices?\r\n\n',
  'Unicode: naïve café, 中文字符, emoji 😀🚀, math ∑ x² — done.',
];

const SAMPLES = CORPUS.concat([
  'Completely unseen words: zyxwvut qqq, ÆØÅ, tabs\t\tand   spaces   ',
  '<|im_start|>user\nWhat does dog mean?<|im_end|>\n<|im_start|>assistant\nA dog is a canine.<|im_end|>\n<|endoftext|>',
  '',
  ' leading space and trailing newline\n',
]);

function train(vocabSize = 400) {
  return trainBpe(countPieces(Array.from({ length: 20 }, () => CORPUS).flat()), { vocabSize });
}

describe('byte-level BPE', () => {
  it('maps all 256 bytes to distinct printable characters', () => {
    const table = bytesToUnicode();
    expect(new Set(table).size).toBe(256);
    expect(table[32]).toBe('Ġ');
    expect(table[65]).toBe('A');
  });

  it('pre-tokenizes like the Llama-3 pattern', () => {
    expect(pretokenize("I'm here, 12345 times!\n\n ok")).toEqual(['I', "'m", ' here', ',', ' ', '123', '45', ' times', '!\n\n', ' ok']);
  });

  it('learns merges deterministically up to the vocab size, specials last', () => {
    const a = train();
    const b = train();
    expect(a.vocab).toEqual(b.vocab);
    expect(a.vocab.length).toBeLessThanOrEqual(400);
    expect(a.vocab.slice(-3)).toEqual(['<|endoftext|>', '<|im_start|>', '<|im_end|>']);
    expect(a.merges.length).toBe(a.vocab.length - 256 - 3);
    expect(a.vocab).toContain('Ġdog');
  });

  it('round-trips text exactly and keeps special tokens as single ids', () => {
    const tok = new BpeTokenizer(train());
    for (const s of SAMPLES) expect(tok.decode(tok.encode(s))).toBe(s);
    const ids = tok.encode('<|im_start|>user\nhi<|im_end|>');
    expect(ids[0]).toBe(tok.id('<|im_start|>'));
    expect(ids[ids.length - 1]).toBe(tok.id('<|im_end|>'));
    expect(tok.encode('the dog').length).toBeLessThan(Buffer.byteLength('the dog'));
  });

  it('writes a tokenizer.json that @huggingface/tokenizers loads and agrees with', () => {
    const model = train();
    const dir = tempDir('skein-tok-');
    const { tokenizer, config } = writeTokenizerFiles(model, dir);
    const json = JSON.parse(readFileSync(tokenizer, 'utf8'));
    const cfg = JSON.parse(readFileSync(config, 'utf8'));
    expect(json.model.type).toBe('BPE');
    const hf = new Tokenizer(json, cfg);
    const ours = new BpeTokenizer(readBpeModel(tokenizer));
    for (const s of SAMPLES) {
      const ids = hf.encode(s).ids;
      expect(ids).toEqual(ours.encode(s));
      if (ids.length) expect(hf.decode(ids, { skip_special_tokens: false })).toBe(s);
    }
    expect(hf.encode('<|endoftext|>').ids).toEqual([model.vocab.length - 3]);
    expect(hf.encode('<|im_end|>').ids).toEqual([model.vocab.length - 1]);
  });

  it('renders the ChatML chat_template like renderChat', () => {
    const cfg = hfTokenizerConfig(train());
    const messages = [
      { role: 'system' as const, content: 'Be brief.' },
      { role: 'user' as const, content: 'Hi' },
      { role: 'assistant' as const, content: 'Hello!' },
      { role: 'user' as const, content: 'What is a dog?' },
    ];
    const rendered = new Template(cfg.chat_template as string).render({ messages, add_generation_prompt: true });
    expect(rendered).toBe(renderChat(messages, true));
    expect(rendered.endsWith('<|im_end|>\n<|im_start|>assistant\n')).toBe(true);
    expect(hfTokenizerJson(train()).added_tokens).toHaveLength(3);
  });
});
