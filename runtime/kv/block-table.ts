/**
 * One sequence's block table: the KV blocks holding its computed positions, in order. All
 * blocks but the last are full. It adopts cached prefixes from the prefix tree, reserves
 * blocks before a forward (so running out of memory is found before any compute, when
 * the scheduler can still wait or preempt), appends the forward's new KV after it,
 * copying a shared partial last block first (copy-on-write), and indexes blocks as they fill.
 *
 * @example
 * const table = new BlockTable(pool);
 * const cached = table.adopt(ids, ids.length - 1);
 * if (table.reserve(ids.length - cached)) { ... forward with table.past() ...; table.append(...) }
 */
import * as tf from '@tensorflow/tfjs-core';
import { recordPiece } from '../model/kv-pieces.js';
import type { LayerKvChunks } from '../model/types.js';
import { sameLeading } from '../model/same-leading.js';
import { consolidate, copyRows, type KvBlock } from './block.js';
import type { KvPool } from './pool.js';

export interface Adopted {
  /** Positions whose KV came from the cache or a live sequence. */
  tokens: number[];
  /** Blocks shared as they are (not copied). */
  sharedBlocks: number;
}

/** One layer's new KV for some of the appended tokens (indices into them, ascending), or none. */
export type LayerAppend = { k: tf.Tensor2D; v: tf.Tensor2D; tokenIndices: readonly number[] } | null;

/** One layer's KV of revived tokens (LazyLLM), rows ascending by position, or none. */
export type LayerRevived = { k: tf.Tensor2D; v: tf.Tensor2D; positions: readonly number[] } | null;

export class BlockTable {
  readonly blocks: KvBlock[] = [];
  /** Computed positions: the sum of the blocks' filled rows. */
  length = 0;
  /**
   * Set once the table holds KV that is not the full model's (a layer without an entry, a
   * pruned token): from then on every block it writes is private (see KvBlock.private),
   * because even complete rows after that point attended to the incomplete ones. Blocks
   * before it, adopted or not, stay shared: nothing ever removes rows from them.
   */
  tainted = false;
  /** Empty blocks taken by reserve() for the next append. */
  private reserved: KvBlock[] = [];
  /** Per layer, the positions appended without a row in the blocks there (pruned, or a skipped layer), ascending. */
  private holes: number[][] | null = null;
  /**
   * Per layer, KV of pruned tokens revived later (LazyLLM's Aux Cache), kept beside the
   * blocks rather than spliced into them: a block is consolidated and may be cached, and
   * attention does not depend on key order. No budget is taken for it: the rows fill holes
   * of positions whose blocks were already counted for every layer.
   */
  private revived: { positions: number[]; k: tf.Tensor2D[]; v: tf.Tensor2D[] }[] | null = null;
  /** past()'s flat lists of the leading full blocks' chunks (sealedChunks), null until asked or after release(). */
  private sealedPast: { blocks: KvBlock[]; k: tf.Tensor2D[][]; v: tf.Tensor2D[][] } | null = null;

  constructor(private readonly pool: KvPool) {}

  /**
   * Takes the longest cached prefix of ids[0 .. limit) from the prefix tree: full blocks are
   * shared, a live partial block matching all its rows is shared copy-on-write (a fork), and
   * a block matching only some rows has those rows copied. Only on an empty table.
   */
  adopt(ids: readonly number[], limit: number): Adopted {
    if (this.length > 0) throw new Error('BlockTable.adopt: table is not empty');
    const pool = this.pool;
    if (!pool.prefixSharing) return { tokens: [], sharedBlocks: 0 };
    const match = pool.tree.match(ids, Math.min(limit, ids.length));
    for (const b of match.full) {
      pool.retain(b);
      this.blocks.push(b);
    }
    this.length = match.full.length * pool.blockSize;
    let sharedBlocks = match.full.length;
    const partial = match.partial;
    if (partial) {
      const src = partial.block;
      if (src.node === null && partial.rows === src.tokens.length) {
        pool.retain(src);
        this.blocks.push(src);
        this.length += partial.rows;
        sharedBlocks++;
      } else {
        // Hold the source so that allocating the copy cannot evict it.
        pool.retain(src);
        const copy = pool.allocate();
        if (copy) {
          copyRows(src, copy, partial.rows);
          copy.parent = match.node;
          match.node.partials.add(copy);
          this.blocks.push(copy);
          this.length += partial.rows;
        }
        pool.release(src);
      }
    }
    return { tokens: ids.slice(0, this.length) as number[], sharedBlocks };
  }

