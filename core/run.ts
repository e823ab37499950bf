/**
 * Runs a compiled graph: every node's output is a shared Observable that emits once per
 * run (once per turn inside a loop body), built lazily from the operators; independent
 * branches run concurrently and every model call goes to the one engine. Values carry a
 * slot state so that a branch not taken (route) or a failed branch (branch-error event)
 * flows to its join as "skipped"/"failed" while siblings go on. A failure outside any
 * branch is fatal: the run ends with run-end {status: 'error'} and a typed error.
 * Unsubscribing (or aborting `signal`) cancels every generation in flight.
 *
 * @example
 * runGraph(spec, { question: 'Why?' }, { engine, seed: 1 }).subscribe((e) => console.log(e.type));
 */
import {
  NEVER,
  Observable,
  catchError,
  concat,
  concatMap,
  defer,
  forkJoin,
  fromEvent,
  ignoreElements,
  last,
  map,
  merge,
  of,
  share,
  shareReplay,
  first,
  takeUntil,
  tap,
  type Subscription,
} from 'rxjs';
import { expand } from '../operators/expand.js';
import { generate } from '../operators/generate.js';
import { generateJson } from '../operators/generateJson.js';
import { join } from '../operators/join.js';
import { loop } from '../operators/loop.js';
import { route } from '../operators/route.js';
import { skeleton } from '../operators/skeleton.js';
import { template } from '../operators/template.js';
import { tool } from '../operators/tool.js';
import type { OperatorContext, OperatorEvent } from '../operators/context.js';
import { nextFinish, toError, type BranchOutcome } from '../operators/internal/branches.js';
import type { Skeleton } from '../operators/internal/sot.js';
import type { CompiledGraph, CompiledNode } from './compile.js';
import { BadRequestError, ModelOutputError, SkeinError } from './errors.js';
import type { NodeUsage, RunEvent, StageMetrics } from './events.js';
import type { GraphSpec, NodeSpec, NodeSpecOf } from './graph-schema.js';
import { routeBranchNames } from './ports.js';
import { deriveSeed, randomSeed } from './seed.js';
import type { Engine } from '../runtime/engine/types.js';
import type { ToolRegistry } from './tools.js';

export interface RunOptions {
  engine: Engine;
  /** Run seed; every node's seed derives from it and the node id (random when absent, reported in run-start). */
  seed?: number;
  runId?: string;
  tools?: ToolRegistry;
  /** Aborting ends the run with run-end {status: 'cancelled'}; unsubscribing cancels silently. */
  signal?: AbortSignal;
}

type Slot = { s: 'ok'; value: unknown } | { s: 'skipped' } | { s: 'failed'; error: Error };
type Ports = Map<string, Slot>;
/** What one node execution yields: its ports and the value shown in node-end. */
interface Exec {
  ports: Ports;
  output: unknown;
}

/** Where a node is being built: the run, or one turn of a loop body (nested for nested loops). */
interface Env {
  memo: Map<string, Observable<Ports>>;
  turn?: { loop: string; n: number; value: unknown; members: Set<string> };
  parent?: Env;
}

type EventBody = RunEvent extends infer E ? (E extends RunEvent ? Omit<E, 'runId' | 't' | 'seq'> : never) : never;

const OUTPUT = '$value';
const ok = (value: unknown): Slot => ({ s: 'ok', value });
/** The ports of a node with one output. */
const outPorts = (value: unknown): Ports => new Map([['out', ok(value)], [OUTPUT, ok(value)]]);
const SKIPPED: Slot = { s: 'skipped' };

export function errorInfo(err: unknown): { name: string; message: string; code?: string } {
  const e = toError(err);
  return e instanceof SkeinError ? { name: e.name, message: e.message, code: e.code } : { name: e.name, message: e.message, code: 'internal' };
}

const stageFigures = ['prunedTokens', 'layersRun', 'acceptedDraftTokens', 'kvBlocksShared', 'compressedFrom', 'compressedTo'];

let runCounter = 0;

