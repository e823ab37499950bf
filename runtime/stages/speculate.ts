/**
 * The speculate stage (Medusa / Cerberus heads, TECHNIQUES): extra decoding heads
 * trained beside the model propose draft tokens that one tree-masked forward verifies.
 * It asks the forward for draft positions with a tree attention mask. It needs the heads
 * (a `heads/` folder beside the model's weights) and the verifier (issue #13).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { EngineStageDef } from './types.js';

export const HEADS_DIR = 'heads';

export const speculateStage: EngineStageDef = {
  name: 'speculate',
  forward: 'draft positions after the last token with a tree attention mask, verified in the same forward',
  unavailable: (model) => {
    const heads = model.dir ? path.join(model.dir, HEADS_DIR) : undefined;
    if (!heads || !fs.existsSync(heads))
      return {
        missing: `no trained heads beside the model${heads ? ` (looked for ${heads})` : ''}`,
        remedy: `run \`npx skein train heads --model ${model.name}\` (issue #13)`,
      };
    return {
      missing: 'speculative decoding with heads is not implemented yet in this build (issue #13)',
      remedy: 'remove speculate from the node, or use a build that has issue #13',
    };
  },
};
