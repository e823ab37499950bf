/**
 * Heads files (runtime/heads/files.ts): a written folder reads back as written; a missing
 * file, heads for another hidden size or vocabulary, a missing or misshapen tensor and a
 * tree whose path comes before its parent, a vocabulary id outside the model's and weights
 * narrower than heads reading the pending token need are CheckpointErrors naming the file
 * (and tensor).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError } from '../../core/errors.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { writeSafetensors } from '../checkpoint/safetensors.js';
import { findHeadsDir, HEADS_JSON, HEADS_WEIGHTS, readHeads, writeHeads, type HeadsData } from './files.js';

const d = 8;
const config = { hiddenSize: d, vocabSize: 50 };

function heads(kind: 'medusa' | 'cerberus' = 'cerberus'): HeadsData {
  return {
    meta: { kind, numHeads: 2, hiddenSize: d, vocabSize: 50, tree: [[0], [0, 0], [1]], gateThreshold: 1.5, gateRate: 0.2 },
    weights: [Float32Array.from({ length: d * d }, (_, i) => i / 100), Float32Array.from({ length: (kind === 'cerberus' ? 2 : 1) * d * d }, (_, i) => -i / 100)],
    biases: [new Float32Array(d).fill(0.5), new Float32Array(d).fill(-0.5)],
  };
}

function expectError(fn: () => unknown, file: string, message: RegExp, tensor?: string) {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).file).toBe(file);
    expect((err as CheckpointError).tensor).toBe(tensor);
    expect((err as Error).message).toMatch(message);
    return;
  }
  throw new Error('expected a CheckpointError');
}

describe('heads files', () => {
  it('read back what was written, for both kinds', () => {
    for (const kind of ['medusa', 'cerberus'] as const) {
      const dir = path.join(tempDir('skein-heads-'), kind);
      writeHeads(dir, heads(kind));
      const back = readHeads(dir, config);
      expect(back.meta).toEqual(heads(kind).meta);
      // Stored as F16: each value within its rounding (2^-11 relative).
      back.weights[1]!.forEach((x, i) => expect(Math.abs(x - heads(kind).weights[1]![i]!)).toBeLessThanOrEqual(Math.abs(heads(kind).weights[1]![i]!) * 2 ** -11));
      expect(back.biases[0]).toEqual(heads(kind).biases[0]);
    }
  });

  it('name the missing file', () => {
    const dir = tempDir('skein-heads-');
    expectError(() => readHeads(dir, config), path.join(dir, HEADS_JSON), /no such file.*skein train heads/);
    writeHeads(dir, heads());
    fs.rmSync(path.join(dir, HEADS_WEIGHTS));
    expectError(() => readHeads(dir, config), path.join(dir, HEADS_WEIGHTS), /no such file/);
  });

  it('refuse heads made for another hidden size or vocabulary, naming the file', () => {
    const dir = tempDir('skein-heads-');
    writeHeads(dir, heads());
    const json = path.join(dir, HEADS_JSON);
    expectError(() => readHeads(dir, { hiddenSize: 16, vocabSize: 50 }), json, /hidden size 8, the model's is 16/);
    expectError(() => readHeads(dir, { hiddenSize: 8, vocabSize: 49152 }), json, /vocabulary of 50, the model's is 49152/);
  });

  it('name a missing or misshapen tensor, and a tree path before its parent', () => {
    const dir = tempDir('skein-heads-');
    writeHeads(dir, heads());
    const file = path.join(dir, HEADS_WEIGHTS);
    writeSafetensors(file, { 'heads.0.weight': { shape: [d, d], data: new Float32Array(d * d) }, 'heads.0.bias': { shape: [d], data: new Float32Array(d) } });
    expectError(() => readHeads(dir, config), file, /missing/, 'heads.1.weight');
    writeSafetensors(file, {
      'heads.0.weight': { shape: [d, d], data: new Float32Array(d * d) },
      'heads.0.bias': { shape: [d], data: new Float32Array(d) },
      'heads.1.weight': { shape: [d, d], data: new Float32Array(d * d) },
      'heads.1.bias': { shape: [d], data: new Float32Array(d) },
    });
    expectError(() => readHeads(dir, config), file, /shape \[8, 8\], expected \[16, 8\]/, 'heads.1.weight');
    writeHeads(dir, { ...heads(), meta: { ...heads().meta, tree: [[0, 0], [0]] } });
    expectError(() => readHeads(dir, config), path.join(dir, HEADS_JSON), /comes before its parent/);
  });

  it('read back heads that read the pending token (wider inputs), and name a file whose widths do not say so', () => {
    const dir = tempDir('skein-heads-');
    const wide: HeadsData = {
      meta: { ...heads().meta, pendingToken: true },
      weights: [new Float32Array(2 * d * d).fill(0.25), new Float32Array(3 * d * d).fill(-0.25)],
      biases: heads().biases,
    };
    writeHeads(dir, wide);
    const back = readHeads(dir, config);
    expect(back.meta.pendingToken).toBe(true);
    expect(back.weights.map((w) => w.length)).toEqual([2 * d * d, 3 * d * d]);
    writeHeads(dir, heads());
    fs.writeFileSync(path.join(dir, HEADS_JSON), JSON.stringify({ ...heads().meta, pendingToken: true }));
    expectError(() => readHeads(dir, config), path.join(dir, HEADS_WEIGHTS), /shape \[8, 8\], expected \[16, 8\]/, 'heads.0.weight');
    fs.writeFileSync(path.join(dir, HEADS_JSON), JSON.stringify({ ...heads().meta, pendingToken: 'yes' }));
    expectError(() => readHeads(dir, config), path.join(dir, HEADS_JSON), /pendingToken must be true or false/);
  });

  it('keep their measured paths and forward costs, and name malformed ones', () => {
    const dir = tempDir('skein-heads-');
    const meta = { ...heads().meta, paths: [{ path: [0], share: 0.4 }, { path: [0, 0], share: 0.2 }], forwardCost: { rows: [1, 2, 4], relative: [1, 1.02, 1.3] } };
    writeHeads(dir, { ...heads(), meta });
    expect(readHeads(dir, config).meta.paths).toEqual(meta.paths);
    expect(readHeads(dir, config).meta.forwardCost).toEqual(meta.forwardCost);
    const json = path.join(dir, HEADS_JSON);
    writeHeads(dir, { ...heads(), meta: { ...meta, paths: [{ path: [0, 1], share: 0.2 }] } });
    expectError(() => readHeads(dir, config), json, /paths entry \[0,1\] comes before its parent/);
    writeHeads(dir, { ...heads(), meta: { ...meta, paths: [{ path: [0], share: 1.5 }] } });
    expectError(() => readHeads(dir, config), json, /share: 0\.\.1/);
    writeHeads(dir, { ...heads(), meta: { ...meta, forwardCost: { rows: [2, 1], relative: [1, 1] } } });
    expectError(() => readHeads(dir, config), json, /forwardCost must be/);
  });

  it('keep their vocabulary, and name a vocabulary id outside the model\'s', () => {
    const dir = tempDir('skein-heads-');
    const json = path.join(dir, HEADS_JSON);
    writeHeads(dir, { ...heads(), meta: { ...heads().meta, vocab: [0, 7, 49] } });
    expect(readHeads(dir, config).meta.vocab).toEqual([0, 7, 49]);
    expect(fs.readFileSync(json, 'utf8')).toContain('"vocab": [0,7,49]');
    writeHeads(dir, { ...heads(), meta: { ...heads().meta, vocab: [0, 50] } });
    expectError(() => readHeads(dir, config), json, /vocab id 50 is outside the model's vocabulary 0\.\.49/);
    writeHeads(dir, { ...heads(), meta: { ...heads().meta, vocab: [3, 3] } });
    expectError(() => readHeads(dir, config), json, /vocab id 3 appears twice/);
  });

  it('are found beside the model, per kind', () => {
    const model = tempDir('skein-model-');
    expect(findHeadsDir({ name: 'm', dir: model }, 'medusa')).toBeUndefined();
    writeHeads(path.join(model, 'heads', 'medusa'), heads('medusa'));
    expect(findHeadsDir({ name: 'm', dir: model }, 'medusa')).toBe(path.join(model, 'heads', 'medusa'));
    expect(findHeadsDir({ name: 'm', dir: model }, 'cerberus')).toBeUndefined();
  });
});
