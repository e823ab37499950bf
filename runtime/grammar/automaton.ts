/**
 * From a regex tree (rx.ts) to an automaton over UTF-8 bytes: a Thompson NFA whose
 * character classes are spelled out as UTF-8 byte sequences, determinised lazily. Bytes,
 * not characters, because byte-level BPE tokens may hold half a character: such a token
 * is allowed when some completion of its bytes is. A DFA state is an epsilon-closed set
 * of NFA states, built the first time decoding reaches it; each of its 256 byte
 * transitions is memoised on first use. Eager subset construction could blow up on
 * schemas with many optional properties or `anyOf` arms; decoding only ever visits a thin
 * slice of the states, so it builds only those.
 *
 * Written here rather than taken from a library: refa (the maintained JS regex→DFA
 * library) determinises eagerly and works on whole character sets, while the token mask
 * wants single-code-point steps on a lazily built DFA with a per-state memo.
 *
 * @example
 * const dfa = new LazyDfa(compileNfa(lit('ok')));
 * dfa.accepting(dfa.walk(dfa.start, 'ok')); // true
 */
import { GrammarError } from '../../core/errors.js';
import type { Rx } from './rx.js';

/** Past this many NFA states a grammar is refused: bounded repeats multiply states. */
export const MAX_NFA_STATES = 400_000;

/** A move on one byte in [lo, hi]. */
export interface ByteMove {
  lo: number;
  hi: number;
  to: number;
}

export interface Nfa {
  /** Epsilon moves per state. */
  eps: number[][];
  /** Byte moves per state. */
  moves: ByteMove[][];
  start: number;
  accept: number;
}

export function compileNfa(rx: Rx): Nfa {
  const eps: number[][] = [];
  const moves: ByteMove[][] = [];
  const newState = (): number => {
    if (eps.length >= MAX_NFA_STATES) {
      throw new GrammarError('', `the grammar is too large (over ${MAX_NFA_STATES} automaton states); lower maxLength/maxItems bounds`);
    }
    eps.push([]);
    moves.push([]);
    return eps.length - 1;
  };
  // Builds `node` from state `from` and returns the state where it ends.
  const build = (node: Rx, from: number): number => {
    switch (node.t) {
      case 'set': {
        const to = newState();
        for (let i = 0; i < node.ranges.length; i += 2) {
          for (const bytes of utf8Sequences(node.ranges[i]!, node.ranges[i + 1]!)) {
            let s = from;
            bytes.forEach(([lo, hi], j) => {
              const next = j === bytes.length - 1 ? to : newState();
              moves[s]!.push({ lo, hi, to: next });
              s = next;
            });
          }
        }
        return to;
      }
      case 'seq':
        return node.items.reduce((s, item) => build(item, s), from);
      case 'alt': {
        const end = newState();
        for (const item of node.items) {
          const s = newState();
          eps[from]!.push(s);
          eps[build(item, s)]!.push(end);
        }
        return end;
      }
      case 'rep': {
        let s = from;
        for (let i = 0; i < node.min; i++) s = build(node.item, s);
        if (node.max === Infinity) {
          const loop = newState();
          eps[s]!.push(loop);
          eps[build(node.item, loop)]!.push(loop);
          return loop;
        }
        // Optional copies: each may be skipped straight to the end.
        const end = newState();
        for (let i = node.min; i < node.max; i++) {
          eps[s]!.push(end);
          s = build(node.item, s);
        }
        eps[s]!.push(end);
        return end;
      }
      default: {
        const never: never = node;
        throw new Error(`unknown regex node ${JSON.stringify(never)}`);
      }
    }
  };
  const start = newState();
  const accept = build(rx, start);
  return { eps, moves, start, accept };
}

/**
 * The code points lo..hi as UTF-8 byte-range sequences (each sequence: one [lo, hi]
 * byte range per byte), surrogates left out: the split Russ Cox describes for RE2 —
 * cut at encoded-length boundaries, then until every continuation byte spans a whole
 * aligned block.
 */