  /** Blocks still to take before `n` more positions can be appended. */
  blocksNeeded(n: number): number {
    const B = this.pool.blockSize;
    const last = this.blocks.at(-1);
    const room = last && last.tokens.length < B ? B - last.tokens.length : 0;
    const cow = room > 0 && last!.refs > 1 ? 1 : 0;
    return Math.max(0, cow + Math.ceil(Math.max(0, n - room) / B) - this.reserved.length);
  }

  /** Takes every block that appending `n` positions needs, or none; false when memory is short. */
  reserve(n: number): boolean {
    const need = this.blocksNeeded(n);
    const got: KvBlock[] = [];
    for (let i = 0; i < need; i++) {
      const b = this.pool.allocate();
      if (!b) {
        for (const g of got) this.pool.release(g);
        return false;
      }
      got.push(b);
    }
    this.reserved.push(...got);
    return true;
  }

  /** Gives back reserved blocks that were not used. */
  unreserve(): void {
    for (const b of this.reserved) this.pool.release(b);
    this.reserved = [];
  }

  /**
   * Appends the KV of `tokens` (per layer, (tokens.length, kvDim)), taking ownership of the
   * tensors: they are kept as block chunks, or sliced and disposed.
   */
  append(tokens: readonly number[], k: tf.Tensor2D[], v: tf.Tensor2D[]): void {
    const all = tokens.map((_, i) => i);
    this.appendLayers(
      tokens,
      k.map((kl, l) => ({ k: kl, v: v[l]!, tokenIndices: all })),
    );
  }

  /**
   * Appends tokens whose KV may have holes, as the forward returns it: a layer that did not
   * run (null: skipped-layer decode) gets no rows, a layer past a pruning step gets rows for
   * the tokens live there only. There is no placeholder and no copy from another layer:
   * attention at a layer reads exactly the rows that layer computed, so a skipped layer's
   * KV is simply never there to be read. Such an append taints the table (see `tainted`).
   */
  appendLayers(tokens: readonly number[], kv: readonly LayerAppend[]): void {
    const pool = this.pool;
    const B = pool.blockSize;
    const n = tokens.length;
    if (kv.some((e) => e === null || e.tokenIndices.length !== n)) {
      this.tainted = true;
      this.recordHoles(n, kv);
    }
    let offset = 0;
    const keptWhole = new Set<tf.Tensor>();
    const hostRows = new Map<tf.Tensor, Float32Array>();
    while (offset < n) {
      let last = this.blocks.at(-1);
      if (last === undefined || last.tokens.length === B) {
        const parent = last?.node ?? pool.tree.root;
        last = this.take();
        last.parent = parent;
        if (!this.tainted) parent.partials.add(last);
        this.blocks.push(last);
      } else if (last.refs > 1) {
        const copy = this.take();
        copyRows(last, copy, last.tokens.length);
        copy.parent = last.parent;
        if (!this.tainted) copy.parent!.partials.add(copy);
        this.blocks[this.blocks.length - 1] = copy;
        pool.release(last);
        last = copy;
      }
      if (this.tainted && !last.private) {
        // Unlisted before any incomplete row lands, so no sequence can adopt it from now on.
        last.private = true;
        last.parent?.partials.delete(last);
      }
      const count = Math.min(B - last.tokens.length, n - offset);
      for (let l = 0; l < kv.length; l++) {
        const e = kv[l];
        if (e === null || e === undefined) continue;
        const lo = lowerBound(e.tokenIndices, offset);
        const hi = lowerBound(e.tokenIndices, offset + count);
        if (hi === lo) continue;
        const whole = lo === 0 && hi === e.k.shape[0];
        if (whole) keptWhole.add(e.k).add(e.v);
        last.k[l]!.push(whole ? e.k : piece(e.k, lo, hi - lo, hostRows));
        last.v[l]!.push(whole ? e.v : piece(e.v, lo, hi - lo, hostRows));
      }
      for (let i = 0; i < count; i++) last.tokens.push(tokens[offset + i]!);
      offset += count;
      this.length += count;
      if (last.tokens.length === B) this.seal(last);
    }
    for (const e of kv) {
      if (e === null || e === undefined) continue;
      for (const t of [e.k, e.v]) if (!keptWhole.has(t)) t.dispose();
    }
    this.unreserve();
  }

