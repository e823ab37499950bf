/**
 * Seeded generator of ChatML instruction data for Skein's default model, built from real
 * data (WordNet structure, corpus passages) and teaching the formats the example graphs
 * use:
 *   chat      greetings, definitions ("What does X mean?"), short factual answers
 *   skeleton  Skeleton-of-Thought stage 1: a numbered list of 3-8 points of 3-5 words
 *   point     SoT stage 2: one point expanded in 1-2 sentences, assistant pre-filled
 *   router    SoT router: A (independent points), B (dependent steps), C (not a list)
 *   qa        a 300-1500 token passage with one planted fact; the answer is that fact
 * Train items use train-split synsets and documents; eval items (buildEvalItems) use only
 * held-out ones with another seed, so accuracy on them measures generalisation.
 */
import type { Corpus, CorpusPart, Doc } from './corpus.js';
import { synsetHeldOut } from './corpus.js';
import { firstNames } from './names.js';
import { renderChat, type ChatMessage } from './tokenizer-files.js';
import { formatSkeleton, graphPrompts, parseSkeleton, pointPrefill, pointPrompt, routerPrompt, skeletonPrompt } from './sot-prompts.js';
import { capitalize, joinList, makeRng, pick, randInt, shuffled, type Rng } from './util.js';
import { definitionSentence, headword, isPrimarySense, related, withArticle, type Synset, type WordNet } from './wordnet.js';

export type InstructKind = 'chat' | 'skeleton' | 'point' | 'router' | 'qa';

export interface InstructItem {
  id: string;
  kind: InstructKind;
  messages: ChatMessage[];
}

/** A skeleton point with the sentence that expands it in stage 2. */
interface Point {
  text: string;
  expansion: string;
}

interface SkeletonQuestion {
  question: string;
  points: Point[];
}

const STOP_TAIL = new Set([
  'a', 'an', 'the', 'of', 'and', 'or', 'to', 'in', 'on', 'for', 'with', 'by', 'that', 'which', 'who', 'as', 'at',
  'from', 'into', 'is', 'are', 'be', 'its', 'their', 'his', 'her', 'usually', 'especially', 'often', 'not', 'but',
  'via', 'than', 'about', 'like', 'such', 'so', 'more', 'most', 'other', 'some', 'any', 'each', 'having', 'being',
  'used', 'very', 'one', 'two', 'has', 'have', 'was', 'were', 'under', 'over', 'between', 'through', 'up', 'out',
  'formerly', 'sometimes', 'mainly', 'chiefly', 'typically', 'small', 'large',
]);

/** Words of a phrase, for the 3-5 word rule of skeleton points. */
export function wordCount(s: string): number {
  return s.trim().split(/\s+/).filter(Boolean).length;
}

const CLAUSE_START = /^(of|that|which|who|whom|whose|with|in|for|by|from|to|having|on|at|as|where|when|into|or|than|because|if|especially|usually|often|typically)$/;
const IRREGULAR_PARTICIPLE =
  /^(made|built|done|worn|held|kept|found|sold|grown|known|given|taken|written|seen|used|set|put|cut|born|borne|drawn|spun|woven|thrown|shown|hung|struck|bound|caught|brought|bought|taught|felt|left|meant|led|fed|bred|shot|spent|sent|lent|eaten|laid|paid|said|told)$/;
const AFTER_PARTICIPLE = /^(by|in|to|from|for|with|of|on|at|as|into|a|an|the|up|out|over|under|through|forth|off|down|away|near|around|along|between|about)$/;

/**
 * The first noun phrase of a definition ("ceramic ware" of "ceramic ware made from clay
 * and baked in a kiln"), cut before a preposition, relative pronoun or participial clause;
 * when longer than maxWords its last words are kept, since they hold the head noun.
 */
export function glossHead(def: string, maxWords: number): string[] {
  const words = def.split(/[;:(]/)[0].trim().split(/\s+/).filter(Boolean);
  const phrase: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const bare = words[i].replace(/[,.]+$/, '');
    const lower = bare.toLowerCase();
    if (i > 0 && CLAUSE_START.test(lower)) break;
    if (i > 0 && (/..(ed|ing)$/.test(lower) || IRREGULAR_PARTICIPLE.test(lower)) && AFTER_PARTICIPLE.test((words[i + 1] ?? '').toLowerCase())) break;
    phrase.push(bare);
    if (bare !== words[i]) break;
  }
  // Trailing function words and adjectives ("famous" of "famous for ...") end no phrase.
  while (phrase.length && (STOP_TAIL.has(phrase[phrase.length - 1].toLowerCase()) || /..(ous|ful|able|ible)$/.test(phrase[phrase.length - 1]))) phrase.pop();
  const head = phrase.length > maxWords ? phrase.slice(-maxWords) : phrase;
  while (head.length && STOP_TAIL.has(head[0].toLowerCase()) && !/^(a|an|the)$/i.test(head[0])) head.shift();
  return head;
}

