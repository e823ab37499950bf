/**
 * Opens a checkpoint file for reading, turning the OS error into a CheckpointError that
 * names the file (shared by the safetensors and GGUF readers).
 *
 * @example
 * const fd = openCheckpointFile('model.gguf');
 */
import * as fs from 'node:fs';
import { CheckpointError } from '../../core/errors.js';

export function openCheckpointFile(file: string): number {
  try {
    return fs.openSync(file, 'r');
  } catch (err) {
    throw new CheckpointError({ file, reason: `cannot open: ${(err as Error).message}` });
  }
}
