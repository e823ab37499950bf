/**
 * The built-in node kinds, registered into core's `defaultNodes`: each kind of the graph
 * format runs as the operator of the same name, on the node's input values and scope.
 * core/run.ts reaches them only through that registry. A generate node's `stages`
 * compile to the chain of stage operators before it, in order.
 *
 * @example
 * import './nodes.js'; // done by operators/index.ts
 * runGraph(spec, input, { engine });
 */
import { defer, map, of, type Observable } from 'rxjs';
import { operatorEvent, type OperatorEvent } from '../core/events.js';
import type { NodeScope } from '../core/nodes.js';
import { defaultNodes, type NodeRegistry } from '../core/nodes.js';
import { readInput } from '../core/run.js';
import { expand } from './expand.js';
import { generate } from './generate.js';
import { generateJson } from './generateJson.js';
import { done, nodeStream } from './internal/node.js';
import type { Skeleton } from './internal/sot.js';
import { join } from './join.js';
import { loop } from './loop.js';
import { route, type Routed } from './route.js';
import { skeleton } from './skeleton.js';
import { stageChain, throughStages } from './stages.js';
import { template } from './template.js';
import { tool } from './tool.js';

/** A node whose output is at hand: node-start, node-end. */
const valueNode = (scope: NodeScope & { node: string }, output: () => unknown): Observable<OperatorEvent> =>
  nodeStream(scope, defer(() => of(done(output()))));

export function registerBuiltinNodes(registry: NodeRegistry): NodeRegistry {
  return registry
    .register('input', { run: ({ spec, scope, input }) => valueNode(scope, () => readInput(spec, scope.node, input)) })
    .register('template', { run: ({ spec, values, scope }) => of(values).pipe(template(spec.template, { tail: spec.tail, context: scope })) })
    .register('generate', {
      // An `output` with a JSON Schema makes the node generateJson (its value is the parsed JSON).
      run: ({ spec, values, scope, engine }) => {
        const common = { engine, system: spec.system, chat: spec.chat, assistantPrefix: spec.assistantPrefix, sampling: spec.sampling, context: scope };
        const schema = spec.output?.schema as object | boolean | undefined;
        return throughStages(of({ prompt: String(values.prompt), system: values.system as string | undefined }), stageChain(spec.stages)).pipe(
          schema !== undefined ? generateJson({ ...common, schema }) : generate({ ...common, output: spec.output }),
        );
      },
    })
    .register('skeleton', {
      run: ({ spec, values, scope, engine }) =>
        of(String(values.question)).pipe(skeleton({ engine, maxPoints: spec.maxPoints, sampling: spec.sampling, stages: spec.stages, context: scope })),
    })
    .register('expand', {
      run: ({ spec, values, scope, engine }) =>
        of(values.skeleton as Skeleton).pipe(expand({ engine, concurrency: spec.concurrency, shareKv: spec.shareKv, sampling: spec.sampling, stages: spec.stages, context: scope })),
    })
    .register('fork', {
      run: ({ values, scope }) => valueNode(scope, () => values.in),
      ports: (output, { spec }) => Object.fromEntries(spec.branches.map((b) => [b, output])),
    })
    .register('join', {
      gathers: true,
      run: ({ spec, scope, outcomes }) => outcomes!.pipe(join(spec.mode, { separator: spec.separator, context: scope })),
    })
    .register('route', {
      // The node-end shows the branch taken (and the model's answer); the value goes out on that branch's port.
      run: ({ spec, values, scope, engine }) =>
        of(values.in).pipe(
          route({ branches: spec.branches, default: spec.default, by: spec.by, prompt: spec.prompt, answers: spec.answers, engine, sampling: spec.sampling, context: scope }),
          map((e) => {
            if (e.type !== 'node-end' || e.node !== scope.node || e.branch !== scope.branch) return e;
            const r = e.output as Routed<unknown>;
            return operatorEvent({ ...e, output: r.answer === undefined ? { branch: r.branch } : { branch: r.branch, answer: r.answer } });
          }),
        ),
      ports: (output, { values }) => ({ [(output as { branch: string }).branch]: values.in }),
    })
    .register('loop', {
      run: ({ spec, values, scope, turn }) => of(values.init).pipe(loop({ body: turn!, maxTurns: spec.maxTurns, stop: spec.stop, context: scope })),
    })
    .register('tool', {
      run: ({ spec, values, scope, tools }) =>
        of(values.in).pipe(tool(spec.tool, { registry: tools, args: spec.args as Record<string, unknown> | undefined, context: scope })),
    })
    .register('output', { run: ({ values, scope }) => valueNode(scope, () => values.in) });
}

registerBuiltinNodes(defaultNodes);
