import { describe, expect, it } from 'vitest';
import { synsetHeldOut, wordnetPart } from './corpus.js';
import type { Synset, WordNet } from './wordnet.js';

function fakeWordNet(n: number): WordNet {
  const list: Synset[] = Array.from({ length: n }, (_, i) => ({
    id: `n${String(i).padStart(8, '0')}`,
    pos: 'n',
    lexName: i % 2 ? 'noun.animal' : 'noun.artifact',
    words: [`thing${i}`],
    pointers: new Map(),
    definition: `an object numbered ${i}`,
    examples: [],
  }));
  return { list, synsets: new Map(list.map((s) => [s.id, s])), primary: new Map() };
}

describe('corpus split', () => {
  it('is deterministic and puts exactly the held-out synsets into val', () => {
    const wn = fakeWordNet(3000);
    const a = wordnetPart(wn, 10);
    const b = wordnetPart(wn, 10);
    expect(a).toEqual(b);
    const valText = a.val.map((d) => d.text).join('\n');
    const held = wn.list.filter((s) => synsetHeldOut(s.id));
    expect(held.length).toBeGreaterThan(20);
    expect(held.length).toBeLessThan(110);
    for (const s of held) expect(valText).toContain(`A ${s.words[0]} is an object`);
    const trainText = a.train.map((d) => d.text).join('\n');
    for (const s of held) expect(trainText).not.toContain(`${s.words[0]} is`);
  });
});
