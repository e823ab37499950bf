import { describe, expect, it } from 'vitest';
import { StopMatcher } from './stop.js';

describe('StopMatcher', () => {
  it('holds back a possible stop prefix and trims the stop string', () => {
    const m = new StopMatcher(['\n\n', 'END']);
    expect(m.push('Hello\n')).toEqual({ text: 'Hello', stopped: false });
    expect(m.push('world E')).toEqual({ text: '\nworld ', stopped: false });
    expect(m.push('NDing')).toEqual({ text: '', stopped: true });
    expect(m.flush()).toBe('');
  });

  it('releases held text when it turns out not to be a stop', () => {
    const m = new StopMatcher(['STOP']);
    expect(m.push('a ST')).toEqual({ text: 'a ', stopped: false });
    expect(m.flush()).toBe('ST');
  });

  it('picks the earliest stop and passes everything when there is none', () => {
    expect(new StopMatcher(['b', 'a']).push('xxabc')).toEqual({ text: 'xx', stopped: true });
    expect(new StopMatcher([]).push('anything')).toEqual({ text: 'anything', stopped: false });
  });
});
