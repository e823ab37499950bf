/**
 * Downloads a catalogue file from the Hugging Face Hub by its resolve URL
 * (`${HF_ENDPOINT:-https://huggingface.co}/<repo>/resolve/<revision>/<path>`), sending
 * `HF_TOKEN` as a bearer token when set. It resumes a `.part` left by an earlier attempt
 * with an HTTP Range request (a server that answers 200 instead of 206 is downloaded from
 * the start), hashes while streaming, shows a progress bar on a terminal, and gives up on
 * a server that does not answer or stalls instead of hanging.
 *
 * @example
 * await downloadFromHub(source, entry, '/m/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', { env: process.env });
 */
import { SingleBar } from 'cli-progress';
import type { CatalogueEntry, HubSource } from './catalogue.js';
import { PartFile } from './part-file.js';

export interface HubOptions {
  env?: NodeJS.ProcessEnv;
  /** Draw a progress bar on this stream when it is a terminal (default: none). */
  progress?: NodeJS.WriteStream;
  /** No response headers within this long fails the source (default 20 s). */
  connectTimeoutMs?: number;
  /** No body bytes for this long fails the source (default 30 s). */
  idleTimeoutMs?: number;
}

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co';

export function hubUrl(source: HubSource, env: NodeJS.ProcessEnv = process.env): string {
  const endpoint = (env.HF_ENDPOINT || DEFAULT_HF_ENDPOINT).replace(/\/+$/, '');
  const filePath = source.path.split('/').map(encodeURIComponent).join('/');
  return `${endpoint}/${source.repo}/resolve/${encodeURIComponent(source.revision)}/${filePath}`;
}

/** `bytes START-END/TOTAL` → START (null when absent or malformed). */
function rangeStart(contentRange: string | null): number | null {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(contentRange?.trim() ?? '');
  return m ? Number(m[1]) : null;
}

function httpFailure(status: number, statusText: string, url: string, hasToken: boolean): Error {
  const hint =
    status === 401 || status === 403
      ? hasToken
        ? ' (HF_TOKEN was sent; check that it grants access to this repository)'
        : ' (a gated or private repository needs HF_TOKEN)'
      : '';
  return new Error(`HTTP ${status} ${statusText} for ${url}${hint}`);
}

function mb(n: number): string {
  return (n / 1e6).toFixed(1);
}

/** Fetches into `<finalPath>.part` and renames it to `finalPath` once the checksum matches. */
export async function downloadFromHub(source: HubSource, entry: CatalogueEntry, finalPath: string, opts: HubOptions = {}): Promise<void> {
  const env = opts.env ?? process.env;
  const url = hubUrl(source, env);
  const part = await PartFile.open(finalPath, { resume: true });
  // A part at (or past) full size is either the finished file or garbage: no request can extend it.
  if (part.bytes >= entry.bytes) return part.commit(entry);

  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let timeoutReason = '';
  const arm = (ms: number, what: string) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timeoutReason = what;
      controller.abort();
    }, ms);
  };
  const headers: Record<string, string> = { 'user-agent': 'skein-pull/0.1' };
  if (env.HF_TOKEN) headers.authorization = `Bearer ${env.HF_TOKEN}`;
  if (part.bytes > 0) headers.range = `bytes=${part.bytes}-`;

  let bar: SingleBar | undefined;
  try {
    arm(opts.connectTimeoutMs ?? 20_000, `no response within ${((opts.connectTimeoutMs ?? 20_000) / 1000).toFixed(0)} s`);
    const res = await fetch(url, { headers, signal: controller.signal, redirect: 'follow' });
    if (res.status === 206 && rangeStart(res.headers.get('content-range')) === part.bytes) {
      // Resumed: the part's bytes stay and the server sends the rest.
    } else if (res.status === 200 || res.status === 206) {
      await part.restart();
    } else {
      await res.body?.cancel();
      throw httpFailure(res.status, res.statusText, url, Boolean(env.HF_TOKEN));
    }
    const length = Number(res.headers.get('content-length') ?? NaN);
    if (Number.isFinite(length) && part.bytes + length !== entry.bytes) {
      await res.body?.cancel();
      throw new Error(`${url} serves ${part.bytes + length} bytes, the catalogue expects ${entry.bytes}: not the catalogued file`);
    }
    if (!res.body) throw new Error(`${url}: empty response body`);

    if (opts.progress?.isTTY) {
      bar = new SingleBar({
        stream: opts.progress,
        format: `  ${entry.file} [{bar}] {percentage}% {done}/{all} MB {speed} MB/s`,
        hideCursor: true,
      });
      bar.start(entry.bytes, part.bytes, { done: mb(part.bytes), all: mb(entry.bytes), speed: '-' });
    }
    const started = Date.now();
    const resumedAt = part.bytes;
    const idleMs = opts.idleTimeoutMs ?? 30_000;
    arm(idleMs, `stalled: no data for ${(idleMs / 1000).toFixed(0)} s`);
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      arm(idleMs, `stalled: no data for ${(idleMs / 1000).toFixed(0)} s`);
      await part.write(chunk);
      const seconds = (Date.now() - started) / 1000;
      bar?.update(part.bytes, { done: mb(part.bytes), speed: seconds > 0 ? mb((part.bytes - resumedAt) / seconds) : '-' });
    }
    clearTimeout(timer);
    bar?.stop();
    bar = undefined;
    await part.commit(entry);
  } catch (err) {
    await part.close();
    if (timeoutReason) throw new Error(`${url}: ${timeoutReason}`);
    // fetch reports network failures as "fetch failed" with the real reason in `cause`.
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    if (err instanceof TypeError && cause) throw new Error(`${url}: ${cause.code ?? ''} ${cause.message ?? ''}`.replace(/\s+/g, ' ').trim());
    throw err;
  } finally {
    clearTimeout(timer);
    bar?.stop();
  }
}
