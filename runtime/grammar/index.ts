/**
 * Constrained decoding: an output constraint (core/output.ts) compiled to a token-level
 * grammar over a model's vocabulary. `GrammarCompiler` keeps one compiled grammar per
 * distinct constraint (their DFA states and token masks are reused by every request that
 * asks for the same one) and hands out per-sequence cursors for the scheduler.
 *
 * @example
 * const grammars = new GrammarCompiler(TokenVocabulary.fromTokenizer(tokenizer, vocabSize));
 * const cursor = grammars.cursor({ choices: ['A', 'B', 'C'] });
 */
import { BadRequestError, GrammarError } from '../../core/errors.js';
import type { OutputConstraint } from '../../core/output.js';
import { compileNfa, LazyDfa } from './automaton.js';
import { schemaToRx } from './json-schema.js';
import { patternToRx } from './pattern.js';
import { alt, chars, lit, MAX_CODE_POINT, negate, seq, set, star, type Rx } from './rx.js';
import { TokenGrammar, type GrammarCursor } from './token-grammar.js';
import type { TokenVocabulary } from './vocabulary.js';

export { TokenGrammar, GrammarCursor } from './token-grammar.js';
export { TokenVocabulary } from './vocabulary.js';
export { schemaToRx } from './json-schema.js';

/** The regex tree of a constraint; throws GrammarError (a 400) when it cannot be compiled. */
export function constraintToRx(c: OutputConstraint): Rx {
  const given = (['schema', 'regex', 'choices'] as const).filter((k) => c[k] !== undefined);
  if (given.length !== 1) throw new BadRequestError('output', 'give exactly one of schema, regex or choices');
  if (c.orText === true && c.schema === undefined) throw new BadRequestError('output.orText', 'only applies with schema');
  if (c.schema !== undefined) {
    const json = schemaToRx(c.schema);
    return c.orText === true ? alt([json, seq([set(negate(chars('{'))), star(set([0, MAX_CODE_POINT]))])]) : json;
  }
  if (c.regex !== undefined) return patternToRx(c.regex, { context: 'raw', anchored: true, pointer: '/regex' });
  const choices = c.choices!;
  if (choices.length === 0 || choices.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new GrammarError('/choices', 'must be non-empty strings');
  }
  return alt(choices.map(lit));
}

export function compileGrammar(c: OutputConstraint, vocab: TokenVocabulary): TokenGrammar {
  return new TokenGrammar(new LazyDfa(compileNfa(constraintToRx(c))), vocab);
}

export class GrammarCompiler {
  private readonly cache = new Map<string, TokenGrammar>();

  /** @param capacity grammars kept (least recently used dropped first). */
  constructor(readonly vocab: TokenVocabulary, private readonly capacity = 64) {}

  grammar(c: OutputConstraint): TokenGrammar {
    const key = JSON.stringify(c);
    let g = this.cache.get(key);
    if (g) this.cache.delete(key);
    else g = compileGrammar(c, this.vocab);
    this.cache.set(key, g);
    if (this.cache.size > this.capacity) this.cache.delete(this.cache.keys().next().value!);
    return g;
  }

  cursor(c: OutputConstraint): GrammarCursor {
    return this.grammar(c).cursor();
  }
}
