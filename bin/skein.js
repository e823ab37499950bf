#!/usr/bin/env node
// The published entry point: runs the TypeScript CLI through tsx so that `npx skein`
// works in the repository without a build step. The CLI runs in a child process, so
// this wrapper passes on the signals a process manager sends (SIGTERM, SIGHUP): without
// that, `kill` on it would leave a server holding its port. SIGINT is not passed on: a
// terminal's Ctrl-C already reaches the child through the process group, and a second
// one would cut short the cancel the first one started.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsxCli = require.resolve('tsx/cli');
const child = spawn(process.execPath, [tsxCli, join(root, 'runtime/cli/main.ts'), ...process.argv.slice(2)], {
  stdio: 'inherit',
});
const forwarded = ['SIGTERM', 'SIGHUP'];
for (const signal of forwarded) process.on(signal, () => child.kill(signal));
process.on('SIGINT', () => {});
child.on('exit', (code, signal) => {
  if (signal) {
    // End the way the child ended, so callers see the same signal.
    for (const s of [...forwarded, 'SIGINT']) process.removeAllListeners(s);
    process.kill(process.pid, signal);
  } else process.exit(code ?? 1);
});
