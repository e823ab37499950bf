/**
 * The engine side of skipLayers and prunedPrefill: both shape the forwards of one sequence
 * inside the batched scheduler (runtime/scheduler SequenceShape), so the engine turns a
 * request's stage options into a shape at submit and the scheduler's figures back into
 * each stage's report.
 *
 * - skipLayers (Unified Layer Skipping, layer-selection.ts): the prompt is prefilled at full
 *   depth; decode runs the kept layers ('lossy'), or the kept layers draft `drafts` tokens
 *   and the full model verifies them in one forward ('self-speculative', output identical
 *   to plain decoding). With the model's skip adapter for the target (skip-adapters.ts;
 *   `adapter: false` turns it off) the kept layers run with it merged in. Skipped layers get no KV entry for the shallow tokens (see
 *   BlockTable.appendLayers).
 * - prunedPrefill (LazyLLM, lazy-schedule.ts): the prompt is prefilled in one forward and
 *   pruned progressively by its final token's attention inside it (the scheduler's
 *   prefillTake says why not chunk by chunk); pruned tokens leave no KV at the
 *   later layers. Rule for prefix sharing: a sequence prunes only positions it computes
 *   itself; KV adopted from the prefix cache is read as it is, and blocks written after the
 *   first pruned row are private to the sequence (never cached, never adopted), so no
 *   sequence ever reads another's pruned KV, nor loses rows of a prefix it shares.
 *
 * @example
 * const shape = sequenceShape(model.config.numLayers, { skipLayers: { targetSpeedup: 2 } });
 * scheduler.submit({ id, ids, sampling, shape: shape?.shape });
 */
import type { ShapeFigures, SequenceShape, SpeculateShape } from '../scheduler/scheduler.js';
import type { StageReport } from '../../core/engine.js';
import type { StageFigures } from '../../core/events.js';
import type { Stages } from '../../core/stages.js';
import { BadRequestError } from '../../core/errors.js';
import type { LoadedModel } from '../model/types.js';
import { lazySchedule } from './lazy-schedule.js';
import { unifiedLayers } from './layer-selection.js';

/** Drafts per verification by default: measured on SmolLM2 by `skein bench stages` (see there). */
export const DEFAULT_DRAFTS = 3;

export interface ShapedStages {
  shape: SequenceShape;
  /** The stage figures of a finished sequence, from the scheduler's. */
  report(figures: ShapeFigures | undefined): StageReport;
}

/**
 * The shape for a request's skipLayers / prunedPrefill options and its speculate shape
 * (built by runtime/stages/speculate.ts HeadsLibrary); undefined when none is asked.
 * Throws BadRequestError on bad options.
 */
export function sequenceShape(
  numLayers: number,
  stages: Pick<Stages, 'skipLayers' | 'prunedPrefill'>,
  speculate?: SpeculateShape & { kind: 'medusa' | 'cerberus' },
  adapters?: { decodeModel(targetSpeedup: number): LoadedModel | undefined },
): ShapedStages | undefined {
  const skip = stages.skipLayers;
  const lazy = stages.prunedPrefill;
  if (skip === undefined && lazy === undefined && speculate === undefined) return undefined;
  // The heads read the full model's hidden state and the tree is verified at full depth;
  // shallow decode steps in between would feed them another model's states.
  if (speculate !== undefined && skip !== undefined) {
    throw new BadRequestError('stages.speculate', 'does not combine with skipLayers (the heads draft from the full model)');
  }
  const shape: SequenceShape = {};
  if (speculate !== undefined) shape.speculate = speculate;
  const mode = skip?.mode ?? 'lossy';
  if (skip !== undefined) {
    shape.decodeLayers = unifiedLayers(numLayers, skip.targetSpeedup);
    shape.skipMode = mode;
    if (mode === 'self-speculative') shape.drafts = skip.drafts ?? DEFAULT_DRAFTS;
    // The model's skip adapter for this target, unless the request turns it off.
    const adapted = skip.adapter !== false ? adapters?.decodeModel(skip.targetSpeedup) : undefined;
    if (adapted !== undefined) shape.decodeModel = adapted;
  }
  if (lazy !== undefined) shape.prune = lazySchedule(numLayers, lazy);
  return {
    shape,
    report(f) {
      const out: StageReport = {};
      if (skip !== undefined) {
        out.skipLayers = {
          mode,
          targetSpeedup: skip.targetSpeedup,
          layers: [...shape.decodeLayers!],
          adapted: shape.decodeModel !== undefined,
          shallowForwards: f?.shallowForwards ?? 0,
          ...(mode === 'self-speculative'
            ? { draftsProposed: f?.draftsProposed ?? 0, draftsAccepted: f?.draftsAccepted ?? 0, verifications: f?.verifications ?? 0 }
            : {}),
          decodeMs: round(f?.decodeMs ?? 0),
        };
      }
      if (speculate !== undefined) {
        const verifications = f?.verifications ?? 0;
        const accepted = f?.draftsAccepted ?? 0;
        out.speculate = {
          kind: speculate.kind,
          acceptance: speculate.acceptance,
          treeNodes: speculate.tree.length,
          gate: speculate.gate,
          verifications,
          draftsProposed: f?.draftsProposed ?? 0,
          draftsAccepted: accepted,
          gatedSteps: f?.gatedSteps ?? 0,
          unaffordableSteps: f?.unaffordableSteps ?? 0,
          meanAcceptedLength: verifications > 0 ? Number((1 + accepted / verifications).toFixed(3)) : 1,
          acceptancePerHead: (f?.acceptedAtDepth ?? []).map((n) => Number((n / Math.max(1, verifications)).toFixed(3))),
          decodeMs: round(f?.decodeMs ?? 0),
        };
      }
      if (shape.prune !== undefined) {
        out.prunedPrefill = {
          layers: [...shape.prune.layers],
          keep: shape.prune.keep.map((k) => Number(k.toFixed(4))),
          prunedAtLayer: { ...(f?.prunedAtLayer ?? {}) },
          revive: shape.prune.revive ?? 0,
          revivedAtLayer: { ...(f?.revivedAtLayer ?? {}) },
          prefillMs: round(f?.prefillMs ?? 0),
        };
      }
      return out;
    },
  };
}

