import { describe, expect, it } from 'vitest';
import { ArithmeticError, evaluateArithmetic } from './arithmetic.js';

describe('evaluateArithmetic', () => {
  it('computes with precedence, parentheses, unary minus and decimals', () => {
    expect(evaluateArithmetic('17 * 23')).toBe(391);
    expect(evaluateArithmetic('2 + 3 * 4 - 6 / 2')).toBe(11);
    expect(evaluateArithmetic('(2 + 3) * -(4 - 6)')).toBe(10);
    expect(evaluateArithmetic('1.5 * .5 + 10 % 4')).toBe(2.75);
    expect(evaluateArithmetic(' 8 - 2 - 1 ')).toBe(5);
  });

  it('refuses anything that is not arithmetic, naming where', () => {
    for (const bad of ['process.exit()', '1 +', '2 ** 3', '(1 + 2', '1 / 0', 'x', '', '1e308 * 10']) {
      expect(() => evaluateArithmetic(bad), bad).toThrow(ArithmeticError);
    }
    expect(() => evaluateArithmetic('1 + a')).toThrow(/unexpected "a" at character 5/);
    expect(() => evaluateArithmetic('('.repeat(40) + '1' + ')'.repeat(40))).toThrow(/nested deeper/);
    expect(() => evaluateArithmetic('1+'.repeat(200) + '1')).toThrow(/longer than 200/);
  });
});
