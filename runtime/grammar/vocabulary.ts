/**
 * The model's vocabulary as the token mask walks it: each token id's bytes, and the
 * tokens sorted by bytes with the length of the prefix each shares with the one before
 * (an implicit trie). Walking the sorted list with a stack of automaton states per
 * prefix depth visits every trie node once and skips a whole subtree when its prefix
 * dies, without building a 100k-node tree of objects.
 *
 * A token's bytes are exact for byte-level BPE (GPT-2's byte↦character table, used by
 * SmolLM2 and skein-mini), half characters included; other tokenizers fall back to the
 * UTF-8 of the id decoded alone. Special tokens and empty tokens have no bytes: a
 * constraint never allows them, and allows end-of-sequence only in accepting states.
 *
 * @example
 * const vocab = TokenVocabulary.fromTokenizer(tokenizer, model.config.vocabSize);
 * vocab.text(42); // e.g. ' the'
 */
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';

/** GPT-2's bytes_to_unicode, inverted: the byte each character of a byte-level vocabulary stands for. */
function byteOfChar(): Map<number, number> {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const map = new Map<number, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(printable(b) ? b : 256 + extra++, b);
  return map;
}

const BYTE_OF_CHAR = byteOfChar();
const UTF8_OUT = new TextEncoder();
const UTF8_IN = new TextDecoder('utf-8');

/** A byte-level token's bytes, or undefined when it holds a character outside the byte table. */
export function byteLevelBytes(token: string): Uint8Array | undefined {
  const raw: number[] = [];
  for (const c of token) {
    const b = BYTE_OF_CHAR.get(c.codePointAt(0)!);
    if (b === undefined) return undefined;
    raw.push(b);
  }
  return Uint8Array.from(raw);
}

export class TokenVocabulary {
  /** Logit row length: the model's vocabulary (it may be padded past the tokenizer's). */
  readonly size: number;
  readonly eosIds: readonly number[];
  private readonly bytesOf: (Uint8Array | null)[];
  /** Ids with bytes, sorted by them. */
  readonly sorted: Int32Array;
  /** Bytes of all sorted tokens, back to back: token i is flat[offset[i]] .. flat[offset[i + 1]]. */
  readonly flat: Uint8Array;
  readonly offset: Int32Array;
  /** lcp[i]: bytes sorted token i shares with sorted token i-1 (0 for the first). */
  readonly lcp: Int32Array;
  readonly maxLength: number;

  constructor(bytes: (Uint8Array | null)[], size: number, eosIds: readonly number[]) {
    this.size = size;
    this.eosIds = eosIds;
    this.bytesOf = bytes;
    const entries: { id: number; b: Uint8Array }[] = [];
    bytes.forEach((b, id) => {
      if (b !== null && b.length > 0 && id < size) entries.push({ id, b });
    });
    entries.sort((x, y) => {
      const n = Math.min(x.b.length, y.b.length);
      for (let i = 0; i < n; i++) if (x.b[i] !== y.b[i]) return x.b[i]! - y.b[i]!;
      return x.b.length - y.b.length;
    });
    this.sorted = Int32Array.from(entries.map((e) => e.id));
    this.offset = new Int32Array(entries.length + 1);
    entries.forEach((e, i) => (this.offset[i + 1] = this.offset[i]! + e.b.length));
    this.flat = new Uint8Array(this.offset[entries.length]!);
    entries.forEach((e, i) => this.flat.set(e.b, this.offset[i]!));
    this.lcp = new Int32Array(entries.length);
    let maxLength = 0;
    for (let i = 0; i < entries.length; i++) {
      const cur = entries[i]!.b;
      maxLength = Math.max(maxLength, cur.length);
      if (i === 0) continue;
      const prev = entries[i - 1]!.b;
      let l = 0;
      while (l < cur.length && l < prev.length && cur[l] === prev[l]) l++;
      this.lcp[i] = l;
    }
    this.maxLength = maxLength;
  }

  /** The token's bytes, or null when a constraint may never emit it. */
  bytes(id: number): Uint8Array | null {
    return this.bytesOf[id] ?? null;
  }

  /** The token's text (a half character shows as U+FFFD), or null. */
  text(id: number): string | null {
    const b = this.bytes(id);
    return b === null ? null : UTF8_IN.decode(b);
  }

  static fromTokenizer(tokenizer: ModelTokenizer, size: number): TokenVocabulary {
    const out: (Uint8Array | null)[] = [];
    for (let id = 0; id < Math.min(size, tokenizer.vocabSize); id++) {
      const token = tokenizer.idToToken(id);
      if (token === undefined || tokenizer.isSpecial(id)) {
        out.push(null);
        continue;
      }
      // Not a byte-level vocabulary: the UTF-8 of the id decoded alone.
      out.push(byteLevelBytes(token) ?? UTF8_OUT.encode(tokenizer.decode([id], { skipSpecialTokens: true })));
    }
    return new TokenVocabulary(out, size, tokenizer.eosIds);
  }

  /** From a GGUF's byte-level token list (tokenizer.ggml.tokens / token_type): only normal tokens (type 1). */
  static fromGgufTokens(tokens: readonly string[], types: readonly number[], eosIds: readonly number[]): TokenVocabulary {
    return new TokenVocabulary(
      tokens.map((t, id) => (types[id] === 1 ? (byteLevelBytes(t) ?? null) : null)),
      tokens.length,
      eosIds,
    );
  }
}
