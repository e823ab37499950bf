import { describe, expect, it } from 'vitest';
import { expandPrompt, skeletonPrompt as opSkeleton, sotRouterPrompt } from '../../../operators/internal/sot.js';
import { formatSkeleton, graphPrompts, parseSkeleton, pointPrefill, routerPrompt, skeletonPrompt } from './sot-prompts.js';

describe('SoT prompts', () => {
  it('keeps the graph wording identical to the SoT operators', () => {
    expect(graphPrompts.skeleton('Q?')).toBe(opSkeleton('Q?'));
    expect(graphPrompts.point('Q?', '1. a\n2. b', 2)).toBe(expandPrompt('Q?', '1. a\n2. b', 2));
    expect(graphPrompts.router('Q?')).toBe(sotRouterPrompt.replace('{{in}}', 'Q?'));
  });

  it('formats and parses skeletons; reference prompts carry the question', () => {
    const sk = formatSkeleton(['Puppy, a young dog', 'Hound, a hunting dog', 'Toy dog, a small dog']);
    expect(sk.startsWith('1. Puppy')).toBe(true);
    expect(parseSkeleton(sk)).toEqual(['Puppy, a young dog', 'Hound, a hunting dog', 'Toy dog, a small dog']);
    expect(skeletonPrompt('What are the kinds of dog?')).toContain('\nWhat are the kinds of dog?\nSkeleton:');
    expect(routerPrompt('X?').startsWith('Question: X?')).toBe(true);
    expect(pointPrefill(2, 'Hound')).toBe('2. Hound');
  });
});
