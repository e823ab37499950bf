import { beforeAll, describe, expect, it } from 'vitest';
import { loadWordNet } from './wordnet.js';
import { wordnetPart, type Corpus } from './corpus.js';
import { buildEvalItems, buildInstructionPart, scoreEvalItem, wordCount, _internal } from './instruct.js';
import { parseSkeleton } from './sot-prompts.js';
import { makeRng } from './util.js';

let corpus: Corpus;
beforeAll(() => {
  const wn = loadWordNet();
  corpus = { wordnet: wn, parts: [wordnetPart(wn)] };
});

const assistantOf = (text: string) => text.slice(text.lastIndexOf('<|im_start|>assistant\n') + 22, text.lastIndexOf('<|im_end|>'));

describe('instruction generator', () => {
  it('is deterministic per seed and renders ChatML', () => {
    const a = buildInstructionPart(corpus, { seed: 3, items: 60 });
    const b = buildInstructionPart(corpus, { seed: 3, items: 60 });
    expect(a.train.map((d) => d.text)).toEqual(b.train.map((d) => d.text));
    expect(a.train).toHaveLength(60);
    expect(a.val.length).toBeGreaterThan(0);
    for (const d of a.train) {
      expect(d.text.startsWith('<|im_start|>')).toBe(true);
      expect(d.text.endsWith('<|im_end|>\n')).toBe(true);
    }
  });

  it('skeleton answers are numbered lists of 3-8 points of 3-5 words; points expand from their prefill', () => {
    const p = _internal.makePools(corpus, false);
    const rng = makeRng(11);
    let checked = 0;
    for (let i = 0; i < 200; i++) {
      const q = _internal.skeletonQuestion(rng, p);
      if (!q) continue;
      checked++;
      expect(q.points.length).toBeGreaterThanOrEqual(3);
      expect(q.points.length).toBeLessThanOrEqual(8);
      for (const pt of q.points) {
        expect(wordCount(pt.text), pt.text).toBeGreaterThanOrEqual(3);
        expect(wordCount(pt.text), pt.text).toBeLessThanOrEqual(5);
      }
      const [user, assistant] = _internal.pointItem(rng, q);
      const idx = Number(/point (\d+)\./.exec(user.content)![1]);
      expect(assistant.content.startsWith(`${idx}. ${q.points[idx - 1].text}. `)).toBe(true);
    }
    expect(checked).toBeGreaterThan(100);
    const part = buildInstructionPart(corpus, { seed: 5, items: 200, shares: { chat: 0, point: 0, router: 0, qa: 0, skeleton: 1 } });
    for (const d of part.train) {
      const answer = assistantOf(d.text);
      expect(answer.startsWith('1. ')).toBe(true);
      const points = parseSkeleton(answer);
      expect(points.length).toBe(answer.split('\n').length);
      expect(points.length).toBeGreaterThanOrEqual(3);
      expect(points.length).toBeLessThanOrEqual(8);
    }
  });

  it('router answers start with A, B or C', () => {
    const part = buildInstructionPart(corpus, { seed: 6, items: 60, shares: { chat: 0, point: 0, router: 1, qa: 0, skeleton: 0 } });
    const letters = new Set(part.train.map((d) => assistantOf(d.text)[0]));
    expect([...letters].sort()).toEqual(['A', 'B', 'C']);
  });

  it('QA passages are 300-1500 tokens (by estimate) and contain the answer exactly once', () => {
    const p = _internal.makePools(corpus, false);
    const rng = makeRng(12);
    let n = 0;
    for (let i = 0; i < 60; i++) {
      const item = _internal.qaItem(rng, p);
      if (!item) continue;
      n++;
      const re = new RegExp(`\\b${item.answer}\\b`, 'gi');
      expect(item.passage.match(re)?.length, item.answer).toBe(1);
      expect(item.passage.length).toBeGreaterThan(300 * 3.5 * 0.8);
      expect(item.passage.length).toBeLessThan(1500 * 3.5 + 2000);
      expect(item.messages[1].content).toContain(item.answer);
    }
    expect(n).toBeGreaterThan(40);
  });

  it('eval items come from held-out synsets and score answers', () => {
    const items = buildEvalItems(corpus, { seed: 1000, perKind: 10 });
    expect(new Set(items.map((i) => i.kind))).toEqual(new Set(['qa', 'skeleton', 'router', 'define']));
    for (const it of items) {
      expect(scoreEvalItem(it, it.expected).pass, `${it.kind}: ${it.expected}`).toBe(true);
      expect(scoreEvalItem(it, 'I do not know.').pass).toBe(false);
    }
  });
});
