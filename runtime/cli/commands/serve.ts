/**
 * `skein serve`: the HTTP control plane and playground on one engine.
 *
 * @example
 * npx skein serve --port 8787 --model skein-mini --token secret
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { BadRequestError } from '../../../core/errors.js';
import { applyKvCache, KV_CACHE_HELP, parseKvCache, type KvCacheFlag } from './kv-cache-flag.js';
import { DEFAULT_MODEL, MODEL_OPTION_HELP, modelOrDefault } from '../../pull/default-model.js';
import type { SchedulingPolicy } from '../../scheduler/scheduler.js';
import { isLoopback } from '../../server/host-check.js';
import { parseServerProviders, type ServerProviders } from '../../server/providers.js';
import { DEFAULT_HOST, DEFAULT_PORT, startServer } from '../../server/index.js';

function parseIntOption(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new BadRequestError(name, `must be an integer in [${min}, ${max}]`);
    return n;
  };
}

/** Bytes, or a number with KiB/MiB/GiB (or K/M/G): `512MiB`, `1G`, `268435456`. */
export function parseBytes(name: string) {
  const units: Record<string, number> = { '': 1, k: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30 };
  return (value: string): number => {
    const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
    const unit = m && Object.hasOwn(units, m[2]!.toLowerCase()) ? units[m[2]!.toLowerCase()]! : NaN;
    const bytes = m ? Math.floor(Number(m[1]) * unit) : NaN;
    if (!(bytes >= 1)) throw new BadRequestError(name, `must be a size in bytes, KiB, MiB or GiB, got ${JSON.stringify(value)}`);
    return bytes;
  };
}

const list = (value: string, previous: string[] = []): string[] => [...previous, ...value.split(',').map((s) => s.trim()).filter(Boolean)];

function parsePolicy(value: string): SchedulingPolicy {
  if (value !== 'fcfs' && value !== 'fair') throw new BadRequestError('--policy', `must be fcfs or fair, got ${JSON.stringify(value)}`);
  return value;
}

interface ServeOptions {
  kvCache?: KvCacheFlag;
  port: number;
  host: string;
  model?: string;
  pull?: boolean;
  token?: string;
  maxRuns: number;
  policy: SchedulingPolicy;
  kvBudget?: number;
  allowedHosts?: string[];
  corsOrigin?: string[];
  insecure?: boolean;
  dataDir: string;
  persist: boolean;
  grace: number;
  open?: boolean;
  providers?: string;
  build: boolean;
}

/** A --providers file: the graph format's `providers` block, checked by its schema. */
function readProvidersFile(file: string): ServerProviders {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new BadRequestError('--providers', `cannot read ${file} as JSON: ${(err as Error).message}`);
  }
  return parseServerProviders(json);
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
    .option('--kv-budget <size>', 'KV cache memory: bytes or with KiB/MiB/GiB (default 256MiB)', parseBytes('--kv-budget'))
    .option('--allowed-hosts <names>', 'extra host names the server answers to in Host/Origin, comma-separated (* for any)', list)
    .option('--cors-origin <origins>', 'origins allowed to call the API from other sites, comma-separated (default: none)', list)
    .option('--insecure', 'allow a non-loopback --host without a token')
    .option('--data-dir <dir>', 'where runs are stored (SQLite) to survive restarts', '.skein')
    .option('--no-persist', 'keep runs in memory only')
    .option('--grace <seconds>', 'on SIGTERM, how long runs in flight may finish before they are cancelled', parseIntOption('--grace', 0, 3600), 10)
    .option('--open', 'print the playground URL prominently and open a browser when a display exists')
    .option('--no-build', 'serve the playground as it is built, without rebuilding it when its sources changed')
    .option('--kv-cache <type>', KV_CACHE_HELP, parseKvCache)
    .option('--providers <file>', 'JSON file of remote providers ({"NAME": {"type": "openai", "baseUrl", "model", "apiKeyEnv"?}}) that graphs sent to this server may run nodes on')
    .action(async (opts: ServeOptions) => {
      applyKvCache(opts.kvCache);
      const token = opts.token ?? (process.env.SKEIN_TOKEN || undefined);
      const print = (line: string) => process.stderr.write(`${line}\n`);
      if (opts.kvCache !== undefined && opts.kvCache !== 'auto') print(`skein: KV cache ${opts.kvCache} (--kv-cache)`);
      const { model, fallbackReason } = await modelOrDefault(opts.model, {
        pull: opts.pull,
        print,
        progress: process.stderr,
        log: (text) => process.stderr.write(text),
      });
      const providers = opts.providers !== undefined ? readProvidersFile(opts.providers) : undefined;
      const server = await startServer({
        ...(providers ? { providers } : {}),
        build: opts.build,
        port: opts.port,
        host: opts.host,
        model,
        fallbackReason,
        token,
        maxConcurrentRuns: opts.maxRuns,
        policy: opts.policy,
        open: Boolean(opts.open),
        insecure: Boolean(opts.insecure),
        ...(opts.persist ? { dataDir: opts.dataDir } : {}),
        ...(opts.kvBudget !== undefined ? { kvBudgetBytes: opts.kvBudget } : {}),
        ...(opts.allowedHosts ? { allowedHosts: opts.allowedHosts } : {}),
        ...(opts.corsOrigin ? { corsOrigins: opts.corsOrigin } : {}),
      });
      if (!isLoopback(opts.host) && !token) {
        process.stderr.write('skein: warning: --insecure: listening beyond loopback without a token\n');
      }
      // SIGTERM drains: new work is refused, runs in flight get --grace seconds, the rest
      // end cancelled (every SSE client gets its run-end), the run database is written.
      const stop = () => {
        process.stderr.write(`skein: stopping: runs in flight have ${opts.grace} s to finish\n`);
        void server.shutdown({ graceMs: opts.grace * 1000 }).then((r) => {
          process.stderr.write(`skein: stopped (${r.finished} run(s) finished, ${r.cancelled} cancelled)\n`);
          process.exit(0);
        });
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
