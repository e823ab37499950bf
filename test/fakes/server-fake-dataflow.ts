/**
 * A small stand-in for the dataflow core, for HTTP tests that must not depend on the
 * compiler: it checks a graph's shape (with JSON pointers) and runs its nodes in
 * topological order on the engine — `generate` and `skeleton` nodes once, `expand` nodes
 * once per point of the skeleton, in parallel, as branches p1, p2, … — streaming RunEvents.
 *
 * @example
 * const app = createApp({ engine, dataflow: fakeDataflow });
 */
import { Observable, type Subscription } from 'rxjs';
import { GraphValidationError, type GraphProblem } from '../../core/errors.js';
import type { NodeUsage, RunEvent } from '../../core/events.js';
import type { Engine } from '../../runtime/engine/types.js';
import type { Dataflow } from '../../runtime/server/types.js';

interface FakeNode {
  id: string;
  kind: string;
}
interface FakeGraph {
  name: string;
  nodes: FakeNode[];
  edges: Array<{ from: string; to: string }>;
}

type Body<T> = T extends { type: infer K } ? (T extends unknown ? Omit<T, 'runId' | 't' | 'seq'> & { type: K } : never) : never;

function validateGraph(json: unknown): GraphProblem[] {
  const problems: GraphProblem[] = [];
  const g = json as Partial<FakeGraph> | null;
  if (typeof g !== 'object' || g === null || Array.isArray(g)) return [{ pointer: '', message: 'must be object' }];
  if (typeof g.name !== 'string') problems.push({ pointer: '', message: "must have required property 'name'" });
  if (!Array.isArray(g.nodes) || g.nodes.length === 0) problems.push({ pointer: '/nodes', message: 'must be a non-empty array' });
  if (!Array.isArray(g.edges)) problems.push({ pointer: '/edges', message: 'must be array' });
  const ids = new Set<string>();
  (Array.isArray(g.nodes) ? g.nodes : []).forEach((n, i) => {
    if (typeof n?.id !== 'string') problems.push({ pointer: `/nodes/${i}`, message: "must have required property 'id'" });
    else if (ids.has(n.id)) problems.push({ pointer: `/nodes/${i}/id`, message: `duplicate node id ${n.id}` });
    else ids.add(n.id);
    if (typeof n?.kind !== 'string') problems.push({ pointer: `/nodes/${i}`, message: "must have required property 'kind'" });
  });
  (Array.isArray(g.edges) ? g.edges : []).forEach((e, i) => {
    for (const end of ['from', 'to'] as const) {
      const node = String(e?.[end] ?? '').split('.')[0]!;
      if (!ids.has(node)) problems.push({ pointer: `/edges/${i}/${end}`, message: `unknown node ${node}` });
    }
  });
  return problems;
}

function topo(g: FakeGraph): FakeNode[] {
  const deps = new Map(g.nodes.map((n) => [n.id, new Set<string>()]));
  for (const e of g.edges) deps.get(e.to.split('.')[0]!)?.add(e.from.split('.')[0]!);
  const out: FakeNode[] = [];
  const done = new Set<string>();
  while (out.length < g.nodes.length) {
    const next = g.nodes.find((n) => !done.has(n.id) && [...deps.get(n.id)!].every((d) => done.has(d)));
    if (!next) throw new Error('cycle');
    done.add(next.id);
    out.push(next);
  }
  return out;
}