  /** Per layer, the chunks attention reads: the blocks', then revived rows (undefined for an empty table). */
  past(): LayerKvChunks[] | undefined {
    if (this.length === 0) return undefined;
    // Every step of every sequence asks for every layer's chunks (a decode step's past is ~30
    // × the blocks' chunks). Reading them block by block touched ~3,840 block lists at 1,024
    // tokens of context, each evicted from the caches by the weights' stream (0.47–0.54 ms
    // of an engine decode step, timed); the full blocks' chunks, which never change once
    // sealed, are kept flat per layer instead (sealedChunks) and copied as one slice.
    const sealed = this.sealedChunks();
    const out: LayerKvChunks[] = [];
    const blocks = this.blocks;
    for (let l = 0; l < this.pool.numLayers; l++) {
      const k = sealed.k[l]!.slice();
      const v = sealed.v[l]!.slice();
      for (let i = sealed.blocks.length; i < blocks.length; i++) {
        const bk = blocks[i]!.k[l]!;
        const bv = blocks[i]!.v[l]!;
        for (let j = 0; j < bk.length; j++) k.push(bk[j]!);
        for (let j = 0; j < bv.length; j++) v.push(bv[j]!);
      }
      const r = this.revived?.[l];
      if (r) {
        for (const t of r.k) k.push(t);
        for (const t of r.v) v.push(t);
      }
      out.push({ k, v });
    }
    return out;
  }

  /**
   * The chunks of the table's leading full blocks, per layer and in order, brought up to
   * date: a full block is sealed (consolidated) as it fills and its lists never change
   * after, so the flat lists only grow while the leading blocks stay the same objects;
   * they are built again when one is not (blocks released; a block is swapped for its
   * canonical copy only by seal, as it fills, before the lists can take it).
   */
  private sealedChunks(): { blocks: KvBlock[]; k: tf.Tensor2D[][]; v: tf.Tensor2D[][] } {
    const blocks = this.blocks;
    let c = this.sealedPast;
    if (c !== null && sameLeading(c.blocks, blocks) !== c.blocks.length) c = null;
    const layers = this.pool.numLayers;
    c ??= { blocks: [], k: Array.from({ length: layers }, () => []), v: Array.from({ length: layers }, () => []) };
    const B = this.pool.blockSize;
    for (let i = c.blocks.length; i < blocks.length && blocks[i]!.tokens.length === B; i++) {
      const b = blocks[i]!;
      for (let l = 0; l < layers; l++) {
        for (const t of b.k[l]!) c.k[l]!.push(t);
        for (const t of b.v[l]!) c.v[l]!.push(t);
      }
      c.blocks.push(b);
    }
    this.sealedPast = c;
    return c;
  }

