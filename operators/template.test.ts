import { lastValueFrom, of } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { inputs as outputs } from './internal/operate.js';
import { tailText, template } from './template.js';

describe('template tail', () => {
  const text = 'Motion: tea\nAlice: one\nBob: two\nAlice: three\nBob: four';

  it('keeps the last lines', () => {
    expect(tailText(text, { maxLines: 2 })).toBe('Alice: three\nBob: four');
    expect(tailText(text, { maxLines: 9 })).toBe(text);
  });

  it('keeps as many whole last lines as fit in maxChars', () => {
    expect(tailText(text, { maxChars: 25 })).toBe('Alice: three\nBob: four');
    // A cut that falls exactly on a line start keeps that line.
    expect(tailText(text, { maxChars: 'Alice: three\nBob: four'.length })).toBe('Alice: three\nBob: four');
    expect(tailText(text, { maxChars: text.length })).toBe(text);
    expect(tailText(text, { maxLines: 3, maxChars: 25 })).toBe('Alice: three\nBob: four');
  });

  it('cuts inside a single line longer than maxChars, never through a surrogate pair', () => {
    expect(tailText('a\nbcdefgh', { maxChars: 3 })).toBe('fgh');
    expect(tailText('x😀yz', { maxChars: 3 })).toBe('yz');
  });

  it('bounds a transcript that grows turn after turn', async () => {
    let transcript = 'Motion: tea';
    for (let turn = 0; turn < 50; turn++) {
      transcript = await lastValueFrom(of({ transcript, turn: String(turn) }).pipe(template('{{transcript}}\nTurn {{turn}}: more words', { tail: { maxChars: 60 } }), outputs()));
      expect(transcript.length).toBeLessThanOrEqual(60);
    }
    expect(transcript.split('\n').at(-1)).toBe('Turn 49: more words');
    expect(transcript.split('\n')[0]).toMatch(/^Turn \d+: more words$/);
  });
});
