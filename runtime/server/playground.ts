/**
 * The playground page: built from playground/src with esbuild into playground/dist
 * (bundled, no CDN, nothing fetched at run time) and served at `/`. `buildPlayground`
 * rebuilds only when the sources' hash differs from the one stamped in dist, so a clean
 * clone builds once on the first `npm start` and later starts are instant.
 *
 * @example
 * await buildPlayground();            // no-op when dist is up to date
 * app.route('/', playgroundRoute());
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { extname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono } from 'hono';
import { NotFoundError } from '../../core/errors.js';

export const playgroundSrcDir = fileURLToPath(new URL('../../playground/src/', import.meta.url));
export const playgroundDistDir = fileURLToPath(new URL('../../playground/dist/', import.meta.url));
const STAMP = '.build-hash';
// Static files copied as they are; everything else reaches dist through the bundle.
const COPIED = ['index.html', 'style.css', 'favicon.svg'];

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path));
    else if (!entry.name.endsWith('.test.ts')) out.push(path);
  }
  return out.sort();
}

function sourceHash(srcDir: string): string {
  const hash = createHash('sha256');
  for (const file of listFiles(srcDir)) {
    hash.update(relative(srcDir, file));
    hash.update(readFileSync(file));
  }
  return hash.digest('hex');
}

export interface BuildResult {
  built: boolean;
  outDir: string;
  ms: number;
}

export async function buildPlayground(opts: { srcDir?: string; outDir?: string; force?: boolean } = {}): Promise<BuildResult> {
  const srcDir = opts.srcDir ?? playgroundSrcDir;
  const outDir = opts.outDir ?? playgroundDistDir;
  const t0 = Date.now();
  const hash = sourceHash(srcDir);
  const stampPath = join(outDir, STAMP);
  if (!opts.force && existsSync(stampPath) && readFileSync(stampPath, 'utf8') === hash) {
    return { built: false, outDir, ms: Date.now() - t0 };
  }
  // esbuild is loaded only when a build is needed: a built tree serves without it.
  const esbuild = await import('esbuild');
  mkdirSync(outDir, { recursive: true });
  await esbuild.build({
    entryPoints: [join(srcDir, 'main.ts')],
    outfile: join(outDir, 'app.js'),
    bundle: true,
    format: 'esm',
    target: 'es2020',
    minify: true,
    sourcemap: 'linked',
    logLevel: 'silent',
  });
  for (const file of COPIED) {
    if (existsSync(join(srcDir, file))) copyFileSync(join(srcDir, file), join(outDir, file));
  }
  writeFileSync(stampPath, hash);
  return { built: true, outDir, ms: Date.now() - t0 };
}

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
};

export function playgroundRoute(dir: string = playgroundDistDir): Hono {
  const app = new Hono();
  const send = (file: string) => {
    // Only plain names of files that exist in dist: no paths, so no traversal.
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(file)) throw new NotFoundError('file', file);
    const path = join(dir, file);
    if (!existsSync(path) || !statSync(path).isFile()) throw new NotFoundError('file', file);
    return new Response(readFileSync(path), {
      headers: { 'Content-Type': contentTypes[extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-cache' },
    });
  };
  app.get('/', (c) => {
    if (!existsSync(join(dir, 'index.html'))) {
      return c.text('The playground is not built: run `npm run build:playground` (or start with `skein serve`).', 503);
    }
    return send('index.html');
  });
  app.get('/:file', (c) => send(c.req.param('file')));
  return app;
}
