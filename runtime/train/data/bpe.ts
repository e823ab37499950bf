/**
 * Byte-level BPE: a trainer and a fast encoder/decoder, written here because no
 * JavaScript library trains BPE (@huggingface/tokenizers and tiktoken ports only load and
 * run trained tokenizers). The scheme follows GPT-2: text is split by a regex
 * pre-tokenizer (the Llama-3 pattern, with the case-insensitive contraction group spelled
 * out because Node 20 regexes lack `(?i:)`), each piece is taken as UTF-8 bytes shown
 * through the GPT-2 byte-to-unicode table, and merges are learned greedily by pair counts.
 *
 * Training counts distinct pieces first and keeps, per pair, its count and the pieces it
 * occurs in, so each merge only revisits the pieces that contain the merged pair.
 * Token ids: 0..255 are the raw bytes, merges follow in order, special tokens come last.
 */

/** The pre-tokenizer pattern, shared verbatim with tokenizer.json's Split pre-tokenizer. */
export const PRETOKENIZE_PATTERN =
  "'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** GPT-2's reversible map from bytes to printable unicode characters. */
export function bytesToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = keep.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return table;
}

const BYTE_CHARS = bytesToUnicode();
const CHAR_TO_BYTE = new Map(BYTE_CHARS.map((c, b) => [c, b]));

export function pretokenize(text: string): string[] {
  return text.match(new RegExp(PRETOKENIZE_PATTERN, 'gu')) ?? [];
}

export interface BpeModel {
  /** Token strings by id, in byte-unicode form; special tokens verbatim at the end. */
  vocab: string[];
  /** Merges in rank order, as pairs of token ids. */
  merges: [number, number][];
  specialTokens: string[];
}

export interface TrainOptions {
  vocabSize: number;
  specialTokens?: readonly string[];
  /** Pairs seen fewer times than this are never merged. */
  minFrequency?: number;
  onProgress?: (merges: number, total: number) => void;
}

/** Counts pre-tokenized pieces over a stream of documents. */
export function countPieces(texts: Iterable<string>, counts = new Map<string, number>()): Map<string, number> {
  const re = new RegExp(PRETOKENIZE_PATTERN, 'gu');
  for (const text of texts) {
    for (const m of text.matchAll(re)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  }
  return counts;
}

const pairKey = (a: number, b: number) => a * 65536 + b;

/** `s` with every non-overlapping (a, b), left to right, replaced by `id`. */
function mergePair(s: readonly number[], a: number, b: number, id: number): number[] {
  const next: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
      next.push(id);
      i++;
    } else next.push(s[i]);
  }
  return next;
}

/** Max-heap of (count, key) with ties broken by the smaller key, for determinism. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number {
    return this.counts.length;
  }
  private above(i: number, j: number): boolean {
    return this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j]);
  }
  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }
  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]];
    const lastC = this.counts.pop()!;
    const lastK = this.keys.pop()!;
    if (this.counts.length) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.counts.length && this.above(l, m)) m = l;
        if (r < this.counts.length && this.above(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

/** Learns byte-level BPE merges from piece counts (see countPieces). */
export function trainBpe(pieces: Map<string, number>, opts: TrainOptions): BpeModel {
  const specials = [...(opts.specialTokens ?? SPECIAL_TOKENS)];
  const minFreq = opts.minFrequency ?? 2;
  const targetMerges = opts.vocabSize - 256 - specials.length;
  if (targetMerges < 0 || opts.vocabSize > 65536) throw new RangeError(`vocabSize ${opts.vocabSize} out of range`);
  const encoder = new TextEncoder();
  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [piece, f] of pieces) {
    const bytes = encoder.encode(piece);
    if (bytes.length < 2) continue;
    words.push(Array.from(bytes));
    freqs.push(f);
  }
  const counts = new Map<number, number>();
  const where = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const k = pairKey(s[i], s[i + 1]);
      counts.set(k, (counts.get(k) ?? 0) + freqs[w]);
      const list = where.get(k);
      if (list) list.push(w);
      else where.set(k, [w]);
    }
  }
  const heap = new PairHeap();
  for (const [k, c] of counts) heap.push(c, k);

  const vocab = BYTE_CHARS.slice();
  const merges: [number, number][] = [];
  const stamp = new Int32Array(words.length).fill(-1);
  while (merges.length < targetMerges && heap.size) {
    const [c, k] = heap.pop();
    const current = counts.get(k) ?? 0;
    if (current !== c) {
      if (current > 0) heap.push(current, k);
      continue;
    }
    if (c < minFreq) break;
    const a = Math.floor(k / 65536);
    const b = k % 65536;
    const id = vocab.length;
    vocab.push(vocab[a] + vocab[b]);
    merges.push([a, b]);
    const delta = new Map<number, number>();
    const add = (key: number, d: number) => delta.set(key, (delta.get(key) ?? 0) + d);
    for (const w of where.get(k) ?? []) {
      if (stamp[w] === id) continue;
      stamp[w] = id;
      const s = words[w];
      let has = false;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) { has = true; break; }
      if (!has) continue;
      const f = freqs[w];
      for (let i = 0; i + 1 < s.length; i++) add(pairKey(s[i], s[i + 1]), -f);
      const next = mergePair(s, a, b, id);
      words[w] = next;
      for (let i = 0; i + 1 < next.length; i++) {
        const nk = pairKey(next[i], next[i + 1]);
        add(nk, f);
        if (next[i] === id || next[i + 1] === id) {
          const list = where.get(nk);
          if (list) list.push(w);
          else where.set(nk, [w]);
        }
      }
    }
    where.delete(k);
    counts.delete(k);
    for (const [key, d] of delta) {
      if (d === 0 || key === k) continue;
      const nc = (counts.get(key) ?? 0) + d;
      if (nc <= 0) counts.delete(key);
      else counts.set(key, nc);
      if (d > 0 && nc > 0) heap.push(nc, key);
    }
    opts.onProgress?.(merges.length, targetMerges);
  }
  return { vocab: vocab.concat(specials), merges, specialTokens: specials };
}

