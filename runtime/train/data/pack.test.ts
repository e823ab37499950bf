import { describe, expect, it } from 'vitest';
import { BpeTokenizer, countPieces, trainBpe } from './bpe.js';
import { lossMask, openDataset, packDataset } from './pack.js';
import { renderChat } from './tokenizer-files.js';
import { makeRng } from './util.js';
import { tempDir } from '../../../test/fixtures/temp-dir.js';

const docs = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix} document number ${i} says hello to the world.`);

function build() {
  const parts = [
    { name: 'a', train: docs('alpha', 30), val: docs('alpha val', 3) },
    { name: 'b', train: docs('beta', 10), val: docs('beta val', 2) },
  ];
  const tok = new BpeTokenizer(trainBpe(countPieces(parts.flatMap((p) => p.train)), { vocabSize: 300 }));
  const dir = tempDir('skein-pack-');
  const eot = tok.id('<|endoftext|>');
  const manifest = packDataset(dir, parts, tok, { eot, specialTokens: { '<|endoftext|>': eot }, mix: { a: 3, b: 1 }, tokenizer: 'x' });
  return { dir, tok, manifest, eot };
}

describe('dataset packer and sampler', () => {
  it('writes contiguous parts with an <|endoftext|> before every document', () => {
    const { dir, tok, manifest, eot } = build();
    expect(manifest.dtype).toBe('uint16');
    expect(manifest.mix).toEqual({ a: 0.75, b: 0.25 });
    const [a, b] = manifest.parts;
    expect(a.train.start).toBe(0);
    expect(b.train.start).toBe(a.train.end);
    expect(manifest.splits.train.docs).toBe(40);
    const ds = openDataset(dir);
    expect(ds.train.tokens.length).toBe(manifest.splits.train.tokens);
    for (const off of ds.train.docStarts) expect(ds.train.tokens[off]).toBe(eot);
    const firstDoc = ds.train.tokens.subarray(ds.train.docStarts[0] + 1, ds.train.docStarts[1]);
    expect(tok.decode(firstDoc)).toBe('alpha document number 0 says hello to the world.');
  });

  it('samples windows with shifted targets, reproducibly', () => {
    const { dir } = build();
    const ds = openDataset(dir);
    const x = ds.sample(makeRng(1), 4, 16);
    const y = ds.sample(makeRng(1), 4, 16);
    expect(x.inputs).toBeInstanceOf(Int32Array);
    expect(x.inputs.length).toBe(64);
    expect(x.inputs).toEqual(y.inputs);
    for (let b = 0; b < 4; b++) for (let t = 0; t < 15; t++) expect(x.targets[b * 16 + t]).toBe(x.inputs[b * 16 + t + 1]);
  });

  it('respects mix overrides, document alignment and eval windows', () => {
    const { dir, eot } = build();
    const ds = openDataset(dir);
    const b = ds.manifest.parts[1].train;
    const batch = ds.sample(makeRng(2), 8, 8, { mix: { b: 1 }, alignProb: 1 });
    for (let i = 0; i < 8; i++) expect(batch.inputs[i * 8]).toBe(eot);
    const evals = ds.evalBatches(8, { perPart: 2, batch: 3 });
    expect(evals.map((e) => e.batch)).toEqual([3, 1]);
    expect(b.end).toBeGreaterThan(b.start);
  });

  it('masks chat prompts and keeps assistant replies with their <|im_end|>', () => {
    const text = renderChat([
      { role: 'user', content: 'What is a dog?' },
      { role: 'assistant', content: 'A dog is a canine.' },
    ]);
    const tok = new BpeTokenizer(trainBpe(countPieces([text, text]), { vocabSize: 300 }));
    const ids = tok.encode(text, [tok.id('<|endoftext|>')]);
    const mask = lossMask(ids, { imStart: tok.id('<|im_start|>'), imEnd: tok.id('<|im_end|>'), assistantHeader: tok.encode('assistant\n') });
    const kept = ids.filter((_, i) => mask[i] && i > 0);
    expect(tok.decode(kept)).toBe('A dog is a canine.<|im_end|>');
    expect(lossMask([1, 2, 3], { imStart: 9, imEnd: 8, assistantHeader: [7] })).toEqual(new Uint8Array([1, 1, 1]));

    const dir = tempDir('skein-pack-');
    const eot = tok.id('<|endoftext|>');
    packDataset(dir, [{ name: 'chat', train: [text, text, text], val: [text] }], tok, {
      eot, specialTokens: {}, mix: { chat: 1 }, tokenizer: 'x',
      chat: { imStart: tok.id('<|im_start|>'), imEnd: tok.id('<|im_end|>'), assistantHeader: tok.encode('assistant\n') },
    });
    const ds = openDataset(dir);
    // A window two documents long always holds one whole document.
    const batch = ds.sample(makeRng(3), 2, 2 * ids.length, { promptWeight: 0 });
    const plain = ds.sample(makeRng(3), 2, 2 * ids.length);
    expect(plain.inputs).toEqual(batch.inputs);
    expect([...plain.weights].every((w) => w === 1)).toBe(true);
    expect(new Set(batch.weights)).toEqual(new Set([0, 1]));
    const answer = batch.targets.slice(0, 2 * ids.length).filter((_, i) => batch.weights[i] === 1 && batch.targets[i] !== eot);
    expect(tok.decode(answer)).toContain('A dog is a canine.<|im_end|>');
  });
});
