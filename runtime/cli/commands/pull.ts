/**
 * `skein pull NAME [--to DIR]`: downloads a model from the catalogue (runtime/pull) into
 * models/<name>/ — resumable, sha256-verified, renamed into place only when it matches.
 * Without a name it lists the catalogue. Exit status 2 when every source failed.
 *
 * @example
 * npx skein pull smollm2-135m-instruct
 */
import type { Command } from 'commander';
import { CATALOGUE, describeSource } from '../../pull/catalogue.js';
import { installedPath, pullModel } from '../../pull/pull.js';

export function register(program: Command): void {
  program
    .command('pull')
    .description(`Download a known model (${Object.keys(CATALOGUE).join(', ')}) with its checksum verified`)
    .argument('[name]', 'catalogue name (omit to list the catalogue)')
    .option('--to <dir>', 'install folder (default: models/<name>/, where --model <name> finds it)')
    .action(async (name: string | undefined, opts: { to?: string }) => {
      if (name === undefined) {
        for (const e of Object.values(CATALOGUE)) {
          process.stdout.write(`${e.name}  ${e.file}  ${(e.bytes / 1e6).toFixed(1)} MB  ${e.license}\n  ${e.description}\n`);
          process.stdout.write(`  installs to ${installedPath(e)}\n  sources: ${e.sources.map(describeSource).join(', then ')}\n`);
        }
        return;
      }
      const print = (line: string) => process.stderr.write(`${line}\n`);
      const r = await pullModel(name, { to: opts.to, print, progress: process.stderr, log: (text) => process.stderr.write(text) });
      if (r.source === 'already present') print(`skein: ${r.file} is already there (sha256 verified)`);
      process.stdout.write(`${r.file}\n`);
    });
}