export function runCompiled(compiled: CompiledGraph, input: Record<string, unknown>, options: RunOptions): Observable<RunEvent> {
  return new Observable<RunEvent>((subscriber) => {
    const runId = options.runId ?? `run-${Date.now().toString(36)}-${(++runCounter).toString(36)}`;
    const seed = options.seed ?? randomSeed();
    const started = performance.now();
    let seq = 0;
    const emit = (body: EventBody) => subscriber.next({ ...body, runId, t: Math.round(performance.now() - started), seq: seq++ } as RunEvent);
    // Keyed by graph-given ids: a null prototype keeps any id away from Object.prototype
    // even for callers that skip validation (the schema also refuses the inherited names).
    const usage: Record<string, NodeUsage> = Object.create(null);
    // The node whose operator raised each error, set where it first fails so that an
    // enclosing loop or join rethrowing it does not take the blame in run-end.
    const failedAt = new WeakMap<Error, string>();
    const blame = (err: unknown, node: string): Error => {
      const error = toError(err);
      if (!failedAt.has(error)) failedAt.set(error, node);
      return error;
    };
    const tools = options.tools ?? compiled.tools;

    emit({ type: 'run-start', graph: compiled.spec.name, input, seed });

    const nodeUsage = (id: string) => (usage[id] ??= { tokensIn: 0, tokensOut: 0, wallMs: 0 });

    const envOf = (id: string, env: Env): Env => {
      let e = env;
      while (e.turn && !e.turn.members.has(id)) e = e.parent!;
      return e;
    };
    const turnsOf = (env: Env): string[] => {
      const out: string[] = [];
      for (let e: Env | undefined = env; e?.turn; e = e.parent) out.unshift(`${e.turn.loop}#${e.turn.n + 1}`);
      return out;
    };
    const labelOf = (node: CompiledNode, env: Env) => [...node.scope, ...turnsOf(env)].join('/') || undefined;

    const portSlot = (from: string, port: string, env: Env): Observable<Slot> => {
      for (let e: Env | undefined = env; e; e = e.parent) if (e.turn?.loop === from && port === 'body') return of(ok(e.turn.value));
      return nodePorts(from, env).pipe(map((ports) => ports.get(port) ?? SKIPPED));
    };

    const nodePorts = (id: string, from: Env): Observable<Ports> => {
      const env = envOf(id, from);
      let out = env.memo.get(id);
      if (!out) {
        out = buildNode(compiled.byId.get(id)!, env).pipe(shareReplay({ bufferSize: 1, refCount: true }));
        env.memo.set(id, out);
      }
      return out;
    };

    const allPorts = (node: CompiledNode, slot: Slot): Ports => new Map([...node.outputs.map((o) => [o.port, slot] as const), [OUTPUT, slot]]);

    /** Node-start, node-end with usage, and branch isolation around one execution. */
    const execute = (node: CompiledNode, env: Env, work: (context: OperatorContext) => Observable<Exec>): Observable<Ports> =>
      defer(() => {
        const branch = labelOf(node, env);
        const t0 = performance.now();
        const metrics: StageMetrics = {};
        const onEvent = (e: OperatorEvent) => {
          switch (e.type) {
            case 'delta':
              return emit({ type: 'text-delta', node: node.id, branch: e.branch, text: e.text, tokenIds: e.tokenIds });
            case 'usage': {
              const u = nodeUsage(node.id);
              u.tokensIn += e.usage.promptTokens;
              u.tokensOut += e.usage.completionTokens;
              metrics.tokensIn = (metrics.tokensIn ?? 0) + e.usage.promptTokens;
              metrics.tokensOut = (metrics.tokensOut ?? 0) + e.usage.completionTokens;
              metrics.ttftMs ??= e.metrics.ttftMs;
              metrics.tokensPerSec = e.metrics.decodeTokensPerSec;
              // Stage figures add up over the node's generations (expand points, loop turns).
              const figures = e.metrics as unknown as Record<string, number | undefined>;
              for (const key of stageFigures) if (figures[key] !== undefined) metrics[key] = (metrics[key] ?? 0) + figures[key]!;
              return;
            }
            case 'branch-start':
              return emit({ type: 'node-start', node: node.id, branch: e.branch });
            case 'branch-end':
              return emit({ type: 'node-end', node: node.id, branch: e.branch, output: e.output, metrics: {} });
            case 'branch-error':
              return emit({ type: 'branch-error', node: node.id, branch: e.branch, error: errorInfo(e.error) });
            default: {
              const never: never = e;
              return never;
            }
          }
        };
        const turnKey = turnsOf(env).join('/');
        const context: OperatorContext = {
          node: node.id,
          seed: deriveSeed(seed, turnKey ? `${node.id}@${turnKey}` : node.id),
          owner: runId,
          branch,
          onEvent,
        };
        emit({ type: 'node-start', node: node.id, branch });
        return work(context).pipe(
          last(),
          map((res) => {
            nodeUsage(node.id).wallMs += Math.round(performance.now() - t0);
            emit({ type: 'node-end', node: node.id, branch, output: res.output, metrics });
            return res.ports;
          }),
          catchError((err: unknown) => {
            nodeUsage(node.id).wallMs += Math.round(performance.now() - t0);
            const error = blame(err, node.id);
            if (!node.scope.length) throw error;
            emit({ type: 'branch-error', node: node.id, branch: node.scope.join('/'), error: errorInfo(error) });
            return of(allPorts(node, { s: 'failed', error }));
          }),
        );
      });

    const buildNode = (node: CompiledNode, env: Env): Observable<Ports> => {
      const forward = node.inputs.filter((i) => !(node.kind === 'loop' && i.port === 'next'));
      if (node.kind === 'join') return buildJoin(node, env, forward);
      const slots$ = forward.length
        ? forkJoin(Object.fromEntries(forward.map((i) => [i.port, portSlot(i.from, i.fromPort, env)])))
        : of({} as Record<string, Slot>);
      return slots$.pipe(
        concatMap((slots) => {
          const list = Object.values(slots);
          const failed = list.find((s): s is Extract<Slot, { s: 'failed' }> => s.s === 'failed');
          if (failed) return of(allPorts(node, failed));
          if (list.some((s) => s.s === 'skipped')) return of(allPorts(node, SKIPPED));
          const values = Object.fromEntries(Object.entries(slots).map(([k, s]) => [k, (s as { value: unknown }).value]));
          return execute(node, env, (context) => exec(node, values, env, context));
        }),
      );
    };

    const buildJoin = (node: CompiledNode, env: Env, inputs: CompiledNode['inputs']): Observable<Ports> => {
      const spec = node.spec as NodeSpecOf<'join'>;
      const outcomes$ = merge(
        ...inputs.map((i, index) =>
          portSlot(i.from, i.fromPort, env).pipe(
            map((slot): BranchOutcome => {
              const where = { key: i.port, branch: i.from, index, finished: nextFinish() };
              if (slot.s === 'ok') return { ...where, status: 'ok', value: slot.value };
              return slot.s === 'failed' ? { ...where, status: 'failed', error: slot.error } : { ...where, status: 'skipped' };
            }),
          ),
        ),
      );
      // The join starts when its first taken input arrives, not when it is wired, so its
      // node-start and wall time say when it actually worked. Skipped inputs are left out.
      const shared$ = outcomes$.pipe(share());
      return shared$.pipe(
        first((o) => o.status !== 'skipped', undefined),
        concatMap((firstTaken) =>
          firstTaken === undefined
            ? of(allPorts(node, SKIPPED))
            : execute(node, env, (context) =>
                concat(of(firstTaken), shared$).pipe(
                  join(spec.mode, { separator: spec.separator, context }),
                  map((value): Exec => ({ ports: outPorts(value), output: value })),
                ),
              ),
        ),
      );
    };

    const single = (value$: Observable<unknown>): Observable<Exec> =>
      value$.pipe(map((value) => ({ ports: outPorts(value), output: value })));

    const exec = (node: CompiledNode, values: Record<string, unknown>, env: Env, context: OperatorContext): Observable<Exec> => {
      const spec: NodeSpec = node.spec;
      const engine = options.engine;
      switch (spec.kind) {
        case 'input':
          return single(of(readInput(spec, node.id, input)));
        case 'template':
          return single(of(values).pipe(template(spec.template, { tail: spec.tail })));
        case 'generate': {
          const common = { engine, system: spec.system, chat: spec.chat, assistantPrefix: spec.assistantPrefix, sampling: spec.sampling, stages: spec.stages, context };
          const schema = spec.output?.schema as object | boolean | undefined;
          return single(
            of({ prompt: String(values.prompt), system: values.system as string | undefined }).pipe(
              schema !== undefined ? generateJson({ ...common, schema }) : generate({ ...common, output: spec.output }),
            ),
          );
        }
        case 'skeleton':
          return single(of(String(values.question)).pipe(skeleton({ engine, maxPoints: spec.maxPoints, sampling: spec.sampling, stages: spec.stages, context })));
        case 'expand':
          return single(of(values.skeleton as Skeleton).pipe(expand({ engine, concurrency: spec.concurrency, sampling: spec.sampling, stages: spec.stages, context })));
        case 'fork':
          return of({ ports: new Map([...spec.branches.map((b) => [b, ok(values.in)] as const), [OUTPUT, ok(values.in)]]), output: values.in });
        case 'join':
          throw new Error('join nodes are built by buildJoin');
        case 'route':
          return of(values.in).pipe(
            route({ branches: spec.branches, default: spec.default, by: spec.by, prompt: spec.prompt, answers: spec.answers, engine, sampling: spec.sampling, context }),
            map((r) => ({
              ports: new Map([...routeBranchNames(spec).map((b) => [b, b === r.branch ? ok(r.value) : SKIPPED] as const), [OUTPUT, ok(r.value)]]),
              output: r.answer === undefined ? { branch: r.branch } : { branch: r.branch, answer: r.answer },
            })),
          );
        case 'loop': {
          const members = compiled.analysis.loopBodies.get(node.id)!;
          const next = node.inputs.find((i) => i.port === 'next')!;
          const body = (value: unknown, n: number): Observable<unknown> => {
            const turnEnv: Env = { memo: new Map(), turn: { loop: node.id, n, value, members }, parent: env };
            return portSlot(next.from, next.fromPort, turnEnv).pipe(
              map((slot) => {
                if (slot.s === 'ok') return slot.value;
                if (slot.s === 'failed') throw slot.error;
                throw new ModelOutputError(node.id, `turn ${n + 1} produced no value (its branch was not taken)`);
              }),
            );
          };
          return of(values.init).pipe(
            loop({ body, maxTurns: spec.maxTurns, stop: spec.stop, context }),
            map((value) => ({ ports: new Map([['out', ok(value)], ['body', SKIPPED], [OUTPUT, ok(value)]]), output: value })),
          );
        }
        case 'tool':
          return single(of(values.in).pipe(tool(spec.tool, { registry: tools, args: spec.args as Record<string, unknown> | undefined, context })));
        case 'output':
          return of({ ports: new Map([[OUTPUT, ok(values.in)]]), output: values.in });
        default: {
          const never: never = spec;
          throw new Error(`unhandled node kind ${(never as NodeSpec).kind}`);
        }
      }
    };

    const root: Env = { memo: new Map() };
    const outputs = compiled.nodes.filter((n) => n.kind === 'output');
    // Nodes nobody reads (a tool called for its effect) still run once per run.
    const sinks = compiled.nodes.filter((n) => n.kind !== 'output' && !n.loop && n.outputs.every((o) => o.to.length === 0));
    const result: Record<string, unknown> = Object.create(null);
    const work$ = merge(
      ...outputs.map((n) =>
        nodePorts(n.id, root).pipe(
          tap((ports) => {
            const slot = ports.get(OUTPUT);
            if (slot?.s === 'ok') result[(n.spec as NodeSpecOf<'output'>).name ?? n.id] = slot.value;
          }),
        ),
      ),
      ...sinks.map((n) => nodePorts(n.id, root)),
    );
    let cancelled = false;
    const cancel$: Observable<unknown> = options.signal
      ? options.signal.aborted
        ? of(true)
        : fromEvent(options.signal, 'abort')
      : NEVER;
    const sub: Subscription = work$
      .pipe(
        takeUntil(cancel$.pipe(tap(() => (cancelled = true)))),
        ignoreElements(),
      )
      .subscribe({
        error(err: unknown) {
          const error = toError(err);
          const node = failedAt.get(error);
          emit({ type: 'run-end', status: 'error', error: { ...errorInfo(error), ...(node ? { node } : {}) }, usage });
          subscriber.complete();
        },
        complete() {
          emit(cancelled ? { type: 'run-end', status: 'cancelled', usage } : { type: 'run-end', status: 'ok', output: result, usage });
          subscriber.complete();
        },
      });
    return sub;
  });
}

