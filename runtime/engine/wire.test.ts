import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../../core/errors.js';
import { fromWire, toWire } from './wire.js';

describe('errors across the worker boundary', () => {
  it("a prompt-too-long refusal comes back as the same BadRequestError, naming the context limit", () => {
    const sent = new BadRequestError('ids', "the prompt has 514 tokens, the model's context is 512");
    const back = fromWire(JSON.parse(JSON.stringify(toWire(sent))));
    expect(back).toBeInstanceOf(BadRequestError);
    expect(back).toMatchObject({ name: 'BadRequestError', code: 'bad_request', field: 'ids', message: sent.message });
    expect(back.message).toContain("the model's context is 512");
  });
});
