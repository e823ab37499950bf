/**
 * `skein serve` in a child process, for the tests and benchmarks that need a second
 * server to talk to over a real socket (a remote provider): it binds a free loopback port
 * and resolves with the URL the server prints once it serves. `stop()` kills it.
 *
 * @example
 * const remote = await spawnSkeinServer({ model: 'skein-mini', token: 't' });
 * await fetch(new URL('/healthz', remote.url));
 * remote.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface SpawnedServer {
  child: ChildProcess;
  /** http://127.0.0.1:PORT/ */
  url: string;
  /** SIGKILL, as a crash would end it. */
  stop(): void;
}

const cli = fileURLToPath(new URL('../cli/main.ts', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));

export function spawnSkeinServer(options: { model: string; token?: string; extraArgs?: string[]; timeoutMs?: number }): Promise<SpawnedServer> {
  // --no-build: a test's server must not rewrite playground/dist while another test serves it.
  const args = ['--import', 'tsx', cli, 'serve', '--port', '0', '--model', options.model, '--no-persist', '--grace', '0', '--no-build'];
  if (options.token) args.push('--token', options.token);
  const child = spawn(process.execPath, [...args, ...(options.extraArgs ?? [])], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => (stop(), reject(new Error(`skein serve did not start within ${options.timeoutMs ?? 60_000} ms:\n${err}`))), options.timeoutMs ?? 60_000);
    child.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-8192);
      const m = /serving \S+ on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]!, stop });
      }
    });
    child.once('exit', (code, signal) => (clearTimeout(timer), reject(new Error(`skein serve exited (${code ?? signal}) before serving:\n${err}`))));
  });
}
