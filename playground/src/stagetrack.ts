/**
 * A lane's stage track in words: per stage event, what the stage did (`compress 412→137 tok`),
 * what it decided (its options as the engine resolved them) and what it cost (its own wall
 * time). The stream panes list these under the node as they arrive, and the timeline labels
 * its stage blocks with them, so both say the same thing.
 *
 * @example
 * describeStage({ t: 5, stage: 'compress', decided: { rate: 0.5 }, figures: { tokensIn: 40, tokensOut: 20, wallMs: 3 } });
 * // { did: 'compress 40→20 tok', decided: 'rate=0.5', cost: '3 ms' }
 */
import type { StageMark } from './runview.js';
import { formatMs } from './format.js';

export interface StageWords {
  did: string;
  decided: string;
  cost: string;
}

export function describeStage(m: StageMark): StageWords {
  const f = m.figures;
  const parts: string[] = [m.stage];
  if (f.tokensIn !== undefined && f.tokensOut !== undefined) parts.push(`${f.tokensIn}→${f.tokensOut} tok`);
  if (f.prunedTokens !== undefined) parts.push(`${f.prunedTokens} pruned`);
  if (f.layersRun !== undefined) parts.push(`${f.layersRun} layers`);
  if (f.draftsProposed !== undefined) parts.push(`${f.draftsAccepted ?? 0}/${f.draftsProposed} drafts`);
  if (f.kvBlocksShared !== undefined) parts.push(`${f.kvBlocksShared} blocks shared`);
  return {
    did: parts.join(' '),
    decided: Object.entries(m.decided)
      .map(([k, v]) => `${k}=${v}`)
      .join(', '),
    cost: formatMs(f.wallMs),
  };
}
