/**
 * Parity with llama.cpp (node-llama-cpp, CPU build) on the same GGUF file,
 * SmolLM2-135M-Instruct Q4_1: token ids on 50 strings, teacher-forced next-token logits
 * on 5 prompts, and greedy continuations of chat prompts. Each model is loaded once.
 * Skipped, saying why, when the GGUF is not pulled (`npx skein pull smollm2-135m-instruct`)
 * or llama.cpp's prebuilt binary does not load here.
 *
 * Why the logits are not bit-equal: Skein dequantizes Q4_1 to f32 and multiplies in f32;
 * llama.cpp's CPU kernel for Q4_1 weights first quantizes each activation row to Q8_1
 * (8-bit, one scale per 32 values) and accumulates integer dot products. That rounding of
 * the activations is the known difference (the KV cache type is not: F16 and F32 caches in
 * llama.cpp gave the same figures), and it is what the tolerances below cover.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lastValueFrom } from 'rxjs';
import { initBackend } from '../runtime/backend.js';
import { loadModel, type LoadedCheckpoint } from '../runtime/checkpoint/load.js';
import { engineOnModel } from '../runtime/engine/index.js';
import { forward } from '../runtime/model/forward.js';
import { catalogueEntry } from '../runtime/pull/catalogue.js';
import { installedPath } from '../runtime/pull/pull.js';

const ggufPath = installedPath(catalogueEntry('smollm2-135m-instruct'));
const missing = existsSync(ggufPath) ? '' : `${ggufPath} is absent (npx skein pull smollm2-135m-instruct)`;
if (missing) console.warn(`llama.cpp parity tests skipped: ${missing}`);

/** 50 strings: prose, unicode, CJK, emoji, code, digits, whitespace runs, special tokens. */
export const TOKENIZER_STRINGS: string[] = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  ' leading space',
  'trailing space ',
  '  two leading spaces',
  'tabs\tand\ttabs',
  'new\nline',
  'many\n\n\nnewlines',
  'spaces     in     between',
  '\n\n  \t mixed whitespace \n',
  '12345',
  '3.14159 and 2.71828',
  '1,000,000 people in 2024',
  'phone: +1 (555) 123-4567',
  'Ünïcödé àccents: café, naïve, façade',
  'Straße und Größe',
  'Ελληνικά γράμματα',
  'Русский текст',
  'עברית',
  'العربية',
  '中文字符测试',
  '日本語のテキストです。',
  '한국어 텍스트',
  'emoji 😀🎉🚀',
  '👨‍👩‍👧‍👦 family',
  'flags 🇫🇷🇯🇵',
  'const x = (a, b) => a + b;',
  'def f(x):\n    return x ** 2\n',
  'if (a !== b) { console.log("diff"); }',
  '<div class="x">text</div>',
  'SELECT * FROM users WHERE id = 42;',
  '#include <stdio.h>',
  'https://example.com/path?q=1&r=2',
  'user@example.com',
  "it's don't won't they're",
  'UPPER CASE and lower case',
  'CamelCaseIdentifiersHere',
  'snake_case_identifier',
  '<|im_start|>user\nHi<|im_end|>',
  '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n',
  '<|endoftext|>',
  'text<|im_end|>more',
  '...!!!???',
  '— en–dash and em—dash “quotes” ‘single’',
  '$100 €50 £20 ¥1000',
  '∑ ∫ √ ∞ ≈ ≠',
  'a',
  ' ',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'The year 1999 was followed by 2000.',
];

/** The prompts for teacher-forced logits (rendered with the chat template where marked). */
const LOGIT_PROMPTS = [
  'The capital of France is Paris. The capital of Germany is',
  'def fibonacci(n):\n    if n < 2:\n        return n\n    return',
  'Once upon a time, in a small village by the sea, there lived',
  'Water boils at 100 degrees Celsius at sea level, but at higher altitudes',
];
const CHAT_PROMPTS = ['What is a dog?', 'Give me three tips for sleeping better.', 'Write a haiku about the sea.'];

type LlamaModule = typeof import('node-llama-cpp');
type Llama = Awaited<ReturnType<LlamaModule['getLlama']>>;
type LlamaModel = Awaited<ReturnType<Llama['loadModel']>>;
type LlamaContext = Awaited<ReturnType<LlamaModel['createContext']>>;
type LlamaSequence = ReturnType<LlamaContext['getSequence']>;

let skein: LoadedCheckpoint;
let llama: Llama | undefined;
let lmodel: LlamaModel;
let lcontext: LlamaContext;
/** One sequence, cleared before each use (a disposed sequence is released asynchronously). */
let lsequence: LlamaSequence;
let unavailable = missing;

