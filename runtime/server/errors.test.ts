import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { describe, expect, it } from 'vitest';
import { BadRequestError, BranchesFailedError, GraphValidationError, KvExhaustedError, ModelOutputError, NotAvailableError, NotFoundError } from '../../core/errors.js';
import { errorHandler, mapError, RunFinishedError, TooManyRunsError } from './errors.js';

describe('mapError', () => {
  it('maps typed errors to statuses with one body shape', () => {
    const invalid = mapError(new GraphValidationError([{ pointer: '/nodes/0', message: 'bad' }], 'x.json'));
    expect(invalid.status).toBe(422);
    expect(invalid.body.error).toMatchObject({ code: 'graph_invalid', problems: [{ pointer: '/nodes/0', message: 'bad' }] });
    expect(mapError(new BadRequestError('input', 'no')).status).toBe(400);
    expect(mapError(new NotFoundError('run', 'r1')).status).toBe(404);
    expect(mapError(new NotAvailableError('speculate')).status).toBe(501);
    expect(mapError(new KvExhaustedError(10, 1, 4)).status).toBe(422);
    expect(mapError(new RunFinishedError('r1', 'ok'))).toMatchObject({ status: 409, body: { error: { code: 'run_finished', message: 'Run r1 has already finished (ok); there is nothing to cancel' } } });
    expect(mapError(new TooManyRunsError(3))).toMatchObject({ status: 429, headers: { 'Retry-After': '1' }, body: { error: { code: 'too_many_runs' } } });
  });

  it('maps unusable model output and all-branches-failed to 422 model_output, not a logged 500', async () => {
    const unusable = mapError(new ModelOutputError('outline', 'no numbered points'));
    expect(unusable).toMatchObject({ status: 422, body: { error: { code: 'model_output', message: 'Unusable model output in node outline: no numbered points' } } });
    const failed = mapError(new BranchesFailedError('join', [{ branch: 'a', message: 'boom' }]));
    expect(failed).toMatchObject({ status: 422, body: { error: { code: 'model_output', message: 'Every branch of join failed: a: boom' } } });
    const logged: unknown[] = [];
    const app = new Hono().onError(errorHandler((err) => logged.push(err)));
    app.get('/x', () => {
      throw new ModelOutputError('route', 'no branch matched');
    });
    const res = await app.request('/x');
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({ error: { message: 'Unusable model output in node route: no branch matched', code: 'model_output' } });
    expect(logged).toEqual([]);
  });

  it('keeps HTTP exceptions and hides unknown errors', () => {
    expect(mapError(new HTTPException(413, { message: 'too big' }))).toMatchObject({ status: 413, body: { error: { code: 'payload_too_large', message: 'too big' } } });
    const hidden = mapError(new Error('secret detail'));
    expect(hidden).toMatchObject({ status: 500, body: { error: { code: 'internal', message: 'Internal server error' } } });
  });
});
