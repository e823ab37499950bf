/**
 * Token ids as log-probabilities name them: the text and exact bytes of each id alone.
 * Byte-level BPE vocabularies (SmolLM2, skein-mini) map each character of a token to one
 * byte, so a token that holds half a UTF-8 character has those bytes and shows U+FFFD in
 * its text; special tokens are their literal text; other vocabularies (SentencePiece) use
 * the UTF-8 of the id decoded alone. Looked-up pieces are kept: a response names the same
 * few hundred ids again and again.
 *
 * @example
 * const pieces = new TokenPieces(tokenizer);
 * pieces.of(42, -0.1); // { id: 42, token: ' the', bytes: [32, 116, 104, 101], logprob: -0.1 }
 */
import type { TokenLogprob } from '../../core/engine.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { byteLevelBytes } from '../grammar/vocabulary.js';

const UTF8_OUT = new TextEncoder();
const UTF8_IN = new TextDecoder('utf-8');

export class TokenPieces {
  private readonly cache = new Map<number, { token: string; bytes: number[] }>();

  constructor(private readonly tokenizer: ModelTokenizer) {}

  of(id: number, logprob: number): TokenLogprob {
    let piece = this.cache.get(id);
    if (piece === undefined) {
      piece = this.lookUp(id);
      this.cache.set(id, piece);
    }
    return { id, token: piece.token, bytes: piece.bytes.slice(), logprob };
  }

  private lookUp(id: number): { token: string; bytes: number[] } {
    const raw = this.tokenizer.idToToken(id);
    if (raw !== undefined && this.tokenizer.isSpecial(id)) return { token: raw, bytes: [...UTF8_OUT.encode(raw)] };
    const bytes = (raw !== undefined ? byteLevelBytes(raw) : undefined) ?? UTF8_OUT.encode(this.tokenizer.decode([id], { skipSpecialTokens: false }));
    return { token: UTF8_IN.decode(bytes), bytes: [...bytes] };
  }
}