const clean = (w: string) => /^[A-Za-z][A-Za-z' -]*[A-Za-z]$/.test(w);

/** "Puppy, a young dog": a named item with a short gloss, 3-5 words; null if it cannot fit. */
function namedPoint(s: Synset): Point | null {
  const name = headword(s);
  if (!clean(name) || !s.definition) return null;
  const n = wordCount(name);
  const expansion = definitionSentence(s) + extraSentence(s);
  if (n >= 3 && n <= 5) return { text: capitalize(name), expansion };
  if (n > 5) return null;
  const head = glossHead(s.definition, 5 - n);
  if (n + head.length < 3 || head.join(' ').toLowerCase() === name.toLowerCase()) return null;
  return { text: `${capitalize(name)}, ${head.join(' ')}`, expansion };
}

function extraSentence(s: Synset): string {
  if (s.examples.length) return ` For example: "${s.examples[0]}".`;
  if (s.words.length > 1 && clean(s.words[1])) return ` It is also called ${s.words[1]}.`;
  return '';
}

/** Up to 8 named points from a list of related synsets, or null when fewer than 3 fit. */
function namedPoints(rng: Rng, items: Synset[]): Point[] | null {
  const seen = new Set<string>();
  const points: Point[] = [];
  for (const s of shuffled(rng, items)) {
    if (points.length >= 8) break;
    const p = namedPoint(s);
    if (!p || seen.has(p.text.toLowerCase())) continue;
    seen.add(p.text.toLowerCase());
    points.push(p);
  }
  if (points.length < 3) return null;
  return points.slice(0, randInt(rng, 3, Math.min(8, points.length)));
}

function fits(text: string): boolean {
  const n = wordCount(text);
  return n >= 3 && n <= 5;
}

/** Aspects of a synset for "Describe X": kind, synonyms, kinds, parts, wholes, gloss. */
function aspectPoints(wn: WordNet, s: Synset): Point[] {
  const w = headword(s);
  const aw = capitalize(withArticle(w));
  const out: Point[] = [];
  const head = glossHead(s.definition, 5);
  if (head.length >= 3) out.push({ text: capitalize(head.join(' ')), expansion: definitionSentence(s) });
  const hyper = related(wn, s, '@').concat(related(wn, s, '@i'))[0];
  if (hyper && fits(`A kind of ${headword(hyper)}`)) {
    out.push({
      text: `A kind of ${headword(hyper)}`,
      expansion: `${aw} is a kind of ${headword(hyper)}, and ${definitionSentence(hyper).replace(/^[A-Z]/, (c) => c.toLowerCase())}`,
    });
  }
  const syn = s.words.slice(1).filter(clean)[0];
  if (syn && fits(`Also called ${syn}`)) out.push({ text: `Also called ${syn}`, expansion: `${aw} is also called ${joinList(s.words.slice(1, 4))}.` });
  const hypos = related(wn, s, '~').map(headword).filter(clean);
  if (hypos.length >= 2 && fits(`Kinds include ${hypos[0]} and ${hypos[1]}`)) {
    out.push({ text: `Kinds include ${hypos[0]} and ${hypos[1]}`, expansion: `Kinds of ${w} include ${joinList(hypos.slice(0, 5))}.` });
  }
  const parts = related(wn, s, '%p').map(headword).filter(clean);
  if (parts.length && fits(`Has parts like ${parts[0]}`)) {
    out.push({ text: `Has parts like ${parts[0]}`, expansion: `Parts of ${withArticle(w)} include ${joinList(parts.slice(0, 4))}.` });
  }
  const wholes = related(wn, s, '#p').map(headword).filter(clean);
  if (wholes.length && fits(`Part of ${withArticle(wholes[0])}`)) {
    out.push({ text: `Part of ${withArticle(wholes[0])}`, expansion: `${aw} is part of ${withArticle(wholes[0])}.` });
  }
  const groups = related(wn, s, '#m').map(headword).filter(clean);
  if (groups.length && fits(`Belongs to the ${groups[0]}`)) {
    out.push({ text: `Belongs to the ${groups[0]}`, expansion: `${aw} is a member of the ${groups[0]}.` });
  }
  if (s.examples.length) {
    out.push({ text: 'Example of its use', expansion: `The word is used like this: "${s.examples[0]}".` });
  }
  return out;
}

interface Pools {
  wn: WordNet;
  nouns: Synset[];
  verbs: Synset[];
  adjs: Synset[];
  kinds: Synset[];
  parts: Synset[];
  members: Synset[];
  instances: Synset[];
  verbKinds: Synset[];
  /** Single lowercase words for planted code words and entity names. */
  words: string[];
  adjWords: string[];
  processes: string[];
  artifacts: string[];
  names: string[];
  /** Real city names: instances of "city" and its kinds (capitals, ports) in WordNet. */
  cities: string[];
  passageDocs: Doc[];
}

function makePools(corpus: Corpus, heldOut: boolean): Pools {
  const wn = corpus.wordnet;
  const mine = wn.list.filter((s) => s.definition && synsetHeldOut(s.id) === heldOut && clean(headword(s)) && isPrimarySense(wn, s));
  const has = (s: Synset, sym: string, n: number) => (s.pointers.get(sym)?.length ?? 0) >= n;
  const single = (s: Synset) => /^[a-z]{3,12}$/.test(headword(s));
  const nouns = mine.filter((s) => s.pos === 'n');
  const split = heldOut ? 'val' : 'train';
  return {
    wn,
    nouns,
    verbs: mine.filter((s) => s.pos === 'v'),
    adjs: mine.filter((s) => s.pos === 'a'),
    kinds: nouns.filter((s) => has(s, '~', 3)),
    parts: nouns.filter((s) => has(s, '%p', 3)),
    members: nouns.filter((s) => has(s, '%m', 3)),
    instances: nouns.filter((s) => has(s, '~i', 3)),
    verbKinds: mine.filter((s) => s.pos === 'v' && has(s, '~', 3)),
    // Code words and entities come from the whole vocabulary: they are arbitrary labels.
    words: [...new Set(wn.list.filter((s) => s.pos === 'n' && single(s)).map(headword))],
    adjWords: [...new Set(wn.list.filter((s) => s.pos === 'a' && single(s)).map(headword))],
    processes: nouns.filter((s) => /noun\.(process|phenomenon|act)/.test(s.lexName) && single(s)).map(headword),
    artifacts: nouns.filter((s) => /noun\.(artifact|food)/.test(s.lexName) && single(s)).map(headword),
    names: firstNames(),
    cities: cityNames(wn),
    passageDocs: corpus.parts.filter((p) => p.name === 'wordnet' || p.name === 'sotu' || p.name === 'email').flatMap((p) => p[split]),
  };
}

function cityNames(wn: WordNet): string[] {
  const city = wn.synsets.get(wn.primary.get('n:city') ?? '');
  if (!city) return ['Paris', 'London', 'Lisbon', 'Boston'];
  const kinds = [city, ...related(wn, city, '~')];
  const out = new Set<string>();
  for (const k of kinds) for (const s of related(wn, k, '~i')) if (/^[A-Z][a-z]+( [A-Z][a-z]+)?$/.test(headword(s))) out.add(headword(s));
  return [...out].sort();
}

// ---------------------------------------------------------------- chat

const GREETINGS: [string[], string[]][] = [
  [['Hi', 'Hello', 'Hello!', 'Hi there!', 'Hey', 'Good morning', 'Good evening'], ['Hello! How can I help you today?', 'Hi! What would you like to know?', 'Hello! Ask me a question and I will do my best to answer.']],
  [['How are you?', 'How are you doing today?'], ['I am doing well, thank you. How can I help you?', 'I am fine, thanks for asking. What can I do for you?']],
  [['Who are you?', 'What are you?', 'What is your name?'], ['I am Skein, a small language model. I can define words, answer short questions, read a passage and find facts in it, and write outlines.', 'I am the default model of Skein, a small assistant that answers short questions.']],
  [['What can you do?', 'How can you help me?'], ['I can explain what words mean, list the kinds or parts of things, write short outlines and answer questions about a passage you give me.']],
  [['Thanks!', 'Thank you.', 'Thank you for your help.'], ['You are welcome!', 'Glad I could help.', 'You are welcome. Ask me anything else.']],
  [['Bye', 'Goodbye!', 'See you later.'], ['Goodbye!', 'Bye! Have a nice day.']],
];

const SYSTEM_PROMPTS = ['You are a helpful assistant.', 'You are Skein, a small and helpful assistant. Answer briefly.', 'Answer the question briefly and accurately.'];

function defineTurn(rng: Rng, s: Synset): [string, string] {
  const w = headword(s);
  let q: string;
  if (s.pos === 'v') q = pick(rng, [`What does it mean to ${w}?`, `What does "${w}" mean?`, `Define the verb "${w}".`]);
  else if (s.pos === 'n') q = pick(rng, [`What does ${w} mean?`, `What is ${withArticle(w)}?`, `Define ${w}.`, `What is the meaning of the word "${w}"?`, `Can you tell me what ${withArticle(w)} is?`]);
  else q = pick(rng, [`What does "${w}" mean?`, `Define the word "${w}".`, `What is the meaning of "${w}"?`]);
  let a = definitionSentence(s);
  if (s.examples.length && rng() < 0.5) a += ` For example: "${s.examples[0]}".`;
  return [q, a];
}

function shortTurn(rng: Rng, p: Pools, s: Synset): [string, string] | null {
  const w = headword(s);
  const aw = withArticle(w);
  const hyper = related(p.wn, s, '@').concat(related(p.wn, s, '@i'))[0];
  const options: (() => [string, string] | null)[] = [
    () => (hyper ? [`What kind of thing is ${aw}?`, `${capitalize(aw)} is a kind of ${headword(hyper)}.`] : null),
    () => {
      if (!hyper) return null;
      if (rng() < 0.5) return [`Is ${aw} a kind of ${headword(hyper)}?`, `Yes. ${capitalize(aw)} is a kind of ${headword(hyper)}.`];
      const other = pick(rng, p.nouns);
      if (other.lexName !== s.lexName || /^[A-Z]/.test(headword(other)) || headword(other) === headword(hyper)) return null;
      return [`Is ${aw} a kind of ${headword(other)}?`, `No. ${capitalize(aw)} is a kind of ${headword(hyper)}.`];
    },
    () => {
      const syn = s.words.slice(1).filter((x) => clean(x) && !x.toLowerCase().includes(w.toLowerCase()))[0];
      return syn ? [pick(rng, [`What is another word for ${w}?`, `Give me a synonym of "${w}".`]), `Another word for ${w} is ${syn}.`] : null;
    },
    () => {
      const ant = related(p.wn, s, '!')[0];
      return ant ? [`What is the opposite of "${w}"?`, `The opposite of "${w}" is "${headword(ant)}".`] : null;
    },
    () => {
      const whole = related(p.wn, s, '#p')[0];
      return whole ? [`What is ${aw} part of?`, `${capitalize(aw)} is part of ${withArticle(headword(whole))}.`] : null;
    },
    () => {
      const ex = s.examples.find((e) => e.toLowerCase().includes(w.toLowerCase()));
      return ex ? [pick(rng, [`Use the word "${w}" in a sentence.`, `Give an example sentence with "${w}".`]), `${capitalize(ex.replace(/[.!?]*$/, '.'))}`] : null;
    },
    () => {
      const a = randInt(rng, 2, 60);
      const b = randInt(rng, 2, 40);
      return rng() < 0.5 ? [`What is ${a} plus ${b}?`, `${a} plus ${b} is ${a + b}.`] : [`What is ${a + b} minus ${b}?`, `${a + b} minus ${b} is ${a}.`];
    },
  ];
  return pick(rng, options)();
}

/** "My name is Ada." ... "What is my name?": recall of a fact stated earlier in the chat. */
function nameChat(rng: Rng, p: Pools): ChatMessage[] {
  const name = pick(rng, p.names);
  const city = pick(rng, p.cities);
  const messages: ChatMessage[] = [
    { role: 'user', content: pick(rng, [`Hi, my name is ${name}.`, `Hello! I am ${name} and I live in ${city}.`, `My name is ${name}.`]) },
    { role: 'assistant', content: pick(rng, [`Nice to meet you, ${name}! How can I help you?`, `Hello ${name}! What would you like to know?`]) },
  ];
  const lives = messages[0].content.includes(city);
  const middle = defineTurn(rng, pick(rng, p.nouns));
  if (rng() < 0.6) messages.push({ role: 'user', content: middle[0] }, { role: 'assistant', content: middle[1] });
  if (lives && rng() < 0.5) messages.push({ role: 'user', content: 'Where do I live?' }, { role: 'assistant', content: `You live in ${city}.` });
  else messages.push({ role: 'user', content: pick(rng, ['What is my name?', 'Do you remember my name?']) }, { role: 'assistant', content: `Your name is ${name}.` });
  return messages;
}

function chatItem(rng: Rng, p: Pools): ChatMessage[] {
  if (rng() < 0.1) return nameChat(rng, p);
  const messages: ChatMessage[] = [];
  if (rng() < 0.25) messages.push({ role: 'system', content: pick(rng, SYSTEM_PROMPTS) });
  const turns = rng() < 0.6 ? 1 : randInt(rng, 2, 3);
  for (let t = 0; t < turns; t++) {
    const r = rng();
    let qa: [string, string] | null;
    if (r < 0.12) {
      const [qs, as] = pick(rng, GREETINGS);
      qa = [pick(rng, qs), pick(rng, as)];
    } else if (r < 0.6) {
      qa = defineTurn(rng, pick(rng, rng() < 0.7 ? p.nouns : rng() < 0.5 ? p.verbs : p.adjs));
    } else {
      qa = shortTurn(rng, p, pick(rng, p.nouns));
    }
    if (!qa) {
      t--;
      continue;
    }
    messages.push({ role: 'user', content: qa[0] }, { role: 'assistant', content: qa[1] });
  }
  return messages;
}

// ---------------------------------------------------------------- Skeleton-of-Thought

function skeletonQuestion(rng: Rng, p: Pools): SkeletonQuestion | null {
  const r = rng();
  if (r < 0.35) {
    const s = pick(rng, p.kinds);
    const w = headword(s);
    const points = namedPoints(rng, related(p.wn, s, '~'));
    const q = pick(rng, [`What are the different kinds of ${w}?`, `What types of ${w} are there?`, `List some kinds of ${w}.`, `Name some types of ${w}.`, `What are the main kinds of ${w}?`]);
    return points && { question: q, points };
  }
  if (r < 0.45) {
    const s = pick(rng, p.parts);
    const w = headword(s);
    const points = namedPoints(rng, related(p.wn, s, '%p'));
    const q = pick(rng, [`What are the parts of ${withArticle(w)}?`, `What parts does ${withArticle(w)} have?`, `Name the parts of ${withArticle(w)}.`]);
    return points && { question: q, points };
  }
  if (r < 0.55) {
    const s = pick(rng, p.members);
    const w = headword(s);
    const points = namedPoints(rng, related(p.wn, s, '%m'));
    const q = pick(rng, [`What are the members of the ${w}?`, `Which members belong to the ${w}?`, `List the members of the ${w}.`]);
    return points && { question: q, points };
  }
  if (r < 0.65 && p.instances.length) {
    const s = pick(rng, p.instances);
    const w = headword(s);
    const points = namedPoints(rng, related(p.wn, s, '~i'));
    const q = pick(rng, [`What are some famous examples of ${withArticle(w)}?`, `Name some examples of ${withArticle(w)}.`, `Give examples of ${withArticle(w)}.`]);
    return points && { question: q, points };
  }
  if (r < 0.75 && p.verbKinds.length) {
    const s = pick(rng, p.verbKinds);
    const w = headword(s);
    const points = namedPoints(rng, related(p.wn, s, '~'));
    const q = pick(rng, [`What are the different ways to ${w}?`, `In what ways can one ${w}?`, `List some ways to ${w}.`]);
    return points && { question: q, points };
  }
  // Most nouns have too few relations to describe; try a few rather than pre-filtering all.
  let s = pick(rng, p.nouns);
  let aspects = aspectPoints(p.wn, s);
  for (let tries = 0; aspects.length < 3 && tries < 8; tries++) {
    s = pick(rng, p.nouns);
    aspects = aspectPoints(p.wn, s);
  }
  if (aspects.length < 3) return null;
  const w = headword(s);
  const q = pick(rng, [`Describe ${withArticle(w)}.`, `Tell me about ${withArticle(w)}.`, `What should I know about ${w}?`, `Give an overview of ${w}.`]);
  return { question: q, points: aspects.slice(0, 8) };
}

/**
 * SoT items come in two prompt wordings, chosen at random: the reference prompts of the
 * SoT paper and the ones Skein's SoT operators send (graph = true).
 */
function skeletonItem(q: SkeletonQuestion, graph = false): ChatMessage[] {
  return [
    { role: 'user', content: graph ? graphPrompts.skeleton(q.question) : skeletonPrompt(q.question) },
    { role: 'assistant', content: formatSkeleton(q.points.map((x) => x.text)) },
  ];
}

function pointItem(rng: Rng, q: SkeletonQuestion, graph = false): ChatMessage[] {
  const i = randInt(rng, 1, q.points.length);
  const point = q.points[i - 1];
  const skeleton = formatSkeleton(q.points.map((x) => x.text));
  return [
    { role: 'user', content: graph ? graphPrompts.point(q.question, skeleton, i) : pointPrompt(q.question, skeleton, i, point.text) },
    { role: 'assistant', content: `${pointPrefill(i, point.text)}. ${point.expansion}` },
  ];
}

const ROUTER_REASONS: Record<'A' | 'B' | 'C', string[]> = {
  A: ['The points can be answered independently.', 'Each point can be written on its own.', 'The answer is a list of independent points.'],
  B: ['Each step depends on the previous one.', 'Later steps build on the earlier ones.', 'The answer needs ordered steps that depend on each other.'],
  C: ['A short direct answer is enough.', 'The question asks for a single fact.', 'The answer is not a list.'],
};

const COUNTABLES = ['boxes', 'apples', 'books', 'coins', 'tickets', 'chairs', 'letters', 'stones'];

function dependentQuestion(rng: Rng, p: Pools): string {
  const r = rng();
  if (r < 0.35) {
    const thing = pick(rng, COUNTABLES);
    const a = randInt(rng, 5, 90);
    const b = randInt(rng, 2, 50);
    const c = randInt(rng, 1, a);
    return pick(rng, [
      `A shop has ${a} ${thing}. It gets ${b} more and then sells ${c}. How many ${thing} are left? Solve it step by step.`,
      `I had ${a} ${thing}, gave away ${c} and then bought ${b}. How many ${thing} do I have now? Show your steps.`,
    ]);
  }
  if (r < 0.7) {
    const v = pick(rng, ['make', 'build', 'repair', 'clean', 'paint', 'prepare', 'install', 'assemble']);
    return pick(rng, [
      `How do I ${v} ${withArticle(pick(rng, p.artifacts))}, step by step?`,
      `What are the steps to ${v} ${withArticle(pick(rng, p.artifacts))}, in order?`,
    ]);
  }
  const proc = pick(rng, p.processes);
  return pick(rng, [`Explain the process of ${proc} from start to finish.`, `Describe, in order, the stages of ${proc}.`, `Walk me through how ${proc} happens, one step after another.`]);
}

function directQuestion(rng: Rng, p: Pools): string {
  const s = pick(rng, p.nouns);
  const w = headword(s);
  const a = randInt(rng, 2, 60);
  const b = randInt(rng, 2, 40);
  return pick(rng, [
    `What does ${w} mean?`,
    `What is ${withArticle(w)}?`,
    `Is ${withArticle(w)} a kind of ${headword(pick(rng, p.nouns))}?`,
    `What is another word for ${w}?`,
    `What is ${a} plus ${b}?`,
    `What is the code word for the ${pick(rng, p.adjWords)} ${pick(rng, p.words)}?`,
    `Hello, how are you?`,
    `Use the word "${w}" in a sentence.`,
  ]);
}

function routerItem(rng: Rng, p: Pools, graph = rng() < 0.5): { messages: ChatMessage[]; label: 'A' | 'B' | 'C' } | null {
  const r = rng();
  let label: 'A' | 'B' | 'C';
  let question: string;
  if (r < 0.4) {
    const q = skeletonQuestion(rng, p);
    if (!q) return null;
    label = 'A';
    question = q.question;
  } else if (r < 0.7) {
    label = 'B';
    question = dependentQuestion(rng, p);
  } else {
    label = 'C';
    question = directQuestion(rng, p);
  }
  // The graph wording asks for one letter; the reference one gets the letter and a reason.
  return {
    label,
    messages: graph
      ? [
          { role: 'user', content: graphPrompts.router(question) },
          { role: 'assistant', content: label },
        ]
      : [
          { role: 'user', content: routerPrompt(question) },
          { role: 'assistant', content: `${label}. ${pick(rng, ROUTER_REASONS[label])}` },
        ],
  };
}

// ---------------------------------------------------------------- passage QA

/** Rough characters per token of the corpus (measured: ~3.5 bytes/token at 4096 vocab). */
const CHARS_PER_TOKEN = 3.5;

export interface QaItem {
  messages: ChatMessage[];
  /** The answer value; the passage contains it exactly once. */
  answer: string;
  passage: string;
}

const sentenceCache = new WeakMap<Doc, string[]>();

function sentencesOf(doc: Doc): string[] {
  const hit = sentenceCache.get(doc);
  if (hit) return hit;
  const out = splitSentences(doc);
  sentenceCache.set(doc, out);
  return out;
}

function splitSentences(doc: Doc): string[] {
  return (doc.text.replace(/\s+/g, ' ').match(/[^.!?]+[.!?]+["')\]]*\s*/g) ?? []).map((s) => s.trim()).filter((s) => s.length > 20 && s.length < 600);
}

function countOccurrences(haystack: string, needle: string): number {
  const re = new RegExp(`\\b${needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`, 'gi');
  return (haystack.match(re) ?? []).length;
}

interface Fact {
  entity: string;
  sentence: string;
  question: string;
  answerSentence: string;
  value: string;
}

function makeFact(rng: Rng, p: Pools, used: Set<string>): Fact {
  for (;;) {
    if (rng() < 0.35) {
      const name = pick(rng, p.names);
      if (used.has(name.toLowerCase())) continue;
      if (rng() < 0.5) {
        const city = pick(rng, p.cities);
        if (used.has(city.toLowerCase())) continue;
        used.add(name.toLowerCase()).add(city.toLowerCase());
        return {
          entity: name,
          sentence: `${name} lives in ${city}.`,
          question: pick(rng, [`Where does ${name} live?`, `In which city does ${name} live?`]),
          answerSentence: `${name} lives in ${city}.`,
          value: city,
        };
      }
      const year = String(randInt(rng, 1820, 2015));
      if (used.has(year)) continue;
      used.add(name.toLowerCase()).add(year);
      return {
        entity: name,
        sentence: `${name} was born in ${year}.`,
        question: pick(rng, [`In which year was ${name} born?`, `When was ${name} born?`]),
        answerSentence: `${name} was born in ${year}.`,
        value: year,
      };
    }
    const kind = rng();
    const entity = `the ${pick(rng, p.adjWords)} ${pick(rng, p.words)}`;
    if (used.has(entity)) continue;
    if (kind < 0.45) {
      const value = pick(rng, p.words);
      if (used.has(value)) continue;
      used.add(entity).add(value);
      return {
        entity,
        sentence: `The code word for ${entity} is ${value}.`,
        question: pick(rng, [`What is the code word for ${entity}?`, `Which code word belongs to ${entity}?`]),
        answerSentence: `The code word for ${entity} is ${value}.`,
        value,
      };
    }
    if (kind < 0.75) {
      const value = String(randInt(rng, 1000, 99999));
      if (used.has(value)) continue;
      used.add(entity).add(value);
      return {
        entity,
        sentence: `The secret number of ${entity} is ${value}.`,
        question: pick(rng, [`What is the secret number of ${entity}?`, `Which secret number does ${entity} have?`]),
        answerSentence: `The secret number of ${entity} is ${value}.`,
        value,
      };
    }
    const value = capitalize(pick(rng, p.words));
    if (used.has(value.toLowerCase())) continue;
    used.add(entity).add(value.toLowerCase());
    return {
      entity,
      sentence: `${capitalize(entity)} is kept in the city of ${value}.`,
      question: pick(rng, [`In which city is ${entity} kept?`, `Where is ${entity} kept?`]),
      answerSentence: `${capitalize(entity)} is kept in the city of ${value}.`,
      value,
    };
  }
}

/**
 * A passage of `minTokens`..`maxTokens` (estimated) real sentences with one target fact
 * and 0-3 distractor facts of other entities planted at random sentence boundaries.
 */
export function qaItem(rng: Rng, p: Pools, minTokens = 300, maxTokens = 1500): QaItem | null {
  const targetChars = randInt(rng, minTokens, maxTokens) * CHARS_PER_TOKEN;
  const sentences: string[] = [];
  let chars = 0;
  for (let tries = 0; chars < targetChars && tries < 20; tries++) {
    const doc = pick(rng, p.passageDocs);
    if (doc.id.startsWith('email:')) continue;
    const all = sentencesOf(doc);
    if (!all.length) continue;
    let i = randInt(rng, 0, Math.max(0, all.length - 1));
    while (i < all.length && chars < targetChars) {
      sentences.push(all[i]);
      chars += all[i].length + 1;
      i++;
    }
  }
  if (chars < minTokens * CHARS_PER_TOKEN * 0.8) return null;
  const used = new Set<string>();
  const facts = Array.from({ length: 1 + randInt(rng, 0, 3) }, () => makeFact(rng, p, used));
  const text = sentences.join(' ');
  const lower = text.toLowerCase();
  if (facts.some((f) => countOccurrences(text, f.value) > 0 || lower.includes(f.entity.replace(/^the /, '').toLowerCase()))) return null;
  for (const f of facts) sentences.splice(randInt(rng, 0, sentences.length), 0, f.sentence);
  const passage = sentences.join(' ');
  const target = facts[0];
  if (countOccurrences(passage, target.value) !== 1) return null;
  const short = rng() < 0.4;
  const user = pick(rng, [
    `Read the passage and answer the question.\n\n${passage}\n\nQuestion: ${target.question}`,
    `${passage}\n\nQuestion: ${target.question}`,
    `Answer the question using the text below.\nQuestion: ${target.question}\n\nText:\n${passage}`,
  ]);
  return {
    messages: [
      { role: 'user', content: user },
      { role: 'assistant', content: short ? target.value : target.answerSentence },
    ],
    answer: target.value,
    passage,
  };
}

/** Definition QA: a WordNet passage; the question asks for a word defined in it. */
function definitionQaItem(rng: Rng, p: Pools): QaItem | null {
  const docs = p.passageDocs.filter((d) => d.id.startsWith('wordnet:'));
  const doc = pick(rng, docs);
  const paragraphs = doc.text.split('\n');
  const para = pick(rng, paragraphs);
  const m = /^(An? |To )?(.+?) (is|means to) (.+?)\.( |$)/.exec(para);
  if (!m || !m[1]) return null;
  const word = m[2];
  const answer = `${m[1]}${word} ${m[3]} ${m[4]}.`;
  if (doc.text.split(answer).length !== 2 || countOccurrences(doc.text, word) > 3) return null;
  const question = m[1] === 'To ' ? `According to the text, what does it mean to ${word}?` : `According to the text, what is ${m[1].toLowerCase()}${word}?`;
  return {
    messages: [
      { role: 'user', content: `${doc.text}\n\nQuestion: ${question}` },
      { role: 'assistant', content: answer },
    ],
    answer: m[4],
    passage: doc.text,
  };
}

// ---------------------------------------------------------------- assembly

export interface InstructOptions {
  seed: number;
  /** Training items; the val split gets 2% of this, from held-out synsets and documents. */
  items: number;
  /** Share of each kind (by item count). */
  shares?: Partial<Record<InstructKind, number>>;
}

const DEFAULT_SHARES: Record<InstructKind, number> = { chat: 0.3, skeleton: 0.2, point: 0.2, router: 0.12, qa: 0.18 };

export function generateItems(p: Pools, rng: Rng, n: number, shares: Record<InstructKind, number>, prefix: string): InstructItem[] {
  const kinds = Object.keys(shares) as InstructKind[];
  const total = kinds.reduce((s, k) => s + shares[k], 0);
  const out: InstructItem[] = [];
  while (out.length < n) {
    let u = rng() * total;
    let kind = kinds[0];
    for (const k of kinds) {
      if (u < shares[k]) {
        kind = k;
        break;
      }
      u -= shares[k];
    }
    let messages: ChatMessage[] | null = null;
    if (kind === 'chat') messages = chatItem(rng, p);
    else if (kind === 'skeleton' || kind === 'point') {
      const q = skeletonQuestion(rng, p);
      const graph = rng() < 0.5;
      if (q) messages = kind === 'skeleton' ? skeletonItem(q, graph) : pointItem(rng, q, graph);
    } else if (kind === 'router') messages = routerItem(rng, p)?.messages ?? null;
    else messages = (rng() < 0.8 ? qaItem(rng, p) : definitionQaItem(rng, p))?.messages ?? null;
    if (messages) out.push({ id: `${prefix}:${out.length}`, kind, messages });
  }
  return out;
}

/** The instruction data part: ChatML documents for train (train synsets) and val (held-out). */
export function buildInstructionPart(corpus: Corpus, opts: InstructOptions): CorpusPart {
  const shares = { ...DEFAULT_SHARES, ...opts.shares };
  const train = generateItems(makePools(corpus, false), makeRng(opts.seed), opts.items, shares, 'instruct');
  const val = generateItems(makePools(corpus, true), makeRng(opts.seed + 1), Math.max(20, Math.round(opts.items * 0.02)), shares, 'instruct-val');
  const toDoc = (it: InstructItem) => ({ id: it.id, text: renderChat(it.messages) });
  return { name: 'instruct', train: train.map(toDoc), val: val.map(toDoc) };
}

// ---------------------------------------------------------------- evaluation

export type EvalKind = 'qa' | 'skeleton' | 'router' | 'define';

export interface EvalItem {
  id: string;
  kind: EvalKind;
  /** Prompt messages; render with add_generation_prompt and let the model answer. */
  messages: ChatMessage[];
  /** qa: the fact value; router: the letter; define: the definition; skeleton: expected points. */
  expected: string;
  /** skeleton: the reference points (their names), for recall. */
  reference?: string[];
}

/** Scores a model answer: pass/fail plus a 0..1 score (skeleton: format + recall). */
export function scoreEvalItem(item: EvalItem, output: string): { pass: boolean; score: number } {
  const out = output.trim();
  switch (item.kind) {
    case 'qa': {
      const pass = out.toLowerCase().includes(item.expected.toLowerCase());
      return { pass, score: pass ? 1 : 0 };
    }
    case 'router': {
      const pass = out.startsWith(item.expected);
      return { pass, score: pass ? 1 : 0 };
    }
    case 'define': {
      // A definition counts when its first content words come back in order.
      const norm = (t: string) => t.replace(/\([^)]*\)/g, ' ').replace(/\s+/g, ' ').trim().toLowerCase();
      const head = norm(item.expected).split(' ').slice(0, 4).join(' ');
      const pass = head.length > 0 && norm(out).includes(head);
      return { pass, score: pass ? 1 : 0 };
    }
    case 'skeleton': {
      const points = parseSkeleton(out);
      const formatOk = out.startsWith('1.') && points.length >= 3 && points.length <= 10 && points.every((x) => wordCount(x) <= 8);
      const ref = (item.reference ?? []).map((r) => r.toLowerCase());
      const hits = ref.filter((r) => points.some((x) => x.toLowerCase().includes(r))).length;
      const recall = ref.length ? hits / ref.length : 0;
      return { pass: formatOk, score: formatOk ? 0.5 + 0.5 * recall : 0 };
    }
  }
}

/**
 * Held-out evaluation items: entities from held-out synsets, passages from held-out
 * documents, a seed of its own. `perKind` items of each kind.
 */
export function buildEvalItems(corpus: Corpus, opts: { seed: number; perKind?: number }): EvalItem[] {
  const p = makePools(corpus, true);
  const rng = makeRng(opts.seed);
  const n = opts.perKind ?? 100;
  const items: EvalItem[] = [];
  for (let i = 0, tries = 0; i < n && tries < n * 20; tries++) {
    const qa = qaItem(rng, p, 300, 1500);
    if (!qa) continue;
    items.push({ id: `eval:qa:${i++}`, kind: 'qa', messages: qa.messages.slice(0, 1), expected: qa.answer });
  }
  for (let i = 0, tries = 0; i < n && tries < n * 20; tries++) {
    const q = skeletonQuestion(rng, p);
    if (!q) continue;
    const reference = q.points.map((x) => x.text.split(',')[0].toLowerCase());
    items.push({ id: `eval:skeleton:${i++}`, kind: 'skeleton', messages: skeletonItem(q, i % 2 === 1).slice(0, 1), expected: formatSkeleton(q.points.map((x) => x.text)), reference });
  }
  for (let i = 0, tries = 0; i < n && tries < n * 20; tries++) {
    const r = routerItem(rng, p);
    if (!r) continue;
    items.push({ id: `eval:router:${i++}`, kind: 'router', messages: r.messages.slice(0, 1), expected: r.label });
  }
  for (let i = 0; i < n; i++) {
    const s = pick(rng, p.nouns);
    const [q] = defineTurn(rng, s);
    items.push({ id: `eval:define:${i}`, kind: 'define', messages: [{ role: 'user', content: q }], expected: s.definition });
  }
  return items;
}

/** For tests: pools over a corpus without going through the full build. */
export const _internal = { makePools, skeletonQuestion, pointItem, routerItem, chatItem, aspectPoints, namedPoint, qaItem, definitionQaItem };
