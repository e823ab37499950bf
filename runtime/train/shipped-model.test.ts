/**
 * The shipped default model (models/skein-mini) still loads and still performs as its
 * model card says, on the small fixed held-out slice committed beside it
 * (eval/heldout.json, written by `skein train card` with the bounds it holds).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { loadModel, MODELS_DIR, type LoadedCheckpoint } from '../checkpoint/load.js';
import { answerNll, evalItems, perplexityByPart } from './evaluate.js';
import type { HeldoutSlice } from './card.js';

const dir = path.join(MODELS_DIR, 'skein-mini');
let model: LoadedCheckpoint;
let slice: HeldoutSlice;

beforeAll(async () => {
  model = await loadModel(dir);
  slice = JSON.parse(fs.readFileSync(path.join(dir, 'eval', 'heldout.json'), 'utf8')) as HeldoutSlice;
});
afterAll(() => model?.dispose());

describe('models/skein-mini', () => {
  it('is a Llama with a 2048-token context, tied embeddings and a chat template', () => {
    expect(model.config.architecture).toBe('LlamaForCausalLM');
    expect(model.config.maxPositionEmbeddings).toBeGreaterThanOrEqual(2048);
    expect(model.config.tieWordEmbeddings).toBe(true);
    const tc = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as { chat_template?: string };
    expect(tc.chat_template).toContain('<|im_start|>');
  });

  it('keeps its held-out perplexity per data part within the stated bounds', () => {
    const ppl = perplexityByPart(model, slice.windows);
    for (const [part, bound] of Object.entries(slice.bounds.maxPerplexity)) expect(ppl[part].perplexity, part).toBeLessThanOrEqual(bound);
  });

  // Exact-match QA accuracy is 0 on this model (see its card), so it cannot catch a
  // regression; the teacher-forced answer NLL can (bound: measured + 5%).
  it('keeps the mean -log p of held-out passage answers within the stated bound', () => {
    const nll = slice.qa.map((item) => answerNll(model, item.messages, item.expected));
    const mean = nll.reduce((a, b) => a + b, 0) / nll.length;
    expect(mean).toBeLessThanOrEqual(slice.bounds.maxQaAnswerNll);
  });

  it('answers the SoT skeleton prompt on held-out questions with numbered lists', async () => {
    const r = await evalItems(model, slice.skeleton, { maxTokens: 48 });
    const lists = r.results.filter((x) => /^\s*1\.\s*\S/.test(x.output) && /\n\s*2\.\s*\S/.test(x.output)).length;
    expect(lists).toBeGreaterThanOrEqual(slice.bounds.minSkeletonLists);
  });
});
