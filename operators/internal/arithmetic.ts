/**
 * Arithmetic on numbers for the calculator tool: + - * / %, unary minus, parentheses and
 * decimals, read by a recursive-descent parser and computed directly. It exists because a
 * calculator must never hand text to `eval` or `Function` (a graph's text is data), and
 * the libraries that evaluate expressions (mathjs, expr-eval) bring whole languages —
 * variables, functions, assignment — whose attack surface a four-operation tool does not need.
 *
 * @example
 * evaluateArithmetic('17 * (3 + 4)'); // 119
 */

/** Longest expression accepted, and deepest nesting of parentheses. */
const MAX_LENGTH = 200;
const MAX_DEPTH = 32;

export class ArithmeticError extends Error {
  constructor(readonly expression: string, reason: string) {
    super(`Cannot compute "${expression}": ${reason}`);
    this.name = 'ArithmeticError';
  }
}

export function evaluateArithmetic(expression: string): number {
  if (expression.length > MAX_LENGTH) throw new ArithmeticError(expression.slice(0, 20) + '…', `longer than ${MAX_LENGTH} characters`);
  let at = 0;
  const fail = (reason: string): never => {
    throw new ArithmeticError(expression, `${reason} at character ${at + 1}`);
  };
  const skip = () => {
    while (expression[at] === ' ') at++;
  };
  const peek = () => {
    skip();
    return expression[at];
  };

  // sum := product (('+' | '-') product)*
  const sum = (depth: number): number => {
    let value = product(depth);
    for (let op = peek(); op === '+' || op === '-'; op = peek()) {
      at++;
      const right = product(depth);
      value = op === '+' ? value + right : value - right;
    }
    return value;
  };
  // product := unary (('*' | '/' | '%') unary)*
  const product = (depth: number): number => {
    let value = unary(depth);
    for (let op = peek(); op === '*' || op === '/' || op === '%'; op = peek()) {
      at++;
      const right = unary(depth);
      if ((op === '/' || op === '%') && right === 0) fail('division by zero');
      value = op === '*' ? value * right : op === '/' ? value / right : value % right;
    }
    return value;
  };
  // unary := '-' unary | '(' sum ')' | number
  const unary = (depth: number): number => {
    const c = peek();
    if (c === '-') {
      at++;
      return -unary(depth);
    }
    if (c === '(') {
      if (depth >= MAX_DEPTH) fail(`parentheses nested deeper than ${MAX_DEPTH}`);
      at++;
      const value = sum(depth + 1);
      if (peek() !== ')') fail('expected ")"');
      at++;
      return value;
    }
    const m = /^[0-9]+(\.[0-9]+)?|^\.[0-9]+/.exec(expression.slice(at));
    if (!m) return fail(c === undefined ? 'unexpected end' : `unexpected "${c}"`);
    at += m[0].length;
    return Number(m[0]);
  };

  const value = sum(0);
  if (peek() !== undefined) fail(`unexpected "${expression[at]}"`);
  if (!Number.isFinite(value)) fail('the result is not a finite number');
  return value;
}
