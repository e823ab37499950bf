// The soak (`npx skein bench soak`, #16) as a test, small: random graphs over HTTP with
// random cancels, bad bodies and the engine worker killed halfway, on a tiny random
// checkpoint. Every run reaches a run-end, no 5xx, no KV block left in use, and the
// worker's tensors outside the KV blocks back at their baseline.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '../../runtime/bench/soak.js';
import { getBench } from '../../runtime/bench/index.js';
import { makeTempCheckpoint } from '../fixtures/checkpoints.js';

describe('soak', () => {
  let checkpoint: ReturnType<typeof makeTempCheckpoint>;
  beforeAll(() => {
    checkpoint = makeTempCheckpoint({ seed: 6, maxPositionEmbeddings: 256 });
  });
  afterAll(() => checkpoint?.cleanup());

  it('loses no run, answers no 5xx and leaks no KV block or tensor through cancels, bad bodies and a worker kill', async () => {
    const figures = (await getBench('soak')!.run({ log: () => {}, args: { n: '12', seed: '3', model: checkpoint.dir } })) as Record<string, unknown>;
    expect(figures).toMatchObject({ runsStarted: 12, runsLost: 0, status5xx: 0, networkErrors: [], workerRestarts: 1 });
    expect(figures.badBodiesAnswered4xx).toBe(figures.badBodies);
    const kv = figures.kvBlocks as { baseline: number; end: number };
    expect(kv.end).toBe(kv.baseline);
    const tensors = figures.tensors as { baseline: number; end: number };
    expect(tensors.baseline).toBeGreaterThan(0);
    expect(tensors.end).toBe(tensors.baseline);
  }, 120_000);
});
