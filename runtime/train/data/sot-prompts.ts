/**
 * The Skeleton-of-Thought prompts (arXiv 2307.15337; wording from the reference prompts in
 * imagination-research/sot, GPT-4 variants, see ../shared/design/TECHNIQUES.md §6). The
 * default model is trained on exactly these strings, so graphs that want SoT behaviour
 * from it should build their prompts with these functions.
 */

export function skeletonPrompt(question: string): string {
  return (
    "You're an organizer responsible for only giving the skeleton (not the full content) for answering the question. " +
    'Provide the skeleton in a list of points (numbered 1., 2., 3., etc.) to answer the question. ' +
    'Instead of writing a full sentence, each skeleton point should be very short with only 3~5 words. ' +
    'Generally, the skeleton should have 3~10 points. Now, please provide the skeleton for the following question.\n' +
    `${question}\nSkeleton:\n\nPlease start your answer from "1. " and do not output other things before that`
  );
}

/** Formats skeleton points as the numbered list the skeleton stage answers with. */
export function formatSkeleton(points: readonly string[]): string {
  return points.map((p, i) => `${i + 1}. ${p}`).join('\n');
}

/** Parses a skeleton answer back into its points ("1. Foo\n2. Bar" -> ["Foo", "Bar"]). */
export function parseSkeleton(text: string): string[] {
  const points: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\d+)\.\s*(.+?)\s*$/.exec(line);
    if (m && Number(m[1]) === points.length + 1) points.push(m[2]);
  }
  return points;
}

/** The point-expanding prompt; `index` is 1-based. */
export function pointPrompt(question: string, skeleton: string, index: number, point: string): string {
  return (
    "You're responsible for continuing the writing of one and only one point in the overall answer to the following question.\n\n" +
    `${question}\n\nThe skeleton of the answer is\n\n${skeleton}\n\n` +
    `Continue and only continue the writing of point ${index}. Write it very shortly in 1~2 sentences and do not continue with other points!\n\n` +
    `Please start your answer from "${index}. ${point}" and do not output other things before that`
  );
}

/** What the assistant turn of the point stage is pre-filled with. */
export function pointPrefill(index: number, point: string): string {
  return `${index}. ${point}`;
}

export function routerPrompt(question: string): string {
  return (
    `Question: ${question}\n\nHow would you like to answer the question?\n` +
    'A. Organize the answer as a list of points or perspectives (in the format of 1., 2., 3., etc.), and the points or perspectives can be answered independently without referring to the contents of the previous points.\n' +
    'B. Organize the answer as a list of points or perspectives (in the format of 1., 2., 3., etc.), and the contents of later points or perspectives cannot be answered independently without referring to the contents of the previous ones.\n' +
    'C. Do not organize the answer as a list of points or perspectives.\n\n' +
    'Just say A, B, or C. Do not explain. Do not provide an answer to the question.'
  );
}

/**
 * The wording Skein's own SoT operators send (operators/internal/sot.ts, checked equal in
 * sot-prompts.test.ts). The model is trained on both wordings so that either works.
 */
export const graphPrompts = {
  skeleton: (question: string) =>
    "You're an organizer responsible for only giving the skeleton (not the full content) for answering the question. " +
    'Provide the skeleton in a list of points (numbered 1., 2., 3., etc.) to answer the question. ' +
    'Instead of writing a full sentence, each skeleton point should be very short with only 3~5 words. ' +
    'Generally, the skeleton should have 3~10 points. Now, please provide the skeleton for the following question.\n' +
    `${question}\nSkeleton:`,
  point: (question: string, skeleton: string, index: number) =>
    "You're responsible for continuing the writing of one and only one point in the overall answer to the following question.\n\n" +
    `${question}\n\nThe skeleton of the answer is\n\n${skeleton}\n\n` +
    `Continue and only continue the writing of point ${index}. Write it **very shortly** in 1~2 sentence and do not continue with other points!`,
  router: (question: string) =>
    'Decide how the question below should be answered.\n' +
    'A: the answer is a list of independent points that can be written in parallel.\n' +
    'B: the answer has several points, but each depends on the ones before.\n' +
    'C: the answer is not a list of points (a fact, a calculation, code or a short reply).\n' +
    `Question: ${question}\nAnswer with one letter: A, B or C.`,
};
