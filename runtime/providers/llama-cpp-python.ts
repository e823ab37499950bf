/**
 * llama-cpp-python's OpenAI-compatible server (PyPI `llama-cpp-python[server]`): a real
 * serving engine that is not Skein, for the remote-provider tests and anyone who wants to
 * try a graph against one. PyPI has no Linux wheel of it (pip compiles llama.cpp from the
 * sdist, ~6 minutes on two cores), so `.ci/llama-cpp-python.sh` builds it once into the
 * user's cache and this module finds that build and starts the server on a free loopback
 * port (its output and ready line read by spawnUntilReady, runtime/server/spawn.ts).
 *
 * What it takes of the OpenAI API, as tested: chat completions streamed over SSE with
 * temperature, top_p, seed, max_tokens, penalties and logit_bias; no usage block when
 * streaming (Skein then counts the streamed chunks); `continue_final_message` ignored (it
 * answers a new turn), so a provider on it says `continueFinalMessage: false`.
 *
 * @example
 * const server = await spawnLlamaCppPythonServer({ model: 'models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf', alias: 'smollm2' });
 * await fetch(`${server.baseUrl}/models`);
 * server.stop();
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { spawnUntilReady } from '../server/spawn.js';

/** The version `.ci/llama-cpp-python.sh` installs (pinned: its API behaviour above is what the tests saw). */
export const LLAMA_CPP_PYTHON_VERSION = '0.3.36';

/** Where the build lives: $SKEIN_LLAMA_CPP_PYTHON_HOME, else the user's cache. Keep in step with .ci/llama-cpp-python.sh. */
export function llamaCppPythonHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SKEIN_LLAMA_CPP_PYTHON_HOME) return env.SKEIN_LLAMA_CPP_PYTHON_HOME;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'skein', `llama-cpp-python-${LLAMA_CPP_PYTHON_VERSION}`);
}

/** The venv's python, or why there is none (the install script was not run, or failed). */
export function findLlamaCppPython(env: NodeJS.ProcessEnv = process.env): { python: string } | { missing: string } {
  const home = llamaCppPythonHome(env);
  const python = join(home, 'venv', 'bin', 'python');
  if (!existsSync(join(home, 'installed'))) return { missing: `no llama-cpp-python ${LLAMA_CPP_PYTHON_VERSION} build in ${home} (run: bash .ci/llama-cpp-python.sh)` };
  return { python };
}

export interface LlamaCppPythonServer {
  child: ChildProcess;
  /** http://127.0.0.1:PORT/v1 — what a provider's `baseUrl` takes. */
  baseUrl: string;
  /** What the server printed so far (uvicorn's access lines and its own messages), its last 64 KB. */
  log(): string;
  stop(): void;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

export async function spawnLlamaCppPythonServer(options: { model: string; alias: string; contextTokens?: number; timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<LlamaCppPythonServer> {
  const found = findLlamaCppPython(options.env);
  if ('missing' in found) throw new Error(found.missing);
  const port = await freePort();
  const args = ['-m', 'llama_cpp.server', '--model', options.model, '--model_alias', options.alias, '--host', '127.0.0.1', '--port', String(port)];
  // One thread: the tests share two cores with the local engine.
  args.push('--n_ctx', String(options.contextTokens ?? 2048), '--n_threads', '1', '--n_threads_batch', '1');
  const started = await spawnUntilReady(found.python, args, {
    what: "llama-cpp-python's server",
    ready: /Uvicorn running on/,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
  return { child: started.child, baseUrl: `http://127.0.0.1:${port}/v1`, log: started.log, stop: started.stop };
}
