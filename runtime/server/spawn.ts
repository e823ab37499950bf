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

/** A child process started by `spawnUntilReady`, once it has printed its ready line. */
export interface ReadyProcess {
  child: ChildProcess;
  /** The ready pattern's match in the output. */
  ready: RegExpExecArray;
  /** What it printed so far, stdout and stderr interleaved, its last 64 KB. */
  log(): string;
  /** SIGKILL, as a crash would end it. */
  stop(): void;
}

/**
 * Starts `command` and resolves once its output (stdout or stderr) matches `ready`; rejects,
 * killing it, when it exits first or `timeoutMs` passes. `what` names it in those errors.
 * Shared by the servers tests start as remotes (skein serve, llama-cpp-python).
 */
export function spawnUntilReady(command: string, args: string[], options: { what: string; ready: RegExp; timeoutMs?: number; cwd?: string }): Promise<ReadyProcess> {
  const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => (stop(), reject(new Error(`${options.what} did not start within ${timeoutMs} ms:\n${out.slice(-8192)}`))), timeoutMs);
    const onData = (d: Buffer) => {
      out = (out + d.toString()).slice(-65_536);
      const m = settled ? null : options.ready.exec(out);
      if (!m) return;
      settled = true;
      clearTimeout(timer);
      resolve({ child, ready: m, log: () => out, stop });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => (clearTimeout(timer), reject(new Error(`${options.what} exited (${code ?? signal}) before serving:\n${out.slice(-8192)}`))));
  });
}

export async function spawnSkeinServer(options: { model: string; token?: string; extraArgs?: string[]; timeoutMs?: number }): Promise<SpawnedServer> {
  // --no-build: a test's server must not rewrite playground/dist while another test serves it.
  const args = ['--import', 'tsx', cli, 'serve', '--port', '0', '--model', options.model, '--no-persist', '--grace', '0', '--no-build'];
  if (options.token) args.push('--token', options.token);
  const started = await spawnUntilReady(process.execPath, [...args, ...(options.extraArgs ?? [])], {
    what: 'skein serve',
    ready: /serving \S+ on (http:\/\/127\.0\.0\.1:\d+\/)/,
    cwd: root,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
  return { child: started.child, url: started.ready[1]!, stop: started.stop };
}
