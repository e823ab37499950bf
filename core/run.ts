/**
 * Runs a compiled graph: every node's output is a shared Observable that emits once per
 * run (once per turn inside a loop body), built lazily from its kind's operator stream
 * (core/nodes.ts); independent branches run concurrently and every model call goes to the
 * one engine. The runner only merges and orders the operators' own event streams: it
 * stamps each event with the run id, time and sequence number, and reads each node's
 * result from that node's own node-end. Values carry a
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
import { errorInfo, nextFinish, toError, type BranchOutcome } from './branches.js';
import type { CompiledGraph, CompiledNode } from './compile.js';
import type { Engine } from './engine.js';
import { BadRequestError, ModelOutputError, NotAvailableError } from './errors.js';
import type { NodeUsage, OperatorEvent, RunEvent } from './events.js';
import type { GraphSpec, NodeSpecOf } from './graph-schema.js';
import type { NodeRegistry, NodeRunContext } from './nodes.js';
import { deriveSeed, randomSeed } from './seed.js';
import type { ToolRegistry } from './tools.js';

export interface RunOptions {
  /** The local shared engine: every model call whose node names no provider. */
  engine: Engine;
  /**
   * The engine of a node that names a provider (`provider` in the graph); runtime/providers
   * builds it from the graph's `providers`. Absent, such a node fails with NotAvailableError.
   */
  engineFor?: (provider: string) => Engine;
  /** Run seed; every node's seed derives from it and the node id (random when absent, reported in run-start). */
  seed?: number;
  runId?: string;
  tools?: ToolRegistry;
  /** Node kinds (default: core/nodes.ts's defaultNodes, which operators/index.ts fills). */
  nodes?: NodeRegistry;
  /** Aborting ends the run with run-end {status: 'cancelled'}; unsubscribing cancels silently. */
  signal?: AbortSignal;
  /**
   * Resuming an interrupted run: its id, and the outputs of its top-level nodes that had
   * completed (node id → output). Those nodes do not run again: each emits node-start and
   * a node-end marked `reused`; every other node runs as it would have, with the same
   * seeds when the run seed is the interrupted run's, so a resumed greedy (or seeded) run
   * gives what an uninterrupted one would.
   */
  resume?: { from: string; outputs: Record<string, unknown> };
}

type Slot = { s: 'ok'; value: unknown } | { s: 'skipped' } | { s: 'failed'; error: Error };
type Ports = Map<string, Slot>;

/** Where a node is being built: the run, or one turn of a loop body (nested for nested loops). */
interface Env {
  memo: Map<string, Observable<Ports>>;
  turn?: { loop: string; n: number; value: unknown; members: Set<string> };
  parent?: Env;
}

type EventBody = RunEvent extends infer E ? (E extends RunEvent ? Omit<E, 'runId' | 't' | 'seq'> : never) : never;
type NodeEnd = Extract<OperatorEvent, { type: 'node-end' }>;

