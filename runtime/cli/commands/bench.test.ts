import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../../core/errors.js';
import { parseBenchArgs } from './bench.js';

describe('skein bench --arg', () => {
  it('reads key=value settings, keeping any later = in the value', () => {
    expect(parseBenchArgs(['layers=4', 'model=a=b', 'empty='])).toEqual({ layers: '4', model: 'a=b', empty: '' });
  });

  it('refuses a setting without = or without a key, naming the option', () => {
    expect(() => parseBenchArgs(['layers'])).toThrow(BadRequestError);
    expect(() => parseBenchArgs(['=4'])).toThrow(/--arg: expected key=value/);
  });
});
