/**
 * Small deterministic helpers shared by the data builders: a string hash for held-out
 * splits and a seeded PRNG, so every build of the corpus and instruction set is
 * reproducible from its seed alone.
 */
import { mulberry32 } from '../../model/random.js';

/** FNV-1a 32-bit hash of a string's UTF-16 code units; stable across runs and platforms. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Whether a document belongs to the held-out (validation) split. The decision depends only
 * on the document id and the fraction, so it never changes when other documents are added.
 */
export function isHeldOut(id: string, fraction = 0.02): boolean {
  return fnv1a32(`split:${id}`) % 10_000 < Math.round(fraction * 10_000);
}

/** A seeded PRNG returning floats in [0, 1). */
export type Rng = () => number;

/** mulberry32, the random models' PRNG: fast and good enough for shuffling and window sampling. */
export function makeRng(seed: number): Rng {
  return mulberry32(seed);
}

export function randInt(rng: Rng, lo: number, hiInclusive: number): number {
  return lo + Math.floor(rng() * (hiInclusive - lo + 1));
}

export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)];
}

/** Fisher-Yates shuffle of a copy. */
export function shuffled<T>(rng: Rng, items: readonly T[]): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** `k` distinct items in random order (all of them when k >= length). */
export function sample<T>(rng: Rng, items: readonly T[], k: number): T[] {
  return shuffled(rng, items).slice(0, k);
}

export function capitalize(s: string): string {
  return s.length ? s[0].toUpperCase() + s.slice(1) : s;
}

/** "a" or "an" by the first letter; good enough for dictionary headwords. */
export function article(word: string): string {
  return /^[aeiou]/i.test(word) && !/^(uni|use|usu|eu|one|once)/i.test(word) ? 'an' : 'a';
}

/** "x", "x and y", "x, y and z". */
export function joinList(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}