export function utf8Sequences(lo: number, hi: number): [number, number][][] {
  if (lo > hi) return [];
  if (lo <= 0xdfff && hi >= 0xd800) {
    return [...utf8Sequences(lo, Math.min(hi, 0xd7ff)), ...utf8Sequences(Math.max(lo, 0xe000), hi)];
  }
  for (const max of [0x7f, 0x7ff, 0xffff]) {
    if (lo <= max && max < hi) return [...utf8Sequences(lo, max), ...utf8Sequences(max + 1, hi)];
  }
  if (hi <= 0x7f) return [[[lo, hi]]];
  for (let i = 1; i < 4; i++) {
    const m = (1 << (6 * i)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) return [...utf8Sequences(lo, lo | m), ...utf8Sequences((lo | m) + 1, hi)];
      if ((hi & m) !== m) return [...utf8Sequences(lo, (hi & ~m) - 1), ...utf8Sequences(hi & ~m, hi)];
    }
  }
  const a = utf8Bytes(lo);
  const b = utf8Bytes(hi);
  return [a.map((x, i) => [x, b[i]!] as [number, number])];
}

function utf8Bytes(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
}

/** No state: the input so far can no longer match. */
export const DEAD = -1;
/** Marks a transition not yet computed. */
const UNKNOWN = -2;

interface DfaState {
  nfa: Int32Array;
  accepting: boolean;
  /** Any byte move out: false means the match is complete and nothing may follow. */
  canContinue: boolean;
  /** Next state per byte (UNKNOWN until first used). */
  next: Int32Array;
}

const UTF8 = new TextEncoder();

export class LazyDfa {
  readonly start: number;
  private readonly states: DfaState[] = [];
  private readonly byKey = new Map<string, number>();

  constructor(private readonly nfa: Nfa) {
    this.start = this.intern(this.closure([nfa.start]));
  }

  get size(): number {
    return this.states.length;
  }

  accepting(state: number): boolean {
    return state !== DEAD && this.states[state]!.accepting;
  }

  canContinue(state: number): boolean {
    return state !== DEAD && this.states[state]!.canContinue;
  }

  step(state: number, byte: number): number {
    if (state === DEAD) return DEAD;
    const s = this.states[state]!;
    const known = s.next[byte]!;
    if (known !== UNKNOWN) return known;
    return (s.next[byte] = this.computeStep(s, byte));
  }

  walkBytes(state: number, bytes: Uint8Array): number {
    for (let i = 0; i < bytes.length && state !== DEAD; i++) state = this.step(state, bytes[i]!);
    return state;
  }

  /** The state after a whole string, UTF-8 encoded (DEAD once it cannot match). */
  walk(state: number, text: string): number {
    return this.walkBytes(state, UTF8.encode(text));
  }

  private computeStep(s: DfaState, byte: number): number {
    const targets: number[] = [];
    for (const q of s.nfa) for (const m of this.nfa.moves[q]!) if (byte >= m.lo && byte <= m.hi) targets.push(m.to);
    return targets.length === 0 ? DEAD : this.intern(this.closure(targets));
  }

  private closure(seeds: number[]): Int32Array {
    const seen = new Set<number>(seeds);
    const stack = [...seeds];
    while (stack.length > 0) {
      for (const next of this.nfa.eps[stack.pop()!]!) {
        if (!seen.has(next)) {
          seen.add(next);
          stack.push(next);
        }
      }
    }
    // Only states with byte moves (and the accept state) tell DFA states apart.
    const kept = [...seen].filter((q) => this.nfa.moves[q]!.length > 0 || q === this.nfa.accept);
    return Int32Array.from(kept.sort((a, b) => a - b));
  }

  private intern(set: Int32Array): number {
    if (set.length === 0) return DEAD;
    const key = set.join(',');
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const id = this.states.length;
    let canContinue = false;
    for (const q of set) if (this.nfa.moves[q]!.length > 0) canContinue = true;
    this.states.push({ nfa: set, accepting: set.includes(this.nfa.accept), canContinue, next: new Int32Array(256).fill(UNKNOWN) });
    this.byKey.set(key, id);
    return id;
  }
}
