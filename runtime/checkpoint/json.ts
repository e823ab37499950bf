/**
 * Reading a checkpoint's JSON files (config.json, tokenizer.json, ...), with read and parse
 * failures reported as CheckpointErrors naming the file.
 */
import * as fs from 'node:fs';
import { CheckpointError } from '../../core/errors.js';

export function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CheckpointError({ file, reason: `cannot read: ${(err as Error).message}` });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CheckpointError({ file, reason: `not JSON: ${(err as Error).message}` });
  }
}
