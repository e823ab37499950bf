/** The list of CLI commands; each module exports `register(program)`. */
import type { Command } from 'commander';
import { register as serve } from './serve.js';
import { register as run } from './run.js';
import { register as validate } from './validate.js';
import { register as trainData } from './train-data.js';
import { register as logits } from './logits.js';
import { register as generate } from './generate.js';
import { register as tokenize } from './tokenize.js';
import { register as bench } from './bench.js';
import { register as train } from './train.js';
import { register as pull } from './pull.js';

type Register = (program: Command) => void;
const commands: Register[] = [];
commands.push(serve);
commands.push(run, validate);
commands.push(trainData);
commands.push(logits, generate, tokenize, bench, pull);
commands.push(train);

export function registerCommands(program: Command): void {
  for (const register of commands) register(program);
}
