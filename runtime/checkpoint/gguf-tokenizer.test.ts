import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TOKEN_TYPE } from '../../test/fixtures/gguf-checkpoints.js';
import { arr, f32, u32, writeGguf, type MetaValue } from './gguf-writer.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { mulberry32 } from '../model/random.js';
import { GgufFile, GgufValueType } from './gguf.js';
import { ggufTokenizer, mergesFromScores } from './gguf-tokenizer.js';
import type { ModelTokenizer } from './tokenizer.js';

const dir = tempDir('skein-gguf-tok-');
let n = 0;

function tokenizerOf(metadata: Record<string, MetaValue>): ModelTokenizer {
  const file = path.join(dir, `t${n++}.gguf`);
  writeGguf(file, { metadata: { 'general.architecture': 'llama', ...metadata }, tensors: [] });
  return GgufFile.inspect(file, ggufTokenizer);
}

/** GPT-2's byte → printable character map (byte-level BPE alphabet). */
function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : next++));
}

describe('gpt2 vocabularies: the pre-tokenizer follows tokenizer.ggml.pre', () => {
  // Bytes, then merges that build "123", "45" and "ab"; "xyz" is a token no merge makes.
  const tokens = [...byteChars(), '12', '123', '45', 'ab', 'xyz', '<|end|>'];
  const types = tokens.map((t) => (t === '<|end|>' ? TOKEN_TYPE.control : TOKEN_TYPE.normal));
  const gpt2 = (pre: string | null) =>
    tokenizerOf({
      'tokenizer.ggml.model': 'gpt2',
      ...(pre === null ? {} : { 'tokenizer.ggml.pre': pre }),
      'tokenizer.ggml.tokens': tokens,
      'tokenizer.ggml.token_type': arr(GgufValueType.INT32, types),
      'tokenizer.ggml.merges': ['1 2', '12 3', '4 5', 'a b'],
      'tokenizer.ggml.eos_token_id': u32(tokens.indexOf('<|end|>')),
    });
  const pieces = (tok: ModelTokenizer, text: string) => tok.encode(text).map((id) => tok.idToToken(id));

  it('gpt-2: digit runs stay whole, then merge', () => {
    expect(pieces(gpt2('gpt-2'), '12345')).toEqual(['123', '45']);
    expect(pieces(gpt2('gpt-2'), 'xyz')).toEqual(['x', 'y', 'z']);
  });
  it('smollm and qwen2: every digit alone', () => {
    expect(pieces(gpt2('smollm'), '12345 ab')).toEqual(['1', '2', '3', '4', '5', 'Ġ', 'ab']);
    expect(pieces(gpt2('qwen2'), '12345')).toEqual(['1', '2', '3', '4', '5']);
  });
  it('llama-bpe: digits in threes, and a whole pre-token found in the vocabulary wins (ignore_merges)', () => {
    expect(pieces(gpt2('llama-bpe'), '12345')).toEqual(['123', '45']);
    expect(pieces(gpt2('llama-bpe'), '1234')).toEqual(['123', '4']);
    expect(pieces(gpt2('llama-bpe'), 'xyz')).toEqual(['xyz']);
  });
  it('default (no tokenizer.ggml.pre): llama.cpp\'s default regex list', () => {
    expect(pieces(gpt2(null), '12345')).toEqual(['123', '45']);
    expect(pieces(gpt2(null), 'ab!!')).toEqual(['ab', '!', '!']);
  });
  it('control tokens are special added tokens; eos comes from metadata', () => {
    const tok = gpt2('gpt-2');
    const end = tokens.indexOf('<|end|>');
    expect(tok.encode('ab<|end|>')).toEqual([tokens.indexOf('ab'), end]);
    expect(tok.isSpecial(end)).toBe(true);
    expect(tok.eosIds).toEqual([end]);
    expect(tok.decode([tokens.indexOf('ab'), end], { skipSpecialTokens: true })).toBe('ab');
    expect(tok.addBos).toBe(false);
  });
  it('an unknown pre-tokenizer is refused, naming the supported ones', () => {
    expect(() => gpt2('mystery')).toThrow(/unsupported tokenizer.ggml.pre "mystery" \(supported: default, gpt-2, .*smollm.*llama-bpe.*qwen2/);
  });
});

describe('llama (SentencePiece) vocabularies', () => {
  const bytes = Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const words = ['▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd', 'a', '▁h', 'll', '▁he', 'llo', '▁hello', '▁w', 'or', '▁wor', 'ld', '▁world', 'aa', 'aaa'];
  const tokens = ['<unk>', '<s>', '</s>', ...bytes, ...words];
  const types = tokens.map((t, i) => (i === 0 ? TOKEN_TYPE.unknown : i < 3 ? TOKEN_TYPE.control : i < 259 ? TOKEN_TYPE.byte : TOKEN_TYPE.normal));
  // Longer pieces score higher, as in real SentencePiece models; single letters lowest.
  const scores = tokens.map((t, i) => (i < 259 ? 0 : -100 + 10 * [...t].length - (i % 7) * 0.1));
  const meta = (extra: Record<string, MetaValue> = {}): Record<string, MetaValue> => ({
    'tokenizer.ggml.model': 'llama',
    'tokenizer.ggml.tokens': tokens,
    'tokenizer.ggml.scores': arr(GgufValueType.FLOAT32, scores),
    'tokenizer.ggml.token_type': arr(GgufValueType.INT32, types),
    'tokenizer.ggml.bos_token_id': u32(1),
    'tokenizer.ggml.eos_token_id': u32(2),
    'tokenizer.ggml.unknown_token_id': u32(0),
    ...extra,
  });
  const id = (t: string) => tokens.indexOf(t);

  it('prefixes a space, merges by score, falls back to bytes, adds bos to prompts', () => {
    const tok = tokenizerOf(meta());
    expect(tok.encode('hello world')).toEqual([id('▁hello'), id('▁world')]);
    // é is not in the vocabulary: its UTF-8 bytes C3 A9.
    expect(tok.encode('hé')).toEqual([id('▁h'), id('<0xC3>'), id('<0xA9>')]);
    expect(tok.decode(tok.encode('hello world'))).toBe('hello world');
    expect(tok.decode(tok.encode('hé wor'))).toBe('hé wor');
    expect(tok.addBos).toBe(true);
    expect(tok.encodePrompt('hello')).toEqual([1, id('▁hello')]);
    // A template that writes <s> itself does not get a second one.
    expect(tok.encodePrompt('<s>hello')).toEqual([1, id('▁hello')]);
    expect(tok.isSpecial(1)).toBe(true);
    expect(tok.eosIds).toEqual([2]);
  });

  it('add_space_prefix false and add_bos_token false are honoured', () => {
    const tok = tokenizerOf(meta({ 'tokenizer.ggml.add_space_prefix': false, 'tokenizer.ggml.add_bos_token': false }));
    expect(tok.encode('hello')).toEqual([id('h'), id('e'), id('llo')]);
    expect(tok.encodePrompt('hello')).toEqual([id('h'), id('e'), id('llo')]);
    expect(tok.decode([id('▁hello'), id('▁world')])).toBe(' hello world');
  });

  it('BPE over score-ranked merges equals llama.cpp\'s greedy best-score merging', () => {
    const tok = tokenizerOf(meta());
    const vocab = new Map(tokens.map((t, i) => [t, i] as const));
    /** llama.cpp's SPM loop: merge the adjacent pair with the best-scoring concatenation (leftmost on ties). */
    const greedy = (text: string): number[] => {
      const sym = [...('▁' + text.replaceAll(' ', '▁'))];
      for (;;) {
        let best = -1;
        for (let i = 0; i + 1 < sym.length; i++) {
          const j = vocab.get(sym[i]! + sym[i + 1]!);
          if (j !== undefined && (best < 0 || scores[j]! > scores[vocab.get(sym[best]! + sym[best + 1]!)!]!)) best = i;
        }
        if (best < 0) break;
        sym.splice(best, 2, sym[best]! + sym[best + 1]!);
      }
      return sym.flatMap((s) => (vocab.has(s) ? [vocab.get(s)!] : [...Buffer.from(s, 'utf8')].map((b) => 3 + b)));
    };
    const rand = mulberry32(7);
    const alphabet = 'helowrda ';
    for (let k = 0; k < 200; k++) {
      const len = 1 + Math.floor(rand() * 12);
      const text = Array.from({ length: len }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
      expect(tok.encode(text), JSON.stringify(text)).toEqual(greedy(text));
    }
  });

  it('mergesFromScores ranks pairs by the merged token\'s score', () => {
    const merges = mergesFromScores(['a', 'b', 'ab', 'abb', 'bb'], [0, 0, -1, -0.5, -2], null);
    // abb (-0.5) splits two ways, ordered by the pieces' ids; then ab (-1), then bb (-2).
    expect(merges).toEqual([['a', 'bb'], ['ab', 'b'], ['a', 'b'], ['b', 'b']]);
  });

  it('a llama vocabulary needs scores', () => {
    expect(() => tokenizerOf({ ...meta(), 'tokenizer.ggml.scores': f32(0) })).toThrow(/tokenizer.ggml.scores is not an array/);
  });
});

describe('bad tokenizer metadata', () => {
  it('names what is missing or wrong', () => {
    expect(() => tokenizerOf({ 'tokenizer.ggml.model': 'gpt2' })).toThrow(/missing metadata tokenizer.ggml.tokens/);
    expect(() => tokenizerOf({ 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['a'] })).toThrow(/unsupported tokenizer.ggml.model "bert" \(supported: gpt2, llama\)/);
    expect(() => tokenizerOf({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'] })).toThrow(/missing metadata tokenizer.ggml.merges/);
    expect(() =>
      tokenizerOf({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'], 'tokenizer.ggml.merges': [], 'tokenizer.ggml.eos_token_id': u32(5) }),
    ).toThrow(/tokenizer.ggml.eos_token_id = 5 is outside the 1-token vocabulary/);
    expect(() =>
      tokenizerOf({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a', 'b'], 'tokenizer.ggml.token_type': arr(GgufValueType.INT32, [1]), 'tokenizer.ggml.merges': [] }),
    ).toThrow(/tokenizer.ggml.token_type has 1 entries but there are 2 tokens/);
  });
});
