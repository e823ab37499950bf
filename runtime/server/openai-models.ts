/**
 * OpenAI's model routes: `GET /v1/models` lists the one served model, `GET /v1/models/{id}`
 * answers for it (any name `modelMatches` accepts) and is a 404 in OpenAI's error shape
 * otherwise (`POST /v1/embeddings` is openai-embeddings.ts).
 *
 * @example
 * app.route('/v1', modelsRoute({ engine, modelMatches, createdS }));
 */
import { Hono } from 'hono';
import { NotFoundError } from '../../core/errors.js';
import type { Engine } from '../../core/engine.js';
import { openAiErrorResponse } from './openai-errors.js';

export interface ModelsDeps {
  engine: Engine;
  modelMatches: (name: string) => boolean;
  /** When the server started (seconds since the epoch): the model's `created`. */
  createdS: number;
  /** Why a fallback model is served instead of the default one. */
  fallbackReason?: string;
}

export function modelsRoute(deps: ModelsDeps): Hono {
  const app = new Hono();
  app.onError((err, c) => openAiErrorResponse(c, err));
  const model = () => ({
    id: deps.engine.modelName,
    object: 'model',
    created: deps.createdS,
    owned_by: 'skein',
    ...(deps.fallbackReason ? { fallbackReason: deps.fallbackReason } : {}),
  });

  app.get('/models', (c) => c.json({ object: 'list', data: [model()] }));
  // Model names may hold slashes (a folder): the id is the rest of the path.
  app.get('/models/:id{.+}', (c) => {
    const id = c.req.param('id');
    if (!deps.modelMatches(id)) throw new NotFoundError('model', id);
    return c.json(model());
  });
  return app;
}