/**
 * Checks a run input against the graph's input nodes before anything runs, so that a
 * caller (the CLI, POST /v1/runs) can refuse it at once instead of starting a run that
 * fails at its first node. Throws the BadRequestError that the run itself would raise.
 */
export function checkRunInput(spec: GraphSpec, input: Record<string, unknown>): void {
  for (const n of spec.nodes) if (n.kind === 'input') readInput(n, n.id, input);
}

function readInput(spec: NodeSpecOf<'input'>, id: string, input: Record<string, unknown>): unknown {
  const name = spec.name ?? id;
  const value = Object.hasOwn(input, name) ? input[name] : spec.default;
  const type = spec.type ?? 'text';
  if (value === undefined) {
    if (spec.required === false) return type === 'list' ? [] : type === 'text' ? '' : null;
    throw new BadRequestError(`input.${name}`, 'is required by the graph and was not given');
  }
  if (type === 'text') {
    if (typeof value === 'string') return value;
    if (typeof value === 'number' || typeof value === 'boolean') return String(value);
    throw new BadRequestError(`input.${name}`, `must be text, got ${Array.isArray(value) ? 'a list' : typeof value}`);
  }
  if (type === 'list') {
    if (Array.isArray(value)) return value.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
    throw new BadRequestError(`input.${name}`, 'must be a list');
  }
  return value;
}
