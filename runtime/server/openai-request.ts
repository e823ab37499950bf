/**
 * The start every OpenAI route shares: the body as JSON (a 400 on `body` otherwise),
 * checked against the route's schema (core/requests.ts), and the model it names — the
 * served one when the field is empty or absent, a 404 on `model` when it names another.
 *
 * @example
 * const { body, model } = await readOpenAiBody(c, chatRequestSchema, deps);
 */
import type { Context } from 'hono';
import type { Engine } from '../../core/engine.js';
import { BadRequestError, NotFoundError } from '../../core/errors.js';
import type { FromSchema } from '../../core/from-schema.js';
import { checkRequest } from '../../core/requests.js';

export interface ModelDeps {
  engine: Pick<Engine, 'modelName'>;
  modelMatches: (name: string) => boolean;
}

export async function readOpenAiBody<S extends object>(c: Context, schema: S, deps: ModelDeps): Promise<{ body: FromSchema<S>; model: string }> {
  const json = await c.req.json<unknown>().catch(() => {
    throw new BadRequestError('body', 'must be JSON');
  });
  const body = checkRequest(schema, json);
  const model = (body as { model?: string }).model || deps.engine.modelName;
  if (!deps.modelMatches(model)) throw new NotFoundError('model', model);
  return { body, model };
}
