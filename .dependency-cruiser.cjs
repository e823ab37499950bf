/**
 * The layer rules `npm run depcheck` (and .ci/run) enforce: core ← operators ← runtime,
 * no cycles anywhere, and core depends on nothing but rxjs, ajv and node built-ins.
 * graphs/, playground/ and test/ sit on top; the playground is a browser page, so it may
 * read core's types and pure helpers but nothing of operators/ or runtime/.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'An import cycle (layers import downward only). Cycles of type-only imports vanish at run time and are allowed (two data structures naming each other).',
      from: {},
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    {
      name: 'core-is-the-bottom',
      severity: 'error',
      comment: 'core/ holds the shared vocabulary; it imports nothing from operators/, runtime/ or above.',
      from: { path: '^core/' },
      to: { path: '^(operators|runtime|playground|test|graphs)/' },
    },
    {
      name: 'core-only-rxjs-and-ajv',
      severity: 'error',
      comment: 'core/ may use rxjs, ajv and node built-ins only.',
      from: { path: '^core/' },
      to: { dependencyTypes: ['npm', 'npm-dev', 'npm-optional', 'npm-peer', 'npm-no-pkg', 'npm-unknown'], pathNot: '^node_modules/(rxjs|ajv)/' },
    },
    {
      name: 'operators-below-runtime',
      severity: 'error',
      comment: 'operators/ reach the model only through the Engine contract in core/.',
      from: { path: '^operators/' },
      to: { path: '^(runtime|playground|graphs)/' },
    },
    {
      name: 'operators-not-tests',
      severity: 'error',
      from: { path: '^(operators|core)/', pathNot: '\\.test\\.ts$' },
      to: { path: '^test/' },
    },
    {
      name: 'runtime-not-tests',
      severity: 'error',
      from: { path: '^runtime/', pathNot: '\\.test\\.ts$' },
      to: { path: '^(test|playground)/' },
    },
    {
      name: 'playground-is-a-page',
      severity: 'error',
      comment: 'The playground talks to the server over HTTP; it shares only core/.',
      from: { path: '^playground/' },
      to: { path: '^(operators|runtime)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist|models)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs', '.json'] },
  },
};
