/**
 * A compiled constraint over one vocabulary: the lazy character DFA plus, per DFA state,
 * the bitset of token ids that keep the output matchable (computed the first time a
 * sequence reaches the state, then cached for every later sequence with the same
 * grammar). End-of-sequence ids are allowed exactly in accepting states. A GrammarCursor
 * is one sequence's position in it: it masks that sequence's logits before sampling, so
 * temperature, top-k and top-p apply to the allowed tokens only, and greedy stays
 * deterministic.
 *
 * @example
 * const grammar = new TokenGrammar(new LazyDfa(compileNfa(rx)), vocab);
 * const cursor = grammar.cursor();
 * cursor.maskLogits(logits); const id = argmax(logits); const done = cursor.accept(id);
 */
import { GrammarError } from '../../core/errors.js';
import { DEAD, type LazyDfa } from './automaton.js';
import type { TokenVocabulary } from './vocabulary.js';

export class TokenGrammar {
  private readonly masks = new Map<number, Uint32Array>();
  /** Time spent building masks, for the bench's cost report. */
  buildMs = 0;

  constructor(readonly dfa: LazyDfa, readonly vocab: TokenVocabulary) {}

  get cachedStates(): number {
    return this.masks.size;
  }

  cursor(): GrammarCursor {
    return new GrammarCursor(this);
  }

  /** Bit i set: token i may come next in this state. */
  mask(state: number): Uint32Array {
    const known = this.masks.get(state);
    if (known) return known;
    const t0 = performance.now();
    const mask = this.buildMask(state);
    this.buildMs += performance.now() - t0;
    this.masks.set(state, mask);
    return mask;
  }

  /** The state after token `id` (DEAD when it would break the constraint). */
  next(state: number, id: number): number {
    const bytes = this.vocab.bytes(id);
    return bytes === null ? DEAD : this.dfa.walkBytes(state, bytes);
  }

  isEos(id: number): boolean {
    return this.vocab.eosIds.includes(id);
  }

  private buildMask(state: number): Uint32Array {
    const { sorted, flat, offset, lcp, size } = this.vocab;
    const dfa = this.dfa;
    const mask = new Uint32Array(Math.ceil(size / 32));
    // stack[d]: the state after the first d code points of the current token.
    const stack = new Int32Array(this.vocab.maxLength + 1);
    stack[0] = state;
    // Depth up to which `stack` holds the current token's prefix.
    let valid = 0;
    let i = 0;
    const n = sorted.length;
    while (i < n) {
      const start = offset[i]!;
      const len = offset[i + 1]! - start;
      let k = Math.min(lcp[i]!, valid);
      let s = stack[k]!;
      for (; k < len; k++) {
        s = dfa.step(s, flat[start + k]!);
        if (s === DEAD) break;
        stack[k + 1] = s;
      }
      i++;
      if (k === len) {
        const id = sorted[i - 1]!;
        mask[id >>> 5]! |= 1 << (id & 31);
        valid = len;
        continue;
      }
      // Every following token that shares the first k+1 code points dies at the same place.
      valid = k;
      while (i < n && lcp[i]! > k) i++;
    }
    if (dfa.accepting(state)) for (const id of this.vocab.eosIds) if (id < size) mask[id >>> 5]! |= 1 << (id & 31);
    return mask;
  }
}

/** One sequence's position in a grammar (what the scheduler calls a SequenceConstraint). */
export class GrammarCursor {
  private state: number;
  private finished = false;
  /** The output so far, for error messages. */
  private readonly ids: number[] = [];

  constructor(private readonly grammar: TokenGrammar) {
    this.state = grammar.dfa.start;
  }

  /** A copy at the same place, moved independently (speculative decoding looks ahead with it). */
  fork(): GrammarCursor {
    const copy = new GrammarCursor(this.grammar);
    copy.state = this.state;
    copy.finished = this.finished;
    copy.ids.push(...this.ids);
    return copy;
  }

  /** Whether the output so far is a complete match. */
  get accepting(): boolean {
    return this.grammar.dfa.accepting(this.state);
  }

  /** Sets every token the constraint forbids here to -Infinity, in place. */
  maskLogits(logits: Float32Array): void {
    const mask = this.grammar.mask(this.state);
    let allowed = 0;
    const n = Math.min(logits.length, this.grammar.vocab.size);
    for (let w = 0; w < mask.length; w++) {
      const bits = mask[w]!;
      const base = w << 5;
      if (bits === 0) {
        logits.fill(-Infinity, base, Math.min(base + 32, n));
        continue;
      }
      allowed++;
      if (bits === 0xffffffff) continue;
      for (let b = 0; b < 32 && base + b < n; b++) if ((bits & (1 << b)) === 0) logits[base + b] = -Infinity;
    }
    // Ids past the tokenizer's vocabulary (a padded embedding) are never valid output.
    if (logits.length > n) logits.fill(-Infinity, n);
    if (allowed === 0) {
      throw new GrammarError('', `no token of the vocabulary can continue the output after ${JSON.stringify(this.text())}`);
    }
  }

  private text(): string {
    return this.ids.map((id) => this.grammar.vocab.text(id)).join('');
  }

  /**
   * Moves past the chosen token. Returns true when the output is complete: an end-of-sequence
   * token, or a match that nothing may extend.
   */
  accept(id: number): boolean {
    if (this.finished) return true;
    if (this.grammar.isEos(id)) {
      if (!this.accepting) throw new GrammarError('', `end of sequence before the output was complete`);
      this.finished = true;
      return true;
    }
    const next = this.grammar.next(this.state, id);
    if (next === DEAD) throw new GrammarError('', `token ${id} (${JSON.stringify(this.grammar.vocab.text(id))}) breaks the constraint`);
    this.state = next;
    this.ids.push(id);
    this.finished = this.grammar.dfa.accepting(next) && !this.grammar.dfa.canContinue(next);
    return this.finished;
  }
}
