/**
 * The prefix tree (RadixAttention's radix tree at block granularity, like vLLM's prefix
 * caching): each node is one full KV block keyed by its token ids, under the node of the
 * block before it, so a path from the root spells a token prefix whose KV is cached.
 * Live partial blocks are listed under their parent node too, so a new sequence can share
 * the unfinished last block of a live one (a fork) or copy the matching rows of any block.
 *
 * @example
 * const m = tree.match(promptIds, promptIds.length - 1);
 * // m.full: blocks to share as they are; m.partial: a block and how many rows match
 */
import type { KvBlock } from './block.js';

export class TreeNode {
  /** Full children by their token ids joined with ',' (exact block lookup). */
  readonly children = new Map<string, TreeNode>();
  /** Live, partly filled blocks that continue this node's prefix. */
  readonly partials = new Set<KvBlock>();
  constructor(
    readonly block: KvBlock | null,
    readonly parent: TreeNode | null,
    readonly key: string,
  ) {}
}

export interface PrefixMatch {
  /** Full blocks matching ids[0 .. full.length*blockSize). */
  full: KvBlock[];
  /** The block with the longest match for the tokens after them, and that match's length. */
  partial: { block: KvBlock; rows: number } | null;
  /** The node the full blocks lead to (where a next block hangs). */
  node: TreeNode;
}

function commonPrefix(a: readonly number[], b: readonly number[], from: number, limit: number): number {
  let n = 0;
  while (n < a.length && from + n < limit && a[n] === b[from + n]) n++;
  return n;
}

export const blockKey = (tokens: readonly number[]): string => tokens.join(',');

export class PrefixTree {
  readonly root = new TreeNode(null, null, '');

  constructor(readonly blockSize: number) {}

  /** The longest cached prefix of ids[0 .. limit). */
  match(ids: readonly number[], limit: number): PrefixMatch {
    const B = this.blockSize;
    const full: KvBlock[] = [];
    let node = this.root;
    let pos = 0;
    while (pos + B <= limit) {
      const child = node.children.get(blockKey(ids.slice(pos, pos + B)));
      if (!child) break;
      full.push(child.block!);
      node = child;
      pos += B;
    }
    let partial: PrefixMatch['partial'] = null;
    const consider = (block: KvBlock) => {
      const rows = commonPrefix(block.tokens, ids, pos, limit);
      if (rows > 0 && (partial === null || rows > partial.rows)) partial = { block, rows };
    };
    for (const child of node.children.values()) consider(child.block!);
    for (const block of node.partials) consider(block);
    return { full, partial, node };
  }

  /**
   * Indexes a block that just filled, under its parent. When an identical block is already
   * indexed there (two sequences computed the same prefix), returns that one instead so the
   * caller can drop its duplicate.
   */
  insert(block: KvBlock): KvBlock {
    const parent = block.parent ?? this.root;
    parent.partials.delete(block);
    const key = blockKey(block.tokens);
    const existing = parent.children.get(key);
    if (existing) return existing.block!;
    const node = new TreeNode(block, parent, key);
    parent.children.set(key, node);
    block.node = node;
    return block;
  }

  /** Unlinks an indexed leaf block (eviction). */
  remove(block: KvBlock): void {
    const node = block.node;
    if (!node || node.children.size > 0) throw new Error('PrefixTree.remove: not an indexed leaf');
    node.parent!.children.delete(node.key);
    block.node = null;
  }
}
