/**
 * ECMAScript regular expressions (as JSON Schema's `pattern` and the `regex` constraint
 * write them) to the regex tree of rx.ts. Parsing is @eslint-community/regexpp's (the
 * maintained ECMAScript regex parser behind eslint's regex rules), with the `u` flag; what
 * no finite automaton can do (backreferences, lookaround, word boundaries, anchors in
 * the middle) is refused with a GrammarError naming it.
 *
 * The same pattern compiles in two contexts: `raw`, where the output text itself must
 * match, and `json-string`, where it constrains the DECODED value of a JSON string, so
 * `"` and `\` are emitted escaped and control characters are left out.
 *
 * @example
 * const rx = patternToRx('^[a-z]{2,5}$', { context: 'raw', anchored: true, pointer: '' });
 */
import { RegExpParser, type AST } from '@eslint-community/regexpp';
import { GrammarError } from '../../core/errors.js';
import { alt, chars, contains, lit, MAX_CODE_POINT, negate, normalize, rep, seq, set, star, subtract, union, type Rx } from './rx.js';

export interface PatternOptions {
  context: 'raw' | 'json-string';
  /** true: the whole text must match (`regex` constraint); false: JSON Schema search semantics. */
  anchored: boolean;
  /** Where the pattern sits, for errors. */
  pointer: string;
}

const DIGIT = chars('0123456789');
const WORD = normalize([...DIGIT, ...chars('_'), 0x41, 0x5a, 0x61, 0x7a]);
// ECMAScript's WhiteSpace and LineTerminator code points.
const SPACE = normalize([
  0x09, 0x0d, 0x20, 0x20, 0xa0, 0xa0, 0x1680, 0x1680, 0x2000, 0x200a, 0x2028, 0x2029, 0x202f, 0x202f, 0x205f, 0x205f, 0x3000, 0x3000, 0xfeff, 0xfeff,
]);
const LINE_TERMINATORS = chars('\n\r\u2028\u2029');
const ANY = [0, MAX_CODE_POINT];

/** Characters a JSON string cannot hold unescaped (RFC 8259 §7). */
const JSON_SPECIAL = normalize([0, 0x1f, 0x22, 0x22, 0x5c, 0x5c]);

const propertyCache = new Map<string, number[]>();

/** The code points of \p{…}: read once from the engine's own RegExp tables. */
function propertyRanges(key: string, value: string | null): number[] {
  const name = value === null ? key : `${key}=${value}`;
  const cached = propertyCache.get(name);
  if (cached) return cached;
  const re = new RegExp(`^\\p{${name}}$`, 'u');
  const out: number[] = [];
  let start = -1;
  for (let cp = 0; cp <= MAX_CODE_POINT + 1; cp++) {
    const inside = cp <= MAX_CODE_POINT && !(cp >= 0xd800 && cp <= 0xdfff) && re.test(String.fromCodePoint(cp));
    if (inside && start < 0) start = cp;
    if (!inside && start >= 0) {
      out.push(start, cp - 1);
      start = -1;
    }
  }
  propertyCache.set(name, out);
  return out;
}

/** A class in the output: as is (raw), or as the JSON string text that decodes to one of its characters. */
export function classIn(context: PatternOptions['context'], ranges: readonly number[]): Rx {
  if (context === 'raw') return set(ranges);
  const all = normalize(ranges);
  const plain = subtract(all, JSON_SPECIAL);
  const arms: Rx[] = plain.length > 0 ? [set(plain)] : [];
  if (contains(all, 0x22)) arms.push(lit('\\"'));
  if (contains(all, 0x5c)) arms.push(lit('\\\\'));
  return alt(arms);
}

export function patternToRx(source: string, options: PatternOptions): Rx {
  let pattern: AST.Pattern;
  try {
    pattern = new RegExpParser({ ecmaVersion: 2025 }).parsePattern(source, 0, source.length, { unicode: true });
  } catch (err) {
    throw new GrammarError(options.pointer, `the regular expression does not parse: ${(err as Error).message}`);
  }
  const refuse = (what: string): never => {
    throw new GrammarError(options.pointer, `${what} cannot be compiled to a token mask (regex ${JSON.stringify(source)})`);
  };

  type ClassNode = AST.CharacterClassElement | AST.CharacterSet | AST.Character | AST.CharacterClass;
  const classRanges = (node: ClassNode): number[] => {
    switch (node.type) {
      case 'Character':
        return [node.value, node.value];
      case 'CharacterClassRange':
        return [node.min.value, node.max.value];
      case 'CharacterSet': {
        if (node.kind === 'any') return subtract(ANY, LINE_TERMINATORS);
        let base: readonly number[];
        if (node.kind === 'property') base = node.strings ? refuse('a property of strings') : propertyRanges(node.key, node.value);
        else base = node.kind === 'digit' ? DIGIT : node.kind === 'word' ? WORD : SPACE;
        return node.negate ? negate(base) : [...base];
      }
      case 'CharacterClass': {
        const inner = union(...(node.elements as ClassNode[]).map((e) => classRanges(e)));
        return node.negate ? negate(inner) : inner;
      }
      default:
        return refuse(`the class element ${node.type}`);
    }
  };

  const element = (node: AST.Element): Rx => {
    switch (node.type) {
      case 'Character':
      case 'CharacterSet':
      case 'CharacterClass':
        return classIn(options.context, classRanges(node));
      case 'Group':
      case 'CapturingGroup':
        return alternatives(node.alternatives);
      case 'Quantifier':
        return rep(element(node.element), node.min, node.max);
      case 'Assertion':
        return refuse(node.kind === 'start' || node.kind === 'end' ? 'an anchor inside the pattern' : `a ${node.kind} assertion`);
      case 'Backreference':
        return refuse('a backreference');
      default:
        return refuse(`the construct ${node.type}`);
    }
  };
  const alternatives = (alts: AST.Alternative[]): Rx => alt(alts.map((a) => seq(a.elements.map(element))));

  // Anchors are understood at the two ends of each top-level alternative only.
  const anyText = star(classIn(options.context, ANY));
  return alt(
    pattern.alternatives.map((a) => {
      const els = [...a.elements];
      const isEdge = (e: AST.Element | undefined, kind: 'start' | 'end') => e?.type === 'Assertion' && e.kind === kind;
      const startAnchored = isEdge(els[0], 'start');
      if (startAnchored) els.shift();
      const endAnchored = isEdge(els[els.length - 1], 'end');
      if (endAnchored) els.pop();
      const body = seq(els.map(element));
      if (options.anchored) return body;
      return seq([...(startAnchored ? [] : [anyText]), body, ...(endAnchored ? [] : [anyText])]);
    }),
  );
}
