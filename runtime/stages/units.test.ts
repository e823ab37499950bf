import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempCheckpoint, TINY_SPECIAL_TOKENS } from '../../test/fixtures/checkpoints.js';
import { loadTokenizer } from '../checkpoint/load.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { lexicalUnits, tokenTexts } from './units.js';

let tok: ModelTokenizer;
let cleanup: () => void;
beforeAll(() => {
  const ck = makeTempCheckpoint();
  cleanup = ck.cleanup;
  tok = loadTokenizer(ck.dir);
});
afterAll(() => cleanup());

/** The text of each unit, for readable assertions. */
function unitTexts(text: string, options: Parameters<typeof lexicalUnits>[2] = {}): { units: string[]; forced: string[] } {
  const ids = tok.encode(text);
  const u = lexicalUnits(tok, ids, options);
  const units = u.starts.map((s, k) => tok.decode(ids.slice(s, u.starts[k + 1] ?? ids.length)));
  const forced = u.starts.filter((s) => u.forced[s]).map((s) => units[u.starts.indexOf(s)]!);
  return { units, forced };
}

describe('tokenTexts', () => {
  it('concatenates to the decoded prompt, multi-byte characters included', () => {
    const text = 'Café — naïve 日本 test.\nNext line';
    const ids = tok.encode(text);
    expect(tokenTexts(tok, ids).join('')).toBe(tok.decode(ids));
    // The byte-level tiny tokenizer splits 'é' into two tokens: one carries the text.
    expect(tokenTexts(tok, ids).some((t) => t === '')).toBe(true);
  });
});

describe('lexicalUnits', () => {
  it('cuts at spaces and free punctuation, never inside a word', () => {
    expect(unitTexts('Hello world, is the sky blue?').units).toEqual(['Hello', ' world', ',', ' is', ' the', ' sky', ' blue', '?']);
  });

  it("keeps word-internal joiners in the word: don't, 3.14, 1801-1865, e-mail", () => {
    expect(unitTexts("I don't know 3.14 or 1801-1865 by e-mail.").units).toEqual([
      'I', " don't", ' know', ' 3.14', ' or', ' 1801-1865', ' by', ' e-mail', '.',
    ]);
  });

  it('a multi-byte character stays inside its word', () => {
    expect(unitTexts('un café noir').units).toEqual(['un', ' café', ' noir']);
  });

  it('forces special tokens, the chat header after them and newlines', () => {
    const text = tok.renderChat([{ role: 'user', content: 'Say hello\nplease' }]);
    const ids = tok.encode(text);
    const u = lexicalUnits(tok, ids);
    for (let i = 0; i < ids.length; i++) {
      if (tok.isSpecial(ids[i]!)) expect(u.forced[i]).toBe(1);
    }
    const forcedText = ids.filter((_, i) => u.forced[i]).map((id) => tok.decode([id])).join('');
    expect(forcedText).toContain('<|im_start|>user\n');
    expect(forcedText).toContain('<|im_end|>\n<|im_start|>assistant\n');
    // Words of the message are droppable.
    const sayAt = tokenTexts(tok, ids).indexOf('S');
    expect(u.forced[sayAt]).toBe(0);
    expect(ids).toContain(TINY_SPECIAL_TOKENS.imStart);
  });

  it('forces keep phrases as whole units, even when the phrase starts mid-word', () => {
    const { forced } = unitTexts('The code word is gentlefolk and more words follow', { keep: ['word is gentle'] });
    expect(forced).toEqual([' word', ' is', ' gentlefolk']);
  });

  it('widens the protected suffix to whole units', () => {
    const ids = tok.encode('alpha beta gamma');
    const u = lexicalUnits(tok, ids, { protectedSuffix: 2 });
    const forced = tok.decode(ids.filter((_, i) => u.forced[i]));
    expect(forced).toBe(' gamma');
  });

  it("puts back SentencePiece's space, which a token decoded alone loses", () => {
    const pieces = ['▁The', '▁sec', 'ret', '▁number', '.'];
    const fake = {
      decode: (ids: number[]) => ids.map((i) => pieces[i]!).join('').replace(/▁/g, ' ').replace(/^ /, ''),
      isSpecial: () => false,
      idToToken: (id: number) => pieces[id],
    };
    const u = lexicalUnits(fake, [0, 1, 2, 3, 4]);
    expect(u.starts).toEqual([0, 1, 3, 4]);
  });
});
