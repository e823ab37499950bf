/**
 * The KV block pool: a fixed budget of blocks (from bytes or a block count), reference
 * counted. A block whose last holder lets go stays cached when it is indexed in the
 * prefix tree and is evicted later, least recently used leaves first (RadixAttention);
 * an unindexed block (a partly filled one) is freed at once.
 *
 * @example
 * const pool = new KvPool({ numLayers: 2, kvDim: 64, blockSize: 16, budgetBytes: 64 << 20 });
 * const block = pool.allocate(); // null when every block is held
 */
import { BadRequestError } from '../../core/errors.js';
import { concatRows, emptyBlock, disposeBlockTensors, type JoinRows, type KvBlock } from './block.js';
import { PrefixTree } from './prefix-tree.js';

export interface KvPoolOptions {
  numLayers: number;
  /** numKvHeads * headDim. */
  kvDim: number;
  /** Tokens per block; 16 as in vLLM: small enough to waste little, big enough to index cheaply. */
  blockSize?: number;
  /** Budget in bytes (float32 keys and values of every layer); ignored when budgetBlocks is set. */
  budgetBytes?: number;
  budgetBlocks?: number;
  /** Index full blocks for reuse by later sequences (default true); off for A/B measurements. */
  prefixSharing?: boolean;
  /** How a filled block's row chunks become one tensor per layer (default a concat; block.ts JoinRows). */
  joinRows?: JoinRows;
}

export interface KvPoolStats {
  total: number;
  /** Held by at least one sequence. */
  used: number;
  /** Held by more than one sequence. */
  shared: number;
  /** Held by none, kept for prefix reuse, evictable. */
  cached: number;
  free: number;
  /** tf tensors the blocks hold (K and V chunks, cached blocks included): leak checks subtract them. */
  tensors: number;
}

export const DEFAULT_BLOCK_SIZE = 16;
// 256 MiB: a few thousand tokens of a 1B-class model, many more for small ones.
export const DEFAULT_KV_BUDGET_BYTES = 256 * 1024 * 1024;

export class KvPool {
  readonly blockSize: number;
  readonly numLayers: number;
  readonly numBlocks: number;
  readonly bytesPerBlock: number;
  readonly tree: PrefixTree;
  readonly prefixSharing: boolean;
  readonly joinRows: JoinRows;
  private readonly live = new Set<KvBlock>();
  private nextId = 0;
  private clock = 0;

  constructor(options: KvPoolOptions) {
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.numLayers = options.numLayers;
    this.bytesPerBlock = this.blockSize * options.numLayers * 2 * options.kvDim * 4;
    this.numBlocks =
      options.budgetBlocks ?? Math.floor((options.budgetBytes ?? DEFAULT_KV_BUDGET_BYTES) / this.bytesPerBlock);
    if (!(Number.isInteger(this.numBlocks) && this.numBlocks >= 1)) {
      const field = options.budgetBlocks !== undefined ? 'kvBudgetBlocks' : 'kvBudgetBytes';
      throw new BadRequestError(field, `the KV budget must hold at least one block (${this.bytesPerBlock} bytes each), got ${options.budgetBlocks ?? options.budgetBytes}`);
    }
    this.tree = new PrefixTree(this.blockSize);
    this.prefixSharing = options.prefixSharing ?? true;
    this.joinRows = options.joinRows ?? concatRows;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /** Blocks an allocation can reach now: free ones plus cached ones it may evict. */
  get available(): number {
    let cached = 0;
    for (const b of this.live) if (b.refs === 0) cached++;
    return this.numBlocks - this.live.size + cached;
  }

  /** A new empty block held once by the caller, evicting cache when needed; null when full. */
  allocate(): KvBlock | null {
    if (this.live.size >= this.numBlocks && !this.evictOne()) return null;
    const block = emptyBlock(this.nextId++, this.numLayers);
    block.refs = 1;
    block.lastUsed = ++this.clock;
    this.live.add(block);
    return block;
  }

  retain(block: KvBlock): void {
    if (!this.live.has(block)) throw new Error(`KvPool.retain: block ${block.id} is not live`);
    block.refs++;
    block.lastUsed = ++this.clock;
  }

  release(block: KvBlock): void {
    if (block.refs <= 0) throw new Error(`KvPool.release: block ${block.id} is not held`);
    block.refs--;
    block.lastUsed = ++this.clock;
    if (block.refs === 0 && block.node === null) this.drop(block);
  }

  /** Indexes a block that just filled; returns the canonical block for its prefix. */
  index(block: KvBlock): KvBlock {
    if (!this.prefixSharing) {
      block.parent?.partials.delete(block);
      return block;
    }
    return this.tree.insert(block);
  }

  stats(): KvPoolStats {
    let used = 0;
    let shared = 0;
    let cached = 0;
    let tensors = 0;
    for (const b of this.live) {
      if (b.refs > 0) used++;
      if (b.refs > 1) shared++;
      if (b.refs === 0) cached++;
      for (const chunks of b.k) tensors += chunks.length;
      for (const chunks of b.v) tensors += chunks.length;
    }
    return { total: this.numBlocks, used, shared, cached, free: this.numBlocks - this.live.size, tensors };
  }

  /** Evicts every cached block (held blocks stay). */
  clearCache(): void {
    while (this.evictOne());
  }

  private evictOne(): boolean {
    let victim: KvBlock | null = null;
    for (const b of this.live) {
      if (b.refs === 0 && b.node !== null && b.node.children.size === 0) {
        if (victim === null || b.lastUsed < victim.lastUsed) victim = b;
      }
    }
    if (victim === null) return false;
    this.tree.remove(victim);
    this.drop(victim);
    return true;
  }

  private drop(block: KvBlock): void {
    block.parent?.partials.delete(block);
    disposeBlockTensors(block);
    this.live.delete(block);
  }
}