/**
 * Encoder/decoder for a trained model. Produces the same ids as the Hugging Face BPE
 * model built from tokenizer.json (checked in bpe.test.ts), and is several times faster
 * on large inputs thanks to a per-piece cache, which is what the dataset packer needs.
 */
export class BpeTokenizer {
  readonly vocabSize: number;
  readonly specialIds: Map<string, number>;
  private readonly ranks = new Map<number, number>();
  private readonly mergedId = new Map<number, number>();
  private readonly cache = new Map<string, number[]>();
  private readonly specialRe: RegExp;
  private readonly pieceRe = new RegExp(PRETOKENIZE_PATTERN, 'gu');
  private readonly encoder = new TextEncoder();
  private readonly decoder = new TextDecoder();

  constructor(readonly model: BpeModel) {
    this.vocabSize = model.vocab.length;
    const base = model.vocab.length - model.specialTokens.length;
    this.specialIds = new Map(model.specialTokens.map((t, i) => [t, base + i]));
    model.merges.forEach(([a, b], r) => {
      this.ranks.set(pairKey(a, b), r);
      this.mergedId.set(pairKey(a, b), 256 + r);
    });
    const esc = model.specialTokens.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    this.specialRe = new RegExp(`(${esc.join('|')})`);
  }

  id(token: string): number {
    const id = this.specialIds.get(token);
    if (id === undefined) throw new RangeError(`not a special token: ${token}`);
    return id;
  }

  private encodePiece(piece: string): number[] {
    const hit = this.cache.get(piece);
    if (hit) return hit;
    let s = Array.from(this.encoder.encode(piece));
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = this.ranks.get(pairKey(s[i], s[i + 1]));
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const a = s[best];
      const b = s[best + 1];
      const id = 256 + bestRank;
      const next = mergePair(s, a, b, id);
      s = next;
    }
    if (this.cache.size < 500_000) this.cache.set(piece, s);
    return s;
  }

  /** Encodes text; special token strings in it become their single ids. */
  encode(text: string, out: number[] = []): number[] {
    const segments = text.split(this.specialRe);
    for (let j = 0; j < segments.length; j++) {
      const seg = segments[j];
      if (j % 2 === 1) {
        out.push(this.specialIds.get(seg)!);
        continue;
      }
      for (const m of seg.matchAll(this.pieceRe)) for (const id of this.encodePiece(m[0])) out.push(id);
    }
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    const base = this.vocabSize - this.model.specialTokens.length;
    let text = '';
    let bytes: number[] = [];
    const flush = () => {
      if (bytes.length) text += this.decoder.decode(new Uint8Array(bytes));
      bytes = [];
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id >= base) {
        flush();
        text += this.model.vocab[id];
        continue;
      }
      for (const ch of this.model.vocab[id]) bytes.push(CHAR_TO_BYTE.get(ch)!);
    }
    flush();
    return text;
  }
}
