/**
 * LazyLLM's Aux Cache for one sequence (Fu et al. 2024, arXiv 2407.14057): the hidden
 * state of every token a pruned prefill chunk dropped, at the input of the layer it was
 * dropped at, so that a later step that needs the token again resumes it there instead of
 * recomputing it from layer 0 (ForwardSequence.resume). A token has at most one entry: it
 * leaves when it is revived (it then runs every later layer and has KV there).
 *
 * Memory is counted in the KV budget: the cache holds empty pool blocks as placeholders,
 * one per `perBlock` entries (a block's bytes over a hidden row's), so the scheduler's
 * admission and preemption see it like any KV. The entries themselves are JS Float32Arrays,
 * not tensors: they are read back once when parked and uploaded once when revived.
 *
 * @example
 * const aux = new AuxCache(pool, model.config.hiddenSize);
 * if (aux.reserve(chunk.length - 1)) { ...pruned forward...; aux.park(8, [3, 5], hidden); aux.fit(); }
 * aux.release(); // with the sequence: finished, failed, cancelled or preempted
 */
import type { KvBlock } from './block.js';
import type { KvPool } from './pool.js';

export interface Parked {
  /** Positions parked at one layer, ascending. */
  positions: number[];
  /** Their hidden states at that layer's input. */
  hidden: Float32Array[];
}

export class AuxCache {
  private readonly entries = new Map<number, { layer: number; hidden: Float32Array }>();
  /** Pool blocks held as the cache's share of the KV budget (no tensors in them). */
  private readonly held: KvBlock[] = [];
  /** Entries one block's budget covers. */
  readonly perBlock: number;

  constructor(
    private readonly pool: KvPool,
    hiddenSize: number,
  ) {
    this.perBlock = Math.max(1, Math.floor(pool.bytesPerBlock / (hiddenSize * 4)));
  }

  /** Parked tokens. */
  get size(): number {
    return this.entries.size;
  }

  /** Pool blocks held for them. */
  get blocks(): number {
    return this.held.length;
  }

  /** Holds the budget for `more` entries beyond the current ones; false, taking nothing, when the pool is short. */
  reserve(more: number): boolean {
    const need = Math.ceil((this.entries.size + more) / this.perBlock) - this.held.length;
    const got: KvBlock[] = [];
    for (let i = 0; i < need; i++) {
      const b = this.pool.allocate();
      if (b === null) {
        for (const g of got) this.pool.release(g);
        return false;
      }
      got.push(b);
    }
    this.held.push(...got);
    return true;
  }

  /** Gives back the budget the entries no longer need. */
  fit(): void {
    const need = Math.ceil(this.entries.size / this.perBlock);
    while (this.held.length > need) this.pool.release(this.held.pop()!);
  }

  /** Parks tokens dropped at `layer` (their hidden states at its input). Needs reserve() first. */
  park(layer: number, positions: readonly number[], hidden: readonly Float32Array[]): void {
    positions.forEach((p, i) => this.entries.set(p, { layer, hidden: hidden[i]! }));
    if (Math.ceil(this.entries.size / this.perBlock) > this.held.length) throw new Error('AuxCache.park: no budget reserved for the entries');
  }

  /** The tokens parked at each layer, layers ascending. */
  byLayer(): Map<number, Parked> {
    const out = new Map<number, Parked>();
    const sorted = [...this.entries.entries()].sort((a, b) => a[1].layer - b[1].layer || a[0] - b[0]);
    for (const [p, e] of sorted) {
      const at = out.get(e.layer) ?? { positions: [], hidden: [] };
      at.positions.push(p);
      at.hidden.push(e.hidden);
      out.set(e.layer, at);
    }
    return out;
  }

  /** Drops revived tokens. */
  take(positions: readonly number[]): void {
    for (const p of positions) this.entries.delete(p);
  }

  /** Drops every entry and gives back every block (idempotent). */
  release(): void {
    this.entries.clear();
    for (const b of this.held) this.pool.release(b);
    this.held.length = 0;
  }
}