const OUTPUT = '$value';
const ok = (value: unknown): Slot => ({ s: 'ok', value });
const SKIPPED: Slot = { s: 'skipped' };

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

    emit({ type: 'run-start', graph: compiled.spec.name, input, seed, ...(options.resume ? { resumedFrom: options.resume.from } : {}) });
    const reusable = options.resume?.outputs ?? {};

    const engineOf = (node: CompiledNode): Engine => {
      const provider = (node.spec as { provider?: string }).provider;
      if (provider === undefined) return options.engine;
      if (!options.engineFor) throw new NotAvailableError(`provider ${provider}`, 'this runner was given no remote engines');
      return options.engineFor(provider);
    };
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

    /** The node's own stream, stamped and forwarded; its node-end gives the ports; branch isolation around it. */
    const execute = (node: CompiledNode, env: Env, extra: Pick<NodeRunContext<unknown>, 'values' | 'outcomes'>): Observable<Ports> =>
      defer(() => {
        const turnKey = turnsOf(env).join('/');
        const context: NodeRunContext<unknown> = {
          ...extra,
          spec: node.spec,
          scope: { node: node.id, branch: labelOf(node, env), seed: deriveSeed(seed, turnKey ? `${node.id}@${turnKey}` : node.id), owner: runId },
          engine: engineOf(node),
          tools,
          input,
          ...(node.kind === 'loop' ? { turn: loopTurn(node, env) } : {}),
        };
        // A top-level node the interrupted run completed (loop turns and branches run again).
        if (!turnKey && !node.scope.length && Object.hasOwn(reusable, node.id)) {
          const output = reusable[node.id];
          emit({ type: 'node-start', node: node.id });
          emit({ type: 'node-end', node: node.id, output, metrics: {}, reused: true });
          return of(portsOf(node, context, output));
        }
        const t0 = performance.now();
        let end: NodeEnd | undefined;
        const own = (e: OperatorEvent): e is NodeEnd => e.type === 'node-end' && e.node === node.id && e.branch === context.scope.branch;
        const events$ = node.def.run(context).pipe(
          tap((e) => {
            if (own(e)) {
              end = e;
              const u = nodeUsage(node.id);
              u.tokensIn += e.metrics.tokensIn ?? 0;
              u.tokensOut += e.metrics.tokensOut ?? 0;
              u.wallMs += Math.round(performance.now() - t0);
            }
            emit(e);
          }),
          ignoreElements(),
        );
        return concat(
          events$,
          defer(() => {
            if (!end) throw new Error(`node ${node.id} (${node.kind}) ended without its node-end event`);
            return of(portsOf(node, context, end.output));
          }),
        ).pipe(
          catchError((err: unknown) => {
            if (!end) nodeUsage(node.id).wallMs += Math.round(performance.now() - t0);
            const error = blame(err, node.id);
            if (!node.scope.length) throw error;
            emit({ type: 'branch-error', node: node.id, branch: node.scope.join('/'), error: errorInfo(error) });
            return of(allPorts(node, { s: 'failed', error }));
          }),
        );
      });

    const portsOf = (node: CompiledNode, context: NodeRunContext<unknown>, output: unknown): Ports => {
      const values = node.def.ports ? node.def.ports(output, context) : { out: output };
      const ports: Ports = new Map(node.outputs.map((o) => [o.port, Object.hasOwn(values, o.port) ? ok(values[o.port]) : SKIPPED] as const));
      ports.set(OUTPUT, ok(output));
      return ports;
    };

    /** One turn of a loop's body: the value fed to `body`, and the value that reached `next`. */
    const loopTurn = (node: CompiledNode, env: Env) => {
      const members = compiled.analysis.loopBodies.get(node.id)!;
      const next = node.inputs.find((i) => i.port === 'next')!;
      return (value: unknown, n: number): Observable<unknown> => {
        const turnEnv: Env = { memo: new Map(), turn: { loop: node.id, n, value, members }, parent: env };
        return portSlot(next.from, next.fromPort, turnEnv).pipe(
          map((slot) => {
            if (slot.s === 'ok') return slot.value;
            if (slot.s === 'failed') throw slot.error;
            throw new ModelOutputError(node.id, `turn ${n + 1} produced no value (its branch was not taken)`);
          }),
        );
      };
    };

    const buildNode = (node: CompiledNode, env: Env): Observable<Ports> => {
      const forward = node.inputs.filter((i) => !(node.kind === 'loop' && i.port === 'next'));
      if (node.def.gathers) return buildGather(node, env, forward);
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
          return execute(node, env, { values });
        }),
      );
    };

    const buildGather = (node: CompiledNode, env: Env, inputs: CompiledNode['inputs']): Observable<Ports> => {
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
            : execute(node, env, { values: {}, outcomes: concat(of(firstTaken), shared$) }),
        ),
      );
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

/** The value of an input node from the run input, checked against the node's type. */
export function readInput(spec: NodeSpecOf<'input'>, id: string, input: Record<string, unknown>): unknown {
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
