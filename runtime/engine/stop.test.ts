import { describe, expect, it } from 'vitest';
import { StopText } from './stop.js';

function feed(stops: string[], deltas: string[]) {
  const s = new StopText(stops);
  const out: string[] = [];
  let stopped = false;
  deltas.forEach((d, i) => {
    if (stopped) return;
    const r = s.push(d, i === deltas.length - 1);
    out.push(r.text);
    stopped = r.stopped;
  });
  return { out, stopped, text: s.text };
}

describe('StopText', () => {
  it('passes text through without stop strings', () => {
    expect(feed([], ['a', 'b'])).toEqual({ out: ['a', 'b'], stopped: false, text: 'ab' });
  });

  it('holds a tail that may grow into a stop string, then releases or cuts it', () => {
    expect(feed(['\n\n'], ['a\n', 'b'])).toEqual({ out: ['a', '\nb'], stopped: false, text: 'a\nb' });
    expect(feed(['\n\n'], ['a\n', '\nb'])).toEqual({ out: ['a', ''], stopped: true, text: 'a' });
  });

  it('finds a stop string spread over many deltas, and the earliest of several', () => {
    expect(feed(['END'], ['xE', 'N', 'Dy'])).toMatchObject({ stopped: true, text: 'x' });
    expect(feed(['cd', 'b'], ['abcd'])).toMatchObject({ stopped: true, text: 'a' });
  });

  it('releases what it holds on the final delta', () => {
    expect(feed(['xyz'], ['ax', 'y'])).toEqual({ out: ['a', 'xy'], stopped: false, text: 'axy' });
  });
});
