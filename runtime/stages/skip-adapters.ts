/**
 * The skip adapters of one model (runtime/adapters): for a skipLayers target, the model
 * its shallow forwards run on — the base model's kept layers with the adapter merged in,
 * when the model has an adapter for that target. Read, checked and merged on the first
 * request that needs it, kept until the engine closes. A model without an adapter for
 * the target decodes on its unadapted layers; an adapter that is there but does not fit
 * (another base file, other layers, bad shapes) is a CheckpointError, never ignored.
 *
 * @example
 * const library = new SkipAdapterLibrary(model, { name: 'smollm2-135m-instruct', dir });
 * const decodeModel = library.decodeModel(2); // AdaptedModel | undefined
 */
import * as fs from 'node:fs';
import { CheckpointError } from '../../core/errors.js';
import { adaptedModel, type AdaptedModel } from '../adapters/adapted-model.js';
import { checkpointSha256, findSkipAdapter, readSkipAdapter } from '../adapters/skip-adapter.js';
import type { LoadedModel } from '../model/types.js';

export class SkipAdapterLibrary {
  private readonly merged = new Map<number, AdaptedModel | null>();
  private baseSha: string | null = null;

  constructor(
    private readonly model: LoadedModel,
    private readonly facts: { name: string; dir?: string },
  ) {}

  /** The adapted model for a target, or undefined when the model has no adapter for it. */
  decodeModel(targetSpeedup: number): AdaptedModel | undefined {
    let m = this.merged.get(targetSpeedup);
    if (m === undefined) {
      const file = findSkipAdapter(this.facts, targetSpeedup);
      m = file === undefined ? null : adaptedModel(this.model, readSkipAdapter(file, this.model.config, this.sha(file)));
      this.merged.set(targetSpeedup, m);
    }
    return m ?? undefined;
  }

  /** The base checkpoint's sha256, computed once (an adapter names the file it was trained on). */
  private sha(adapterFile: string): string {
    if (this.baseSha === null) {
      if (!fs.existsSync(this.model.source)) {
        throw new CheckpointError({ file: adapterFile, reason: `the model (${this.model.source}) has no checkpoint file to check the adapter's base against` });
      }
      this.baseSha = checkpointSha256(this.model.source);
    }
    return this.baseSha;
  }

  dispose(): void {
    for (const m of this.merged.values()) m?.dispose();
    this.merged.clear();
  }
}
