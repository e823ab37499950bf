/**
 * Skeleton-of-Thought prompts (arXiv 2307.15337, TECHNIQUES §6) and the outline parser,
 * shared by the skeleton, expand and route operators.
 */
import type { FinishReason } from '../../core/engine.js';

export const skeletonPrompt = (question: string) =>
  "You're an organizer responsible for only giving the skeleton (not the full content) for answering the question. " +
  'Provide the skeleton in a list of points (numbered 1., 2., 3., etc.) to answer the question. ' +
  'Instead of writing a full sentence, each skeleton point should be very short with only 3~5 words. ' +
  'Generally, the skeleton should have 3~10 points. Now, please provide the skeleton for the following question.\n' +
  `${question}\nSkeleton:`;

/** The skeleton answer is pre-filled with this so the model starts the numbered list. */
export const skeletonPrefix = '1.';

export const expandPrompt = (question: string, outline: string, index: number) =>
  "You're responsible for continuing the writing of one and only one point in the overall answer to the following question.\n\n" +
  `${question}\n\nThe skeleton of the answer is\n\n${outline}\n\n` +
  `Continue and only continue the writing of point ${index}. Write it **very shortly** in 1~2 sentence and do not continue with other points!`;

export const expandPrefix = (index: number, point: string) => `${index}. ${point}`;

/** The SoT router: A suits SoT, B and C do not. `{{in}}` is the question. */
export const sotRouterPrompt =
  'Decide how the question below should be answered.\n' +
  'A: the answer is a list of independent points that can be written in parallel.\n' +
  'B: the answer has several points, but each depends on the ones before.\n' +
  'C: the answer is not a list of points (a fact, a calculation, code or a short reply).\n' +
  'Question: {{in}}\nAnswer with one letter: A, B or C.';

/** The router's answers: with a constraining engine the model can say nothing else. */
export const sotRouterAnswers = ['A', 'B', 'C'];

export interface Skeleton {
  question: string;
  /** The outline as numbered lines, "1. point". */
  outline: string;
  points: string[];
}

/**
 * Reads "1. point" lines in numbering order; the list ends at the first line that breaks
 * the numbering, so trailing chatter after the outline is ignored, or that repeats an
 * earlier point (small models loop: "2. Plan it out … 5. Plan it out"). A line that goes on
 * into the next point ("5. Use tools wisely  6. Sleep well", as SmolLM2 wrote once) is two
 * points: it is cut where the next number follows a space, unless the next line starts
 * with that number.
 */
export function parseOutline(text: string, maxPoints = 10): string[] {
  const points: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const m = /^\s*(\d+)\s*[.)]\s*(.*?)\s*$/.exec(line);
    if (!m) {
      if (points.length && line.trim()) break;
      continue;
    }
    if (Number(m[1]) !== points.length + 1) break;
    const nextNumber = points.length + 2;
    let next = new RegExp(`\\s(${nextNumber}\\s*[.)]\\s+\\S.*)$`).exec(m[2]!);
    // Not when the next line starts with that number itself ("1. Bake at 350 2. degrees\n2. …").
    const following = next ? lines.find((l, k) => k > i && l.trim()) : undefined;
    if (following !== undefined && new RegExp(`^\\s*${nextNumber}\\s*[.)]`).test(following)) next = null;
    if (next) lines.splice(i + 1, 0, next[1]!);
    const point = (next ? m[2]!.slice(0, next.index) : m[2]!).replace(/\*\*/g, '').replace(/[.:]+$/, '').trim();
    if (!point || points.some((p) => p.toLowerCase() === point.toLowerCase())) break;
    points.push(point);
    if (points.length >= maxPoints) break;
  }
  return points;
}

/**
 * The outline a skeleton call wrote, without its last line when the token limit stopped
 * the call (finish reason 'length') inside that line: a half-written point ("3. Start
 * building - make sure there's someone") would be expanded as if it were whole. Kept when
 * it holds the only point.
 */
export function uncutOutline(text: string, reason: FinishReason): string {
  if (reason !== 'length') return text;
  const end = text.lastIndexOf('\n');
  if (end < 0) return text;
  const whole = text.slice(0, end);
  return parseOutline(whole).length > 0 ? whole : text;
}

export function outlineOf(points: string[]): string {
  return points.map((p, i) => `${i + 1}. ${p}`).join('\n');
}
