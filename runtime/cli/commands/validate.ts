/**
 * `skein validate GRAPH.json`: lists every problem of a graph, each at its JSON pointer,
 * and exits 1 when there is any; `--print` shows the compiled graph of a valid one.
 * `--model NAME` also checks the graph's stages against that model (the engine's stage
 * registry, read from the model's folder without loading its weights).
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { checkGraphStages, compileGraph, printGraph, validateGraph, type GraphProblem, type GraphSpec } from '../../../operators/index.js';
import { parse, type ParseError } from 'jsonc-parser';
import { checkStage, modelFacts } from '../../stages/registry.js';

/** Reads a graph file; unreadable or non-JSON files come back as problems at the root (with line and column). */
export function readGraphFile(file: string): { json?: unknown; problems: GraphProblem[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { problems: [{ pointer: '', message: `cannot read ${file}: ${(err as Error).message}` }] };
  }
  try {
    return { json: JSON.parse(text), problems: [] };
  } catch (err) {
    // V8 sometimes quotes a multi-line slice of the text; the line and column say where instead.
    const message = (err as Error).message.replace(/, (?:\.\.\.)?".*" is not valid JSON$/s, '');
    const { line, col } = syntaxErrorAt(text);
    return { problems: [{ pointer: '', message: `not JSON at line ${line}, column ${col}: ${message}` }] };
  }
}

/** Line and column (1-based) of the first strict-JSON error, as jsonc-parser's tolerant parse finds it. */
function syntaxErrorAt(text: string): { line: number; col: number } {
  const errors: ParseError[] = [];
  parse(text, errors, { disallowComments: true, allowTrailingComma: false });
  const before = text.slice(0, errors[0]?.offset ?? text.length);
  return { line: before.split('\n').length, col: before.length - before.lastIndexOf('\n') };
}

/** The body of `skein validate`; resolves to the exit status (1 when there is any problem). */
export function validateGraphFile(file: string, opts: { print?: boolean; json?: boolean; model?: string }, stdout: NodeJS.WritableStream = process.stdout): number {
  const read = readGraphFile(file);
  let problems = read.problems.length ? read.problems : validateGraph(read.json);
  if (!problems.length && opts.model !== undefined) {
    const facts = modelFacts(opts.model);
    problems = checkGraphStages(read.json as GraphSpec, (name) => checkStage(name, facts));
  }
  if (opts.json) stdout.write(`${JSON.stringify({ file, valid: problems.length === 0, problems })}\n`);
  else if (problems.length) {
    stdout.write(`${file}: ${problems.length} problem(s)\n`);
    for (const p of problems) stdout.write(`  ${p.pointer || '/'}: ${p.message}\n`);
  } else {
    const spec = read.json as GraphSpec;
    stdout.write(`${file}: valid (${spec.nodes.length} nodes, ${spec.edges.length} edges)\n`);
    if (opts.print) stdout.write(`${printGraph(compileGraph(spec))}\n`);
  }
  return problems.length ? 1 : 0;
}

export function register(program: Command): void {
  program
    .command('validate')
    .description('Validate a graph JSON file and list every problem with its JSON pointer')
    .argument('<graph>', 'graph JSON file')
    .option('--print', 'print the compiled graph when it is valid')
    .option('--json', 'print the problems as JSON')
    .option('-m, --model <name|dir>', 'also check the stages against this model')
    .action((file: string, opts: { print?: boolean; json?: boolean; model?: string }) => {
      process.exitCode = validateGraphFile(file, opts);
    });
}
