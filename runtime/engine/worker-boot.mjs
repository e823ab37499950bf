// The engine worker's entry point. Workers do not inherit tsx's loader from the thread
// that starts them (`execArgv: ['--import', 'tsx']` is not honoured for them on Node 20),
// so this plain module loads the TypeScript entry through tsx's API: the worker then
// runs from source under `npx skein`, under vitest and under plain node alike.
import { tsImport } from 'tsx/esm/api';

await tsImport(new URL('./worker.ts', import.meta.url).href, import.meta.url);