beforeAll(async () => {
  if (unavailable) return;
  try {
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    lmodel = await llama.loadModel({ modelPath: ggufPath });
    lcontext = await lmodel.createContext({ contextSize: 512, threads: 1 });
    lsequence = lcontext.getSequence();
  } catch (err) {
    unavailable = `node-llama-cpp did not load here: ${(err as Error).message}`;
    console.warn(`llama.cpp parity tests skipped: ${unavailable}`);
    return;
  }
  await initBackend();
  skein = await loadModel(ggufPath);
}, 300_000);

afterAll(async () => {
  skein?.dispose();
  await lcontext?.dispose();
  await lmodel?.dispose();
  await llama?.dispose();
});

/** llama.cpp's next-token logits after each position of `ids`, teacher-forced. */
async function llamaLogits(ids: number[]): Promise<Float32Array[]> {
  await lsequence.clearHistory();
  const out = await lsequence.controlledEvaluate(ids.map((id) => [id, { generateNext: { logits: true } }] as [never, object]) as never);
  return out.map((o) => {
    const row = new Float32Array(skein.config.vocabSize);
    for (const [token, logit] of o!.next.logits!) row[token as number] = logit;
    return row;
  });
}

/** Skein's next-token logits after each position of `ids` (full forward, no cache kept). */
function skeinLogits(ids: number[]): Float32Array[] {
  const [r] = forward(skein, [{ ids, logits: 'all' }]);
  for (const e of r!.newKv) e?.k.dispose(), e?.v.dispose();
  return r!.logits;
}

/** llama.cpp's greedy continuation of `ids`, `n` tokens, stopping at an end-of-generation token. */
async function llamaGreedy(ids: number[], n: number): Promise<number[]> {
  await lsequence.clearHistory();
  const out: number[] = [];
  for await (const token of lsequence.evaluate(ids as never, { temperature: 0 })) {
    if (lmodel.isEogToken(token)) break;
    out.push(token as number);
    if (out.length >= n) break;
  }
  return out;
}

/** Two logits closer than this are a near-tie that activation rounding may flip (see the logit test's figure). */
const TIE = 0.5;
/** Largest Skein top-two gap allowed at a miss: well under the max logit difference measured (2.3). */
const MISS_GAP = 1;