  /** Per layer, the position of every row past() gives, in its order. */
  rowPositions(): number[][] {
    return Array.from({ length: this.pool.numLayers }, (_, l) => {
      const holes = this.holes?.[l] ?? [];
      const out: number[] = [];
      let h = 0;
      for (let p = 0; p < this.length; p++) {
        if (h < holes.length && holes[h] === p) h++;
        else out.push(p);
      }
      return [...out, ...(this.revived?.[l]?.positions ?? [])];
    });
  }

  /** Takes ownership of revived tokens' KV (the forward's resumedKv); their holes in the blocks stay, past() reads the rows after the blocks'. */
  addRevived(kv: readonly LayerRevived[]): void {
    kv.forEach((e, l) => {
      if (e === null) return;
      this.revived ??= Array.from({ length: this.pool.numLayers }, () => ({ positions: [], k: [], v: [] }));
      const r = this.revived[l]!;
      r.positions.push(...e.positions);
      r.k.push(e.k);
      r.v.push(e.v);
    });
  }

  /** tf tensors the revived rows hold (the pool's stats count the blocks' only). */
  get revivedTensors(): number {
    return (this.revived ?? []).reduce((n, r) => n + r.k.length + r.v.length, 0);
  }

  /** Token ids of the computed positions, as the blocks hold them. */
  tokens(): number[] {
    return this.blocks.flatMap((b) => b.tokens);
  }

  release(): void {
    this.unreserve();
    for (const r of this.revived ?? []) tf.dispose([...r.k, ...r.v]);
    this.revived = null;
    this.holes = null;
    for (const b of this.blocks) this.pool.release(b);
    this.blocks.length = 0;
    this.sealedPast = null;
    this.length = 0;
  }

  /** Notes the positions of `n` appended tokens that got no row at a layer. */
  private recordHoles(n: number, kv: readonly LayerAppend[]): void {
    this.holes ??= Array.from({ length: this.pool.numLayers }, () => []);
    for (let l = 0; l < this.pool.numLayers; l++) {
      const e = kv[l];
      const present = new Set(e?.tokenIndices ?? []);
      for (let i = 0; i < n; i++) if (!present.has(i)) this.holes[l]!.push(this.length + i);
    }
  }

  private take(): KvBlock {
    const b = this.reserved.pop() ?? this.pool.allocate();
    // reserve() ran before the forward, so this only fails on a scheduler bug.
    if (!b) throw new Error('BlockTable.append: no reserved block');
    return b;
  }

  /** A block just filled: one tensor per layer, then indexed (or swapped for its twin). */
  private seal(block: KvBlock): void {
    consolidate(block, this.pool.joinRows);
    if (block.private) return;
    const canonical = this.pool.index(block);
    if (canonical !== block) {
      this.pool.retain(canonical);
      this.blocks[this.blocks.length - 1] = canonical;
      this.pool.release(block);
    }
  }
}

/**
 * Rows offset..offset+count of t. On the wasm and cpu backends from one host copy of t per
 * append (`host`): tfjs-wasm's slice copies its whole input for every slice, and a pruned
 * prefill chunk's rows land in up to 9 blocks per layer — on a 4k-token LazyLLM prefill that
 * was 2.8 s of 16.6 (1.5 GB copied).
 */
function piece(t: tf.Tensor2D, offset: number, count: number, host: Map<tf.Tensor, Float32Array>): tf.Tensor2D {
  const backend = tf.getBackend();
  let out: tf.Tensor2D;
  if (backend !== 'wasm' && backend !== 'cpu') out = tf.slice(t, [offset, 0], [count, t.shape[1]]);
  else {
    let rows = host.get(t);
    if (rows === undefined) host.set(t, (rows = t.dataSync() as Float32Array));
    const width = t.shape[1];
    out = tf.tensor2d(rows.slice(offset * width, (offset + count) * width), [count, width]);
  }
  // So that the KV mirror reads it as a view of t's stored copy (kv-pieces.ts).
  recordPiece(out, t, offset);
  return out;
}

/** First index in ascending `xs` whose value is at least `x`. */
function lowerBound(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
