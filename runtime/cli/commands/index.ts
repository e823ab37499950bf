/** The list of CLI commands; each module exports `register(program)`. */
import type { Command } from 'commander';
import { register as serve } from './serve.js';

type Register = (program: Command) => void;
const commands: Register[] = [];
commands.push(serve);

export function registerCommands(program: Command): void {
  for (const register of commands) register(program);
}
