// Browser-facing safety (#16 item 5 and 7): a web page must not drive a token-less local
// server. JSON routes take only application/json (a cross-origin text/plain POST needs no
// preflight), Host must be a name the server answers to (DNS rebinding), Origin must be
// the server itself or a configured CORS origin; wrong methods are 405 with Allow;
// Last-Event-ID is decimal digits only.
import { get } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseBytes } from '../../runtime/cli/commands/serve.js';
import { createApp, startServer, type AppOptions } from '../../runtime/server/index.js';
import { InsecureBindError } from '../../runtime/server/start.js';
import { allowedMethods } from '../../runtime/server/method-not-allowed.js';
import { defaultAllowedHosts, hostName, isLoopback } from '../../runtime/server/host-check.js';
import { createServerTestEngine } from '../fakes/server-engine.js';

const setup = (opts: Partial<AppOptions> = {}) => {
  const engine = createServerTestEngine(1);
  return { engine, app: createApp({ engine, log: () => {}, ...opts }) };
};
const runBody = JSON.stringify({ graphName: 'chat', input: { question: 'hi' } });

describe('browser-facing safety', () => {
  it.each(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', undefined])(
    'a %s POST starts nothing: 415',
    async (type) => {
      const { app, engine } = setup();
      for (const path of ['/v1/runs', '/v1/chat/completions', '/v1/graphs/validate']) {
        const res = await app.request(path, { method: 'POST', headers: type ? { 'content-type': type } : {}, body: runBody });
        expect(res.status, path).toBe(415);
        expect((await res.json()).error.code).toBe('unsupported_media_type');
      }
      expect(engine.started).toBe(0);
      const ok = await app.request('/v1/runs', { method: 'POST', headers: { 'content-type': 'Application/JSON; charset=utf-8' }, body: runBody });
      expect(ok.status).toBe(201);
    },
  );

  it('refuses a Host it does not answer to (DNS rebinding) and accepts its own names', async () => {
    const { app } = setup();
    for (const host of ['evil.example', 'evil.example:8787', '127.0.0.1.evil.example']) {
      const res = await app.request('/v1/runs', { headers: { Host: host } });
      expect(res.status, host).toBe(403);
      expect((await res.json()).error).toMatchObject({ code: 'forbidden', message: expect.stringContaining('--allowed-hosts') });
    }
    for (const host of ['localhost:8787', '127.0.0.1', '[::1]:8787', 'LOCALHOST']) {
      expect((await app.request('/v1/runs', { headers: { Host: host } })).status, host).toBe(200);
    }
    const listed = setup({ allowedHosts: ['skein.lan'] }).app;
    expect((await listed.request('/healthz', { headers: { Host: 'skein.lan:80' } })).status).toBe(200);
    expect((await listed.request('/healthz', { headers: { Host: 'localhost' } })).status).toBe(403);
    expect((await setup({ allowedHosts: ['*'] }).app.request('/healthz', { headers: { Host: 'any.where' } })).status).toBe(200);
  });

  it('refuses cross-origin calls unless the origin is configured for CORS; no CORS headers by default', async () => {
    const { app, engine } = setup();
    const init = (origin: string) => ({ method: 'POST', headers: { 'content-type': 'application/json', Origin: origin, Host: 'localhost:8787' }, body: runBody });
    const cross = await app.request('/v1/runs', init('http://evil.example'));
    expect(cross.status).toBe(403);
    expect(cross.headers.get('access-control-allow-origin')).toBeNull();
    expect((await app.request('/v1/runs', init('null'))).status).toBe(403);
    expect((await app.request('/v1/runs', init('http://localhost:3000'))).status).toBe(403);
    expect(engine.started).toBe(0);
    expect((await app.request('/v1/runs', init('http://localhost:8787'))).status).toBe(201);

    const withCors = setup({ corsOrigins: ['https://app.example'] }).app;
    const preflight = await withCors.request('/v1/runs', {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST', Host: 'localhost' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example');
    const allowed = await withCors.request('/v1/runs', init('https://app.example'));
    expect(allowed.status).toBe(201);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example');
  });

  it('answers a wrong method with 405 and an Allow header', async () => {
    const { app } = setup();
    const put = await app.request('/v1/runs', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, HEAD, POST');
    expect((await put.json()).error.code).toBe('method_not_allowed');
    const post = await app.request('/v1/runs/run_x/events', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect((await app.request('/v1/runs/run_x', { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: '{}' })).headers.get('allow')).toBe(
      'DELETE, GET, HEAD',
    );
    expect((await app.request('/v1/nothing/here')).status).toBe(404);
    expect(allowedMethods([{ method: 'GET', path: '/a/:id' }, { method: 'ALL', path: '/a/*' }], '/a/1')).toEqual(['GET', 'HEAD']);
  });

  it('takes Last-Event-ID as decimal digits only', async () => {
    const { app } = setup();
    const { id } = await (await app.request('/v1/runs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: runBody })).json();
    // A header's surrounding spaces are not part of its value (HTTP trims them), so ' 3' is tried in ?after=.
    for (const bad of ['0x10', '1e3', '-1', '3.0', '+3', '3 3', '99999999999999999999']) {
      const res = await app.request(`/v1/runs/${id}/events`, { headers: { 'Last-Event-ID': bad } });
      expect(res.status, JSON.stringify(bad)).toBe(400);
    }
    for (const bad of ['0x1', '%203', '3%20', '1e1']) expect((await app.request(`/v1/runs/${id}/events?after=${bad}`)).status, bad).toBe(400);
    const res = await app.request(`/v1/runs/${id}/events`, { headers: { 'Last-Event-ID': '2' } });
    expect(res.status).toBe(200);
    await res.text();
  });

  it('knows loopback from exposed binds', () => {
    expect(['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]'].every(isLoopback)).toBe(true);
    expect(['0.0.0.0', '::', '192.168.1.5', 'example.com'].some(isLoopback)).toBe(false);
    expect(hostName('[::1]:8787')).toBe('::1');
    expect(hostName('Example.com:80')).toBe('example.com');
    expect(defaultAllowedHosts('0.0.0.0')).toEqual(expect.arrayContaining(['localhost', '127.0.0.1']));
    expect(defaultAllowedHosts('10.0.0.2', ['skein.lan'])).toEqual(expect.arrayContaining(['10.0.0.2', 'skein.lan', 'localhost']));
  });
});

describe('exposed binds and serve options', () => {
  it('refuses a non-loopback bind without a token unless told --insecure', async () => {
    const quiet = { engine: createServerTestEngine(1), port: 0, build: false, print: () => {}, log: () => {} };
    await expect(startServer({ ...quiet, host: '0.0.0.0' })).rejects.toBeInstanceOf(InsecureBindError);
    const server = await startServer({ ...quiet, host: '0.0.0.0', insecure: true });
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
      expect(res.status).toBe(200);
      // fetch() may not set Host; node:http may, as a rebinding page's browser would send it.
      const status = await new Promise<number>((resolve, reject) =>
        get({ host: '127.0.0.1', port: server.port, path: '/healthz', headers: { Host: 'evil.example' } }, (r) => {
          r.resume();
          resolve(r.statusCode!);
        }).on('error', reject),
      );
      expect(status).toBe(403);
    } finally {
      await server.close();
    }
  });

  it('reads --kv-budget sizes', () => {
    const parse = parseBytes('--kv-budget');
    expect(parse('268435456')).toBe(2 ** 28);
    expect(parse('512MiB')).toBe(512 * 2 ** 20);
    expect(parse('1.5g')).toBe(1.5 * 2 ** 30);
    for (const bad of ['0', '-1', '12 parsecs', 'MiB', '1constructor']) expect(() => parse(bad), bad).toThrow(/--kv-budget/);
  });
});
