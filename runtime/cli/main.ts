/**
 * The `skein` command line. Each command lives in its own module under commands/ and
 * registers itself on the commander program; `--help` works on every command.
 */
import { Command } from 'commander';
import { registerCommands } from './commands/index.js';
import { SkeinError } from '../../core/errors.js';

const program = new Command();
program
  .name('skein')
  .description('Reactive dataflow framework for LLM agent pipelines on a shared tfjs runtime')
  .showHelpAfterError();

registerCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Typed errors are the user's problem to fix: print the message, not a stack trace.
  if (err instanceof SkeinError) {
    process.stderr.write(`skein: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
