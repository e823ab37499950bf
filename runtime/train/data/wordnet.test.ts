import { describe, expect, it } from 'vitest';
import { definitionSentence, parseDataLine, splitGloss, withGlossArticle } from './wordnet.js';

const DOG =
  '02086723 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 003 @ 02085998 n 0000 #m 08011383 n 0000 ~ 01325095 n 0000 | ' +
  'a member of the genus Canis (probably descended from the common wolf) that has been domesticated by man since prehistoric times; occurs in many breeds; "the dog barked all night"  ';

describe('WordNet reader', () => {
  it('parses a data.noun line', () => {
    const s = parseDataLine(DOG, 'n')!;
    expect(s.id).toBe('n02086723');
    expect(s.lexName).toBe('noun.animal');
    expect(s.words).toEqual(['dog', 'domestic dog', 'Canis familiaris']);
    expect(s.pointers.get('@')).toEqual(['n02085998']);
    expect(s.pointers.get('#m')).toEqual(['n08011383']);
    expect(s.examples).toEqual(['the dog barked all night']);
    expect(definitionSentence(s)).toMatch(/^A dog is a member of the genus Canis .* occurs in many breeds\.$/);
  });

  it('skips licence lines and splits glosses', () => {
    expect(parseDataLine('  1 This software and database is being provided', 'n')).toBeNull();
    expect(splitGloss('move fast; "he runs"; "run!"')).toEqual({ definition: 'move fast', examples: ['he runs', 'run!'] });
  });

  it('adds an article to bare singular glosses only', () => {
    expect(withGlossArticle('large red deep-water crab')).toBe('a large red deep-water crab');
    expect(withGlossArticle('the staff of a pike')).toBe('the staff of a pike');
    expect(withGlossArticle('spiny-finned food fishes')).toBe('spiny-finned food fishes');
  });
});
