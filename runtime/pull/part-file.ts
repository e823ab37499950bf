/**
 * A download in progress: bytes go to `<final>.part` while a sha256 runs over them, and
 * the file takes its final name (one rename, atomic on one filesystem) only once its size
 * and checksum match what the catalogue says. A part left by an interrupted download is
 * kept so the next attempt can resume it; its bytes are hashed again when it is reopened.
 *
 * @example
 * const part = await PartFile.open('/m/model.gguf', { resume: true });
 * await part.write(chunk);
 * await part.commit({ bytes: 98_362_432, sha256: 'b179…' }); // renames, or throws and deletes the part
 */
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';

export interface Expected {
  bytes: number;
  sha256: string;
}

/** The file's size did not match, or its sha256 did not: the part is deleted. */
export class ChecksumMismatch extends Error {
  constructor(readonly file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.name = 'ChecksumMismatch';
  }
}

/** sha256 (hex) of a whole file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Whether `file` exists with exactly the expected size and checksum. */
export async function isVerified(file: string, expected: Expected): Promise<boolean> {
  const stat = await fsp.stat(file).catch(() => null);
  if (!stat?.isFile() || stat.size !== expected.bytes) return false;
  return (await sha256File(file)) === expected.sha256;
}

export class PartFile {
  private constructor(
    readonly finalPath: string,
    readonly partPath: string,
    private handle: fsp.FileHandle,
    private hash: Hash,
    private size: number,
  ) {}

  /** Opens `<final>.part`: with `resume`, keeping (and re-hashing) what is there, else empty. */
  static async open(finalPath: string, opts: { resume: boolean }): Promise<PartFile> {
    const partPath = `${finalPath}.part`;
    const hash = createHash('sha256');
    let size = 0;
    if (opts.resume && fs.existsSync(partPath)) {
      for await (const chunk of fs.createReadStream(partPath, { highWaterMark: 1 << 20 })) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    }
    const handle = await fsp.open(partPath, size > 0 ? 'a' : 'w');
    return new PartFile(finalPath, partPath, handle, hash, size);
  }

  /** Bytes in the part so far (where a resumed download starts). */
  get bytes(): number {
    return this.size;
  }

  /** Starts over: empties the part and the running checksum (a server that ignored Range). */
  async restart(): Promise<void> {
    await this.handle.truncate(0);
    await this.handle.close();
    this.handle = await fsp.open(this.partPath, 'w');
    this.hash = createHash('sha256');
    this.size = 0;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk);
    this.size += chunk.length;
    let off = 0;
    while (off < chunk.length) off += (await this.handle.write(chunk, off, chunk.length - off)).bytesWritten;
  }

  /** Leaves the part on disk for a later resume. */
  async close(): Promise<void> {
    await this.handle.close().catch(() => {});
  }

  /**
   * Checks size and sha256; on a match renames the part to the final name, else deletes
   * the part (its bytes are wrong, resuming it could never succeed) and throws.
   */
  async commit(expected: Expected): Promise<void> {
    await this.handle.sync();
    await this.close();
    const digest = this.hash.digest('hex');
    const problem =
      this.size !== expected.bytes
        ? `size ${this.size} bytes, expected ${expected.bytes}`
        : digest !== expected.sha256
          ? `sha256 ${digest}, expected ${expected.sha256}`
          : '';
    if (problem) {
      await fsp.rm(this.partPath, { force: true });
      throw new ChecksumMismatch(this.partPath, problem);
    }
    await fsp.rename(this.partPath, this.finalPath);
  }
}
