/**
 * The lexical units prompt compression drops or keeps (Selective Context's idea, in a
 * tokenizer-agnostic form): a unit is a whole word with the tokens that continue it, so
 * dropping a unit never cuts a word in half (LLMLingua issue #104, "words cut in half").
 * Also decides which tokens are forced: special tokens, the rest of a chat-template
 * header line after one (`<|im_start|>user\n`), newlines, the `keep` phrases and the
 * protected suffix. A unit holding any forced token is forced as a whole.
 *
 * A unit starts at a token whose text begins with whitespace, after a newline or a token
 * that ends in whitespace after other text, at and after a special token, and at punctuation that is not
 * joining two word characters (`don't`, `3.14`, `1801-1865`, `e-mail` stay one unit).
 *
 * @example
 * const u = lexicalUnits(tokenizer, tokenizer.encode('Hello world, again.'), { keep: ['world'] });
 * // u.starts: the first token of each unit; u.forced[i]: token i can never be dropped
 */
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';

/** What unit detection needs from a tokenizer (ModelTokenizer has it; tests may fake it). */
export type UnitTokenizer = Pick<ModelTokenizer, 'decode' | 'isSpecial' | 'idToToken'>;

export interface UnitOptions {
  /** Phrases never dropped: every token overlapping an occurrence is forced. */
  keep?: readonly string[];
  /** Tokens at the end that are never dropped (the question, the assistant header). */
  protectedSuffix?: number;
}

export interface TokenUnits {
  /** First token of each unit, ascending; starts[0] = 0 for a non-empty prompt. */
  starts: number[];
  /** Unit index of each token. */
  unitOf: Int32Array;
  /** 1 where a token may not be dropped (always whole units). */
  forced: Uint8Array;
  /** Text of each token as it appears in the decoded prompt ('' inside a multi-token character). */
  texts: string[];
}

/** A UTF-8 character is at most 4 bytes, so at most 4 byte-level tokens make one whole. */
const MAX_PIECE_TOKENS = 4;
/** A header after a special token is a role name: a few characters up to the line's end. */
const MAX_HEADER_CHARS = 32;
/** Characters that join two word characters into one word. */
const JOINERS = new Set(["'", '’', '-', '‐', '.', ',', ':', '/', '@', '_', '&']);

const isWordChar = (c: string | undefined): boolean => c !== undefined && /[\p{L}\p{N}\p{M}_]/u.test(c);
const isSpace = (c: string | undefined): boolean => c !== undefined && /\s/u.test(c);

/**
 * Each token's text, such that their concatenation is the decoded prompt. Byte-level
 * tokens that split one character decode to U+FFFD alone, so they are decoded together
 * (the text goes to the first of them); SentencePiece's '▁' prefix loses its space when a
 * token is decoded alone, so it is put back.
 */
export function tokenTexts(tokenizer: UnitTokenizer, ids: readonly number[]): string[] {
  const texts: string[] = new Array(ids.length).fill('');
  for (let i = 0; i < ids.length; ) {
    if (tokenizer.isSpecial(ids[i]!)) {
      texts[i] = tokenizer.decode([ids[i]!]);
      i++;
      continue;
    }
    let n = 1;
    let text = tokenizer.decode(ids.slice(i, i + 1));
    while (text.endsWith('\uFFFD') && n < MAX_PIECE_TOKENS && i + n < ids.length && !tokenizer.isSpecial(ids[i + n]!)) {
      n++;
      text = tokenizer.decode(ids.slice(i, i + n));
    }
    // An incomplete character at the very end stays as it is (it decodes the same in context).
    if (text.endsWith('\uFFFD')) {
      n = 1;
      text = tokenizer.decode(ids.slice(i, i + 1));
    }
    if (tokenizer.idToToken(ids[i]!)?.startsWith('▁') && !text.startsWith(' ')) text = ' ' + text;
    texts[i] = text;
    i += n;
  }
  return texts;
}

/** Whether a unit starts at token i; `pieceStart[i]` is false inside a multi-token character. */
function startsUnit(i: number, texts: string[], special: boolean[], pieceStart: boolean[]): boolean {
  if (i === 0) return true;
  if (!pieceStart[i]) return false;
  if (special[i] || special[i - 1]) return true;
  const cur = texts[i]!;
  let p = i - 1;
  while (p > 0 && texts[p] === '') p--;
  const prev = texts[p]!;
  const first = cur[0];
  if (isSpace(first)) return true;
  // After whitespace a new unit starts, except after bare spaces: tokenizers that split the
  // space from its word ('Ġ', 'gamma') must not let the space and the word part.
  if (isSpace(prev[prev.length - 1]) && (prev.includes('\n') || /\S/u.test(prev))) return true;
  if (isWordChar(first)) return false;
  // Punctuation: a joiner between two word characters continues the word.
  if (JOINERS.has(first!) && isWordChar(prev[prev.length - 1])) {
    let next = cur[1];
    if (next === undefined) {
      let q = i + 1;
      while (q < texts.length && texts[q] === '') q++;
      next = texts[q]?.[0];
    }
    if (isWordChar(next)) return false;
  }
  return true;
}

export function lexicalUnits(tokenizer: UnitTokenizer, ids: readonly number[], options: UnitOptions = {}): TokenUnits {
  const n = ids.length;
  const texts = tokenTexts(tokenizer, ids);
  const special = ids.map((id) => tokenizer.isSpecial(id));
  const pieceStart = texts.map((t, i) => t !== '' || special[i]!);
  const starts: number[] = [];
  const unitOf = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    if (startsUnit(i, texts, special, pieceStart)) starts.push(i);
    unitOf[i] = starts.length - 1;
  }

  const forced = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (special[i]) {
      forced[i] = 1;
      // A chat header: the short rest of the line after a special token (role name, '\n').
      let end = -1;
      for (let j = i + 1, chars = 0; j < n && chars <= MAX_HEADER_CHARS; chars += texts[j]!.length, j++) {
        if (special[j]) {
          end = j - 1;
          break;
        }
        if (texts[j]!.includes('\n')) {
          end = j;
          break;
        }
      }
      for (let j = i + 1; j <= end; j++) forced[j] = 1;
    } else if (texts[i]!.includes('\n')) forced[i] = 1;
  }
  if (options.keep?.length) {
    const offsets = new Int32Array(n + 1);
    for (let i = 0; i < n; i++) offsets[i + 1] = offsets[i]! + texts[i]!.length;
    const full = texts.join('');
    for (const phrase of options.keep) {
      if (phrase.length === 0) continue;
      for (let at = full.indexOf(phrase); at >= 0; at = full.indexOf(phrase, at + 1)) {
        const end = at + phrase.length;
        // Tokens overlapping [at, end); the rest of a multi-token character shares its unit.
        for (let i = 0; i < n; i++) if (offsets[i]! < end && offsets[i + 1]! > at) forced[i] = 1;
      }
    }
  }
  const suffix = Math.min(Math.max(0, Math.floor(options.protectedSuffix ?? 0)), n);
  for (let i = n - suffix; i < n; i++) forced[i] = 1;

  // Whole units: a unit with a forced token is forced entirely.
  const unitForced = new Uint8Array(starts.length);
  for (let i = 0; i < n; i++) if (forced[i]) unitForced[unitOf[i]!] = 1;
  for (let i = 0; i < n; i++) forced[i] = unitForced[unitOf[i]!]!;
  return { starts, unitOf, forced, texts };
}