function runGraph(spec: FakeGraph, input: Record<string, unknown>, options: { engine: Engine; seed?: number; runId?: string }): Observable<RunEvent> {
  const { engine } = options;
  const runId = options.runId ?? 'run_fake';
  return new Observable<RunEvent>((subscriber) => {
    const t0 = Date.now();
    let seq = 0;
    const subs = new Set<Subscription>();
    let stopped = false;
    const emit = (e: Body<RunEvent>) => {
      if (!stopped) subscriber.next({ ...e, runId, t: Date.now() - t0, seq: seq++ } as RunEvent);
    };
    const usage: Record<string, NodeUsage> = {};
    const question = String(input.question ?? input.prompt ?? Object.values(input)[0] ?? '');

    const generate = (node: string, prompt: string, branch?: string) =>
      new Promise<string>((resolve, reject) => {
        const started = Date.now();
        emit({ type: 'node-start', node, ...(branch ? { branch } : {}) });
        const sub = engine.generate({ messages: [{ role: 'user', content: prompt }], sampling: { maxTokens: 24 }, owner: runId }).subscribe({
          next: (e) => {
            if (e.type === 'token') emit({ type: 'text-delta', node, ...(branch ? { branch } : {}), text: e.text, tokenIds: [e.id] });
            else {
              const u = (usage[node] ??= { tokensIn: 0, tokensOut: 0, wallMs: 0 });
              u.tokensIn += e.usage.promptTokens;
              u.tokensOut += e.usage.completionTokens;
              u.wallMs = Math.max(u.wallMs, Date.now() - started);
              emit({
                type: 'node-end',
                node,
                ...(branch ? { branch } : {}),
                output: e.text,
                metrics: { tokensIn: e.usage.promptTokens, tokensOut: e.usage.completionTokens, ttftMs: e.metrics.ttftMs, tokensPerSec: e.metrics.decodeTokensPerSec, kvBlocksShared: branch ? 2 : 0 },
              });
              resolve(e.text);
            }
          },
          error: reject,
        });
        subs.add(sub);
      });

    emit({ type: 'run-start', graph: spec.name, input, seed: options.seed ?? 0 });
    (async () => {
      let last = question;
      let skeleton: string[] = [];
      for (const node of topo(spec)) {
        if (stopped) return;
        if (node.kind === 'generate') last = await generate(node.id, last);
        else if (node.kind === 'skeleton') {
          last = await generate(node.id, `Give the skeleton of: ${question}`);
          skeleton = last.split('\n').filter((l) => /^\d+\./.test(l));
        } else if (node.kind === 'expand') {
          const points = await Promise.all(skeleton.map((p, i) => generate(node.id, `Expand ${p}`, `p${i + 1}`)));
          last = points.join('\n\n');
        } else {
          emit({ type: 'node-start', node: node.id });
          emit({ type: 'node-end', node: node.id, output: last, metrics: {} });
        }
      }
      emit({ type: 'run-end', status: 'ok', output: { answer: last }, usage });
      subscriber.complete();
    })().catch((err: unknown) => subscriber.error(err));

    return () => {
      stopped = true;
      for (const s of subs) s.unsubscribe();
    };
  });
}

export const fakeDataflow: Dataflow = {
  validateGraph,
  parseGraph(json: unknown, source?: string) {
    const problems = validateGraph(json);
    if (problems.length) throw new GraphValidationError(problems, source);
    return json;
  },
  runGraph: runGraph as unknown as Dataflow['runGraph'],
  graphJsonSchema: { title: 'fake graph schema', type: 'object' },
};

export const fakeSotGraph = {
  version: 1,
  name: 'sot',
  description: 'Skeleton-of-Thought: outline, then expand every point in parallel.',
  nodes: [
    { id: 'question', kind: 'input' },
    { id: 'skeleton', kind: 'skeleton' },
    { id: 'expand', kind: 'expand' },
    { id: 'answer', kind: 'output' },
  ],
  edges: [
    { from: 'question', to: 'skeleton' },
    { from: 'skeleton', to: 'expand' },
    { from: 'expand', to: 'answer' },
  ],
};

export const fakeChatGraph = {
  version: 1,
  name: 'chat',
  nodes: [
    { id: 'prompt', kind: 'input' },
    { id: 'reply', kind: 'generate' },
    { id: 'answer', kind: 'output' },
  ],
  edges: [
    { from: 'prompt', to: 'reply' },
    { from: 'reply', to: 'answer' },
  ],
};
