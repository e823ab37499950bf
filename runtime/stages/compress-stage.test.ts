import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadRequestError, CancelledError } from '../../core/errors.js';
import { loadWarmTempModel, type WarmModel } from '../../test/fixtures/warm-model.js';
import type { LoadedCheckpoint } from '../checkpoint/load.js';
import type { ModelTokenizer } from '../checkpoint/tokenizer.js';
import { compressPrompt, type CompressResult } from './compress.js';
import { CompressStage, defaultProtectedSuffix, defaultScorerLayers } from './compress-stage.js';

const PASSAGE =
  'The river runs past the old mill and the town square. In the spring the water is high. ' +
  'The secret number of the green door is 85448. Nobody remembers who built the bridge over the river.';

let model: LoadedCheckpoint;
let tok: ModelTokenizer;
let baseline: number;
let warm: WarmModel;

beforeAll(async () => {
  warm = await loadWarmTempModel({ maxPositionEmbeddings: 4096, seed: 5 });
  ({ model, tok, baseline } = warm);
});
afterAll(() => warm.dispose());

const chat = (content: string) => tok.encode(tok.renderChat([{ role: 'user', content }]));

describe('defaultProtectedSuffix', () => {
  it('protects the question line and the assistant header', () => {
    const ids = chat(`${PASSAGE}\n\nQuestion: What is the secret number?`);
    const n = defaultProtectedSuffix(tok, ids);
    expect(tok.decode(ids.slice(-n))).toBe('Question: What is the secret number?<|im_end|>\n<|im_start|>assistant\n');
  });

  it('protects the whole last paragraph: question and answer cue', () => {
    const ids = chat(`Read the passage.\n\nPassage:\n${PASSAGE}\n\nQuestion: What is the secret number?\nAnswer:`);
    const n = defaultProtectedSuffix(tok, ids);
    expect(tok.decode(ids.slice(-n))).toBe('Question: What is the secret number?\nAnswer:<|im_end|>\n<|im_start|>assistant\n');
  });

  it('protects nothing when the last line is the text itself', () => {
    expect(defaultProtectedSuffix(tok, chat(`Question: What?\n\nText:\n${PASSAGE}`))).toBe(0);
    expect(defaultProtectedSuffix(tok, tok.encode(PASSAGE))).toBe(0);
  });
});

describe('defaultScorerLayers', () => {
  it('is the first quarter of the layers, at least one and at most four', () => {
    expect([1, 2, 4, 8, 16, 30].map(defaultScorerLayers)).toEqual([1, 1, 1, 2, 4, 4]);
  });
});

describe('CompressStage', () => {
  it('compresses one segment per step, oldest first, and hands over the ids', () => {
    const stage = new CompressStage(model, tok);
    const ids = chat(`${PASSAGE}\n\nQuestion: What is the secret number?`);
    const finished: string[] = [];
    const results: CompressResult[] = [];
    for (const id of ['a', 'b']) {
      stage.start(id, ids, { rate: 0.5, keep: ['85448'] }, (r) => (finished.push(id), results.push(r)), (e) => { throw e; });
    }
    let steps = 0;
    while (stage.hasWork()) {
      stage.step();
      steps++;
      if (finished.length === 0) expect(stage.hasWork()).toBe(true);
    }
    expect(finished).toEqual(['a', 'b']);
    expect(steps).toBeGreaterThan(2);
    expect(results[0]).toEqual(results[1]);
    const direct = compressPrompt(model, tok, ids, { rate: 0.5, keep: ['85448'], protectedSuffix: defaultProtectedSuffix(tok, ids), scorerLayers: stage.scorerLayers, scorerVocab: stage.scorerVocab });
    expect(results[0]!.ids).toEqual(direct.ids);
    expect(tok.decode(results[0]!.ids)).toContain('85448');
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('rate 1 is done at once; bad options fail; cancel and close free the cache', () => {
    const stage = new CompressStage(model, tok);
    const ids = chat([PASSAGE, PASSAGE, PASSAGE].join(' '));
    expect(ids.length).toBeGreaterThan(400); // more than one segment
    let result: CompressResult | null = null;
    stage.start('one', ids, { rate: 1 }, (r) => (result = r), () => {});
    expect(result!.ids).toEqual(ids);
    expect(stage.hasWork()).toBe(false);

    let error: Error | null = null;
    stage.start('bad', ids, { rate: 2 }, () => {}, (e) => (error = e));
    expect(error).toBeInstanceOf(BadRequestError);

    stage.start('c', ids, { rate: 0.3 }, () => { throw new Error('cancelled job finished'); }, () => {});
    stage.step();
    stage.cancel('c');
    expect(stage.hasWork()).toBe(false);
    expect(tf.memory().numTensors).toBe(baseline);

    const failures: Error[] = [];
    stage.start('d', ids, { rate: 0.3 }, () => {}, (e) => failures.push(e));
    stage.step();
    stage.close(new CancelledError('engine closed'));
    expect(failures[0]).toBeInstanceOf(CancelledError);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('without a tokenizer the stage is not available', () => {
    let error: Error | null = null;
    new CompressStage(model, null).start('x', [1, 2, 3], { rate: 0.5 }, () => {}, (e) => (error = e));
    expect(error!.name).toBe('NotAvailableError');
  });
});
