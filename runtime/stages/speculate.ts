/**
 * The speculate stage (Medusa / Cerberus heads, TECHNIQUES §4, issue #13): heads trained
 * beside the model (runtime/heads) propose a candidate tree after every token; the next
 * step verifies the pending token and the tree in one tree-masked forward inside the
 * batched scheduler and keeps the longest accepted path (SequenceShape.speculate). Greedy
 * and seeded sampling are exact (the output is plain decoding's); 'typical' acceptance is
 * Medusa's, for sampling, and not distribution-exact. Cerberus adds the entropy gate: a
 * step whose base-model entropy is above the heads' calibrated threshold decodes plainly.
 *
 * A model can run it when it has trained heads (`npx skein train heads`); heads are read
 * once per engine and shared by every request (HeadsLibrary).
 *
 * @example
 * const library = new HeadsLibrary(model, { name: 'smollm2-135m-instruct', dir });
 * const shape = library.shape({ mode: 'cerberus' }); // SequenceShape.speculate
 */
import * as path from 'node:path';
import { BadRequestError, NotAvailableError } from '../../core/errors.js';
import type { Stages } from '../../core/stages.js';
import { availableHeads, findHeadsDir, readHeads, type HeadsKind } from '../heads/files.js';
import { SpeculativeHeads } from '../heads/heads.js';
import { buildTree, ranksPerHead } from '../heads/tree.js';
import type { LoadedModel } from '../model/types.js';
import { rowCostFrom, type RowCost } from '../scheduler/draft-budget.js';
import { measureForwardCost } from '../scheduler/self-spec-cost.js';
import type { SpeculateShape } from '../scheduler/scheduler.js';
import type { EngineStageDef } from './types.js';

export const speculateStage: EngineStageDef = {
  name: 'speculate',
  forward: 'the pending token and a candidate tree from the heads in one forward with a tree attention mask; the longest accepted path kept',
  unavailable: (model) => {
    if (availableHeads(model).length > 0) return undefined;
    const beside = model.dir ? path.join(model.dir, 'heads') : undefined;
    return {
      missing: `no trained heads beside the model${beside ? ` (looked in ${beside} and models/heads/${path.basename(model.dir!)})` : ''}`,
      remedy: `run \`npx skein train heads --model ${model.name}\` (--kind medusa|cerberus, --heads K; issue #13)`,
    };
  },
};

export type SpeculateOptions = NonNullable<Stages['speculate']>;

/** The heads of one model, read on first use per folder and kept until the engine closes. */
export class HeadsLibrary {
  private readonly loaded = new Map<string, SpeculativeHeads>();
  /** The forward's cost by rows on this machine, measured at the first request that speculates. */
  private measured: RowCost | undefined;

  constructor(
    private readonly model: LoadedModel,
    private readonly facts: { name: string; dir?: string },
  ) {}

  /** The scheduler shape for a request's speculate options; typed errors for missing heads or bad options. */
  shape(o: SpeculateOptions): SpeculateShape & { kind: HeadsKind } {
    const dir = this.folder(o);
    let heads = this.loaded.get(dir);
    if (heads === undefined) {
      heads = new SpeculativeHeads(this.model, readHeads(dir, this.model.config));
      this.loaded.set(dir, heads);
    }
    const meta = heads.meta;
    if (o.mode !== undefined && o.heads !== undefined && meta.kind !== o.mode) {
      throw new BadRequestError('stages.speculate/mode', `the heads in ${dir} are ${meta.kind} heads`);
    }
    let tree = meta.tree;
    if (o.nodes !== undefined) {
      const acc = meta.training?.rankAccuracy;
      tree = meta.paths !== undefined ? meta.paths.slice(0, o.nodes).map((p) => p.path) : acc !== undefined ? buildTree(acc, o.nodes) : meta.tree.slice(0, o.nodes);
    }
    const gate = o.entropyGate === undefined || o.entropyGate === true ? meta.gateThreshold : o.entropyGate === false ? null : o.entropyGate;
    // The batch's cost model (runtime/scheduler/draft-budget.ts), where the heads carry their
    // paths' measured shares: the forward's cost by rows measured here, once (~1 s on
    // SmolLM2) — the table the heads were shaped with was measured on another machine or
    // build (SmolLM2's: 2 rows 1.12 one-row forwards, here now 1.20); SKEIN_MEASURED_COSTS=0 keeps it.
    const share = new Map(meta.paths?.map((p) => [p.path.join(','), p.share]));
    const nodeValues = tree.map((p) => share.get(p.join(',')));
    const measure = process.env.SKEIN_MEASURED_COSTS !== '0';
    const costed = (measure || meta.forwardCost !== undefined) && nodeValues.every((v) => v !== undefined);
    const rowCost = costed ? (measure ? (this.measured ??= rowCostFrom(measureForwardCost(this.model, [1, 2, 4, 8, 16]))) : rowCostFrom(meta.forwardCost!)) : undefined;
    return {
      kind: meta.kind,
      heads,
      tree,
      ranks: ranksPerHead(tree, meta.numHeads),
      gate,
      acceptance: o.acceptance ?? 'exact',
      ...(rowCost !== undefined ? { nodeValues: nodeValues as number[], rowCost } : {}),
    };
  }

  private folder(o: SpeculateOptions): string {
    if (o.heads !== undefined) return path.resolve(o.heads);
    const kinds: HeadsKind[] = o.mode !== undefined ? [o.mode] : ['cerberus', 'medusa'];
    for (const kind of kinds) {
      const dir = findHeadsDir(this.facts, kind);
      if (dir !== undefined) return dir;
    }
    throw new NotAvailableError(`speculate with ${o.mode ?? 'any'} heads for ${this.facts.name}`, `train them with \`npx skein train heads --model ${this.facts.name} --kind ${o.mode ?? 'cerberus'}\``);
  }

  dispose(): void {
    for (const h of this.loaded.values()) h.dispose();
    this.loaded.clear();
  }
}
