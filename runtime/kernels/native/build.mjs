// Builds the native kernels (kernels.c → build/skein-kernels.node) at install time
// (package.json's "install" script; `npm run build:native` again by hand). Plain JavaScript so
// that it runs before tsx is there. Optional by design: without a C compiler, the Node-API
// headers or an x86-64 CPU it says why and exits 0, and matmul.ts runs the wasm build (same
// bits, slower). Nothing is downloaded: the headers come from Node's own install
// (<prefix>/include/node) or the node-api-headers package.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, 'build', 'skein-kernels.node');

function say(msg) {
  console.log(`skein native kernels: ${msg}`);
}

function headers() {
  const own = path.join(path.dirname(process.execPath), '..', 'include', 'node');
  if (existsSync(path.join(own, 'node_api.h'))) return own;
  try {
    const dir = createRequire(import.meta.url)('node-api-headers').include_dir;
    if (existsSync(path.join(dir, 'node_api.h'))) return dir;
  } catch {
    // not installed: reported below
  }
  return null;
}

function compiler() {
  for (const cc of [process.env.CC, 'cc', 'gcc', 'clang', 'clang-19']) {
    if (!cc) continue;
    try {
      execFileSync(cc, ['--version'], { stdio: 'ignore' });
      return cc;
    } catch {
      // try the next one
    }
  }
  return null;
}

function build() {
  if (process.env.SKEIN_NATIVE === '0') return say('skipped (SKEIN_NATIVE=0)');
  if (process.arch !== 'x64') return say(`skipped: the kernels are written for x86-64 (AVX2), this is ${process.arch}; the wasm ones run instead`);
  const inc = headers();
  if (inc === null) return say('skipped: no Node-API headers (node_api.h); the wasm kernels run instead');
  const cc = compiler();
  if (cc === null) return say('skipped: no C compiler (cc, gcc or clang); the wasm kernels run instead');
  mkdirSync(path.dirname(out), { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  // -ffp-contract=off: no fused multiply-adds, so every float step rounds as the wasm build's does.
  // -mavx2 -mf16c: the whole file may use them; the addon's supported() checks the CPU before any kernel runs.
  const args = ['-O3', '-std=c11', '-mavx2', '-mf16c', '-fPIC', '-shared', '-pthread', '-ffp-contract=off', '-fvisibility=hidden', '-Wall', '-Wextra', '-Werror', '-I', inc, '-o', tmp, path.join(here, 'kernels.c')];
  if (process.platform === 'darwin') args.push('-undefined', 'dynamic_lookup');
  try {
    execFileSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (e) {
    // No stale addon from an older source: matmul.ts would call functions it may lack.
    rmSync(out, { force: true });
    rmSync(tmp, { force: true });
    return say(`build failed (${cc}: ${e.message.split('\n')[0]}); the wasm kernels run instead`);
  }
  renameSync(tmp, out);
  say(`built ${path.relative(process.cwd(), out)} with ${cc}`);
}

build();
