/**
 * The scripted engine the HTTP, OpenAI and browser tests share: H4's fake engine with
 * the Skeleton-of-Thought script (the router answers A, skeletons are numbered, points
 * expand) and one long reply, for prompts saying "long answer", to cancel in the middle.
 *
 * @example
 * const engine = createServerTestEngine(5);
 */
import type { StageName } from '../../core/stages.js';
import { createFakeEngine, sotScript, type FakeEngine } from './fake-engine.js';

export const LONG_REPLY = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');

export function createServerTestEngine(delayMs: number, supportedStages?: StageName[]): FakeEngine {
  return createFakeEngine({
    delayMs,
    ...(supportedStages ? { supportedStages } : {}),
    modelName: 'fake-mini',
    script: [...sotScript(), { match: /long answer/, reply: LONG_REPLY }],
  });
}