/** The largest logit other than row[skip]. */
function secondBest(row: Float32Array, skip: number): number {
  let best = -Infinity;
  for (let i = 0; i < row.length; i++) if (i !== skip && row[i]! > best) best = row[i]!;
  return best;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

describe.skipIf(missing !== '')(`parity with llama.cpp on ${'SmolLM2-135M-Instruct.Q4_1.gguf'}`, () => {
  it('token ids equal llama.cpp\'s on 50 strings (unicode, CJK, emoji, code, digits, whitespace, special tokens)', (ctx) => {
    if (unavailable) return ctx.skip();
    expect(TOKENIZER_STRINGS).toHaveLength(50);
    const tokenizer = skein.tokenizer();
    const differ: string[] = [];
    for (const text of TOKENIZER_STRINGS) {
      const ours = tokenizer.encode(text);
      const theirs = Array.from(lmodel.tokenize(text, true)) as number[];
      if (JSON.stringify(ours) !== JSON.stringify(theirs)) differ.push(`${JSON.stringify(text)}: skein ${ours} llama.cpp ${theirs}`);
    }
    expect(differ).toEqual([]);
  });

  // Measured here (102 positions, exact attention kernel): top-1 agrees at 101, max
  // |Δlogit| 2.28 (0.061 of the logit range at that position). The miss is a position
  // where llama.cpp itself nearly ties (" designed" 0.07 above " that") and Skein puts
  // " that" 0.75 ahead — inside the logit difference the two runtimes' activation rounding
  // gives anyway. So: top-1 must agree at >= 99% of the decisive positions (llama.cpp's top
  // two more than TIE apart), and every miss must be a near-tie in llama.cpp and within
  // MISS_GAP logits in Skein.
  it('teacher-forced next-token logits agree within tolerance; top-1 agrees wherever llama.cpp is decisive, and misses are near-ties', async (ctx) => {
    if (unavailable) return ctx.skip();
    const tokenizer = skein.tokenizer();
    const prompts = [
      ...LOGIT_PROMPTS.map((p) => tokenizer.encodePrompt(p)),
      tokenizer.encodePrompt(tokenizer.renderChat([{ role: 'user', content: 'Explain why the sky is blue in two sentences.' }])),
    ];
    let positions = 0;
    let top1Same = 0;
    let decisive = 0;
    let decisiveSame = 0;
    const misses: string[] = [];
    let worstRel = 0;
    let worstAbs = 0;
    for (const ids of prompts) {
      const theirs = await llamaLogits(ids);
      const ours = skeinLogits(ids);
      for (let p = 0; p < ids.length; p++) {
        const a = ours[p]!;
        const b = theirs[p]!;
        positions++;
        const [x, y] = [argmax(a), argmax(b)];
        if (x === y) top1Same++;
        else {
          misses.push(`${JSON.stringify(tokenizer.decode([x]))}/${JSON.stringify(tokenizer.decode([y]))}`);
          expect(Math.abs(a[x]! - a[y]!), 'a miss must be close in Skein').toBeLessThan(MISS_GAP);
          expect(Math.abs(b[x]! - b[y]!), 'a miss must be a near-tie in llama.cpp').toBeLessThan(TIE);
        }
        if (b[y]! - secondBest(b, y) >= TIE) {
          decisive++;
          if (x === y) decisiveSame++;
        }
        // Max abs difference relative to the spread of llama.cpp's logits at that position.
        let maxDiff = 0;
        let lo = Infinity;
        let hi = -Infinity;
        for (let i = 0; i < a.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
          lo = Math.min(lo, b[i]!);
          hi = Math.max(hi, b[i]!);
        }
        worstRel = Math.max(worstRel, maxDiff / (hi - lo));
        worstAbs = Math.max(worstAbs, maxDiff);
      }
    }
    console.log(
      `llama.cpp parity: top-1 ${top1Same}/${positions} (${decisiveSame}/${decisive} where llama.cpp's top two are >= ${TIE} apart; near-tie misses ${misses.join(', ')}), ` +
        `worst max|Δlogit| ${worstAbs.toFixed(3)} (${worstRel.toFixed(4)} of the logit range)`,
    );
    expect(positions).toBeGreaterThanOrEqual(100);
    expect(decisiveSame / decisive).toBeGreaterThanOrEqual(0.99);
    expect(top1Same / positions).toBeGreaterThanOrEqual(0.95);
    expect(worstRel).toBeLessThan(0.075);
  }, 600_000);

  // Measured here: "What is a dog?" is equal for all 32 tokens; the other two part at their
  // first token, a near-tie in both models ("1" 30.46 vs "Here" 30.38 in Skein, 30.35 vs
  // 30.56 in llama.cpp; "The" 24.86 vs "In" 24.74, and 24.53 vs 24.77).
  it('greedy text on chat prompts equals llama.cpp\'s for 32 tokens, or parts at a near-tie', async (ctx) => {
    if (unavailable) return ctx.skip();
    const tokenizer = skein.tokenizer();
    for (const question of CHAT_PROMPTS) {
      const ids = tokenizer.encodePrompt(tokenizer.renderChat([{ role: 'user', content: question }]));
      const theirs = await llamaGreedy(ids, 32);
      const engine = engineOnModel(skein, tokenizer);
      const r = await lastValueFrom(engine.generate({ ids, sampling: { maxTokens: 32, temperature: 0 } })).finally(() => engine.close());
      if (r.type !== 'done') throw new Error('generation ended without a result');
      const ours = r.ids.filter((id) => !tokenizer.isEos(id));
      console.log(`greedy ${JSON.stringify(question)}: skein ${JSON.stringify(r.text)} | llama.cpp ${JSON.stringify(tokenizer.decode(theirs))}`);
      let same = 0;
      while (same < ours.length && same < theirs.length && ours[same] === theirs[same]) same++;
      if (same === Math.max(ours.length, theirs.length)) continue;
      // They part at a near-tie: both models rank the two candidates within TIE of each
      // other there, so the activation rounding (see the header) decides which comes first.
      const context = [...ids, ...theirs.slice(0, same)];
      const a = skeinLogits(context).at(-1)!;
      const b = (await llamaLogits(context)).at(-1)!;
      const [x, y] = [ours[same]!, theirs[same]!];
      console.log(`  first divergence at token ${same}: skein ${JSON.stringify(tokenizer.decode([x]))} (${a[x]!.toFixed(3)} vs ${a[y]!.toFixed(3)}), llama.cpp ${JSON.stringify(tokenizer.decode([y]))} (${b[y]!.toFixed(3)} vs ${b[x]!.toFixed(3)})`);
      expect(Math.abs(a[x]! - a[y]!)).toBeLessThan(TIE);
      expect(Math.abs(b[x]! - b[y]!)).toBeLessThan(TIE);
    }
  }, 600_000);
});
