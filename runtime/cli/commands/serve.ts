/**
 * `skein serve`: the HTTP control plane and playground on one engine.
 *
 * @example
 * npx skein serve --port 8787 --model skein-mini --token secret
 */
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import { DEFAULT_MODEL, MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';
import type { SchedulingPolicy } from '../../scheduler/scheduler.js';
import { DEFAULT_HOST, DEFAULT_PORT, startServer } from '../../server/index.js';

function parseIntOption(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new BadRequestError(name, `must be an integer in [${min}, ${max}]`);
    return n;
  };
}

function parsePolicy(value: string): SchedulingPolicy {
  if (value !== 'fcfs' && value !== 'fair') throw new BadRequestError('--policy', `must be fcfs or fair, got ${JSON.stringify(value)}`);
  return value;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('Start the HTTP control plane (REST + SSE + OpenAI-compatible) and the web playground')
    .option('-p, --port <port>', 'port to listen on (0 picks a free one)', parseIntOption('--port', 0, 65535), DEFAULT_PORT)
    .option('--host <host>', 'address to bind; anything but loopback exposes the server', DEFAULT_HOST)
    .option('-m, --model <name|dir>', MODEL_OPTION_HELP)
    .option('--pull', `download ${DEFAULT_MODEL} first when --model is not given and it is missing (what npm start does)`)
    .option('--token <token>', 'require this bearer token on the API (default: $SKEIN_TOKEN)')
    .option('--max-runs <n>', 'runs in progress at once before 429', parseIntOption('--max-runs', 1, 1024), 8)
    .option('--policy <fcfs|fair>', 'scheduling across runs: fcfs (arrival order) or fair (the run served least goes first)', parsePolicy, 'fcfs')
    .option('--open', 'print the playground URL prominently and open a browser when a display exists')
    .action(async (opts: { port: number; host: string; model?: string; pull?: boolean; token?: string; maxRuns: number; policy: SchedulingPolicy; open?: boolean }) => {
      const token = opts.token ?? (process.env.SKEIN_TOKEN || undefined);
      const print = (line: string) => process.stderr.write(`${line}\n`);
      const { model, fallbackReason } = await modelOrDefault(opts.model, {
        pull: opts.pull,
        print,
        progress: process.stderr,
        log: (text) => process.stderr.write(text),
      });
      const server = await startServer({
        port: opts.port,
        host: opts.host,
        model,
        fallbackReason,
        token,
        maxConcurrentRuns: opts.maxRuns,
        policy: opts.policy,
        open: Boolean(opts.open),
      });
      if (opts.host !== '127.0.0.1' && opts.host !== 'localhost' && opts.host !== '::1' && !token) {
        process.stderr.write('skein: warning: listening beyond loopback without a token (set --token or SKEIN_TOKEN)\n');
      }
      const stop = () => {
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