/** A shaping stage's event as the engine streams it: what it decided, what it did and cost. */
export interface ShapeStageEvent {
  stage: 'skipLayers' | 'prunedPrefill' | 'speculate';
  decided: Record<string, string | number | boolean>;
  figures: StageFigures;
}

/**
 * The stage events of a finished sequence's report, one per shaping stage that ran, in the
 * order they act (prefill, then decode): they travel to the operator's stream like
 * compress's, so `skein run --json` and the playground show them.
 */
export function stageEvents(report: StageReport): ShapeStageEvent[] {
  const events: ShapeStageEvent[] = [];
  const lazy = report.prunedPrefill;
  if (lazy) {
    const counts = Object.values(lazy.prunedAtLayer);
    events.push({
      stage: 'prunedPrefill',
      decided: {
        layers: lazy.layers.join(','),
        keep: lazy.keep.join(','),
        prunedAtLayer: Object.entries(lazy.prunedAtLayer).map(([layer, n]) => `${layer}:${n}`).join(','),
        revive: lazy.revive,
        revivedAtLayer: Object.entries(lazy.revivedAtLayer).map(([layer, n]) => `${layer}:${n}`).join(','),
      },
      // Tokens pruned by the last pruning layer: every one of them skipped the layers after it.
      figures: { prunedTokens: counts.length ? Math.max(...counts) : 0, wallMs: lazy.prefillMs },
    });
  }
  const skip = report.skipLayers;
  if (skip) {
    events.push({
      stage: 'skipLayers',
      decided: { mode: skip.mode, targetSpeedup: skip.targetSpeedup, layers: skip.layers.join(','), adapted: skip.adapted ?? false, shallowForwards: skip.shallowForwards },
      figures: {
        layersRun: skip.layers.length,
        ...(skip.draftsProposed !== undefined ? { draftsProposed: skip.draftsProposed, draftsAccepted: skip.draftsAccepted ?? 0 } : {}),
        wallMs: skip.decodeMs,
      },
    });
  }
  const spec = report.speculate;
  if (spec) {
    events.push({
      stage: 'speculate',
      decided: {
        kind: spec.kind,
        acceptance: spec.acceptance,
        treeNodes: spec.treeNodes,
        gate: spec.gate ?? 'off',
        gatedSteps: spec.gatedSteps,
        unaffordableSteps: spec.unaffordableSteps,
        verifications: spec.verifications,
        meanAcceptedLength: spec.meanAcceptedLength,
        acceptancePerHead: spec.acceptancePerHead.join(','),
      },
      figures: { draftsProposed: spec.draftsProposed, draftsAccepted: spec.draftsAccepted, wallMs: spec.decodeMs },
    });
  }
  return events;
}

const round = (ms: number) => Math.round(ms * 10) / 10;
