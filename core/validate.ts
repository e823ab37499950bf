/**
 * Graph validation: the JSON Schema (ajv, draft 2020-12) first, then the checks a schema
 * cannot express — duplicate ids, dangling or duplicate edges, unknown ports, port
 * types, missing required inputs, cycles that do not pass through a loop node, loop
 * bodies that leak, inputs mixed from sibling branches. Every problem is reported at
 * once, each with a JSON pointer into the document and a plain message.
 *
 * @example
 * const problems = validateGraph(JSON.parse(text));
 * if (problems.length) console.error(problems.map((p) => `${p.pointer}: ${p.message}`).join('\n'));
 */
import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js';
import { GraphValidationError, type GraphProblem } from './errors.js';
import { graphJsonSchema, joinModes, nodeKinds, type GraphSpec, type NodeSpec, type PortType } from './graph-schema.js';
import { forwardStages } from './stages.js';
import { portsOf, portTypeAccepts, type NodePorts, type PortDef } from './ports.js';

/** An edge with both ends resolved to a node and a port. */
export interface ResolvedEdge {
  index: number;
  from: string;
  fromPort: string;
  to: string;
  toPort: string;
}

/** What validation learned about a valid graph; the compiler builds on it. */
export interface GraphAnalysis {
  spec: GraphSpec;
  nodes: Map<string, NodeSpec>;
  ports: Map<string, NodePorts>;
  /** Incoming edges per node, in document order. */
  incoming: Map<string, ResolvedEdge[]>;
  outgoing: Map<string, ResolvedEdge[]>;
  /** Nodes in dependency order (edges into a loop's `next` port do not count). */
  order: string[];
  /** Resolved type of every output port, `node.port` → type. */
  types: Map<string, PortType>;
  /** Branch scope of every node: the fork/route branches it lies in, outermost first. */
  scopes: Map<string, string[]>;
  /** Loop id → the nodes run once per turn. */
  loopBodies: Map<string, Set<string>>;
}

const ajv = new Ajv2020({ allErrors: true, discriminator: true, strict: false });
const validateSchema = ajv.compile(graphJsonSchema);

const pointerEscape = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** An ajv error as a problem at a JSON pointer, in plain words (graphs and HTTP bodies alike). */
export function schemaProblem(e: ErrorObject, doc: unknown): GraphProblem {
  const at = e.instancePath;
  // A key that breaks propertyNames is named by its own pointer (/logit_bias/x), not its object's.
  const badKey = e.keyword === 'propertyNames' ? (e.params as { propertyName: string }).propertyName : e.propertyName;
  if (badKey !== undefined) return { pointer: `${at}/${pointerEscape(badKey)}`, message: `invalid key '${badKey}'${e.keyword === 'propertyNames' ? '' : `: ${e.message}`}` };
  switch (e.keyword) {
    case 'discriminator': {
      const p = e.params as { error: string; tagValue?: unknown };
      if (p.error === 'mapping')
        return { pointer: `${at}/kind`, message: `unknown node kind ${JSON.stringify(p.tagValue)} (known: ${nodeKinds.join(', ')})` };
      return { pointer: `${at}/kind`, message: 'missing node kind' };
    }
    case 'additionalProperties': {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      return { pointer: `${at}/${pointerEscape(extra)}`, message: `unknown field '${extra}'` };
    }
    case 'required': {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      return { pointer: `${at}/${pointerEscape(missing)}`, message: `missing required field '${missing}'` };
    }
    case 'enum': {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
      const value = valueAt(doc, at);
      const what = /\/mode$/.test(at) && allowed === (joinModes as unknown) ? 'join mode' : 'value';
      return { pointer: at, message: `unknown ${what} ${JSON.stringify(value)} (expected one of: ${allowed.join(', ')})` };
    }
    case 'const':
      return { pointer: at, message: `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}` };
    default:
      return { pointer: at, message: e.message ?? e.keyword };
  }
}

function valueAt(doc: unknown, pointer: string): unknown {
  let cur = doc;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/** Lists every problem of a graph document; an empty list means it is valid. */
export function validateGraph(json: unknown): GraphProblem[] {
  return analyze(json).problems;
}

/** Validates and returns the graph, typed; throws GraphValidationError listing every problem. */
export function parseGraph(json: unknown, source?: string): GraphSpec {
  const { problems } = analyze(json);
  if (problems.length) throw new GraphValidationError(problems, source);
  return json as GraphSpec;
}

/** Validates and returns what the compiler needs; throws GraphValidationError. */
export function analyzeGraph(json: unknown, source?: string): GraphAnalysis {
  const { problems, analysis } = analyze(json);
  if (problems.length || !analysis) throw new GraphValidationError(problems, source);
  return analysis;
}

function analyze(json: unknown): { problems: GraphProblem[]; analysis?: GraphAnalysis } {
  const problems: GraphProblem[] = [];
  const seen = new Set<string>();
  const add = (p: GraphProblem) => {
    const key = `${p.pointer}\u0000${p.message}`;
    if (!seen.has(key)) (seen.add(key), problems.push(p));
  };
  if (!validateSchema(json)) {
    // Ajv also reports every oneOf branch that did not match; the discriminator already
    // picked the branch, so those are noise.
    for (const e of validateSchema.errors ?? []) if (e.keyword !== 'oneOf') add(schemaProblem(e, json));
  }
  const doc = json as Partial<GraphSpec> | null;
  if (!doc || typeof doc !== 'object' || !Array.isArray(doc.nodes) || !Array.isArray(doc.edges)) return { problems };

  // Nodes whose own schema failed still count as existing, so edges to them are not
  // also reported as dangling; only schema-valid nodes get the deeper checks.
  const badNodes = new Set<number>();
  for (const p of problems) {
    const m = /^\/nodes\/(\d+)/.exec(p.pointer);
    if (m) badNodes.add(Number(m[1]));
  }
  const nodes = new Map<string, NodeSpec>();
  const nodeIndex = new Map<string, number>();
  const ports = new Map<string, NodePorts>();
  const known = new Set<string>();
  doc.nodes.forEach((n, i) => {
    const id = (n as { id?: unknown } | null)?.id;
    if (typeof id !== 'string') return;
    if (nodeIndex.has(id) || known.has(id)) {
      add({ pointer: `/nodes/${i}/id`, message: `duplicate node id '${id}' (first at /nodes/${nodeIndex.get(id) ?? '?'})` });
      return;
    }
    known.add(id);
    nodeIndex.set(id, i);
    if (!badNodes.has(i)) {
      nodes.set(id, n);
      ports.set(id, portsOf(n));
    }
  });

  checkNodes(nodes, nodeIndex, add);
  checkProviders(doc.providers, nodes, nodeIndex, add);

  const incoming = new Map<string, ResolvedEdge[]>();
  const outgoing = new Map<string, ResolvedEdge[]>();
  for (const id of nodes.keys()) (incoming.set(id, []), outgoing.set(id, []));
  const edgeKeys = new Map<string, number>();
  const portTaken = new Map<string, number>();
  const connectedFromBad = new Set<string>();
  doc.edges.forEach((e, index) => {
    if (!e || typeof e.from !== 'string' || typeof e.to !== 'string') return;
    const from = resolveEnd(e.from, 'from', index, known, ports, add);
    const to = resolveEnd(e.to, 'to', index, known, ports, add);
    if (to && !from && known.has(e.from.split('.')[0]!) && !ports.has(e.from.split('.')[0]!)) {
      // The source has its own schema problems; the input still counts as connected.
      connectedFromBad.add(`${to.node}.${to.port || e.from.split('.')[0]}`);
    }
    if (!from || !to) return;
    if (to.port === '') to.port = from.node;
    const key = `${from.node}.${from.port}->${to.node}.${to.port}`;
    if (edgeKeys.has(key)) {
      add({ pointer: `/edges/${index}`, message: `duplicate edge ${e.from} → ${e.to} (same as /edges/${edgeKeys.get(key)})` });
      return;
    }
    edgeKeys.set(key, index);
    const target = `${to.node}.${to.port}`;
    if (portTaken.has(target)) {
      add({ pointer: `/edges/${index}/to`, message: `input ${target} is already connected by /edges/${portTaken.get(target)}` });
      return;
    }
    portTaken.set(target, index);
    const edge: ResolvedEdge = { index, from: from.node, fromPort: from.port, to: to.node, toPort: to.port };
    incoming.get(to.node)!.push(edge);
    outgoing.get(from.node)!.push(edge);
  });

  for (const [id, p] of ports) {
    const connected = new Set(incoming.get(id)!.map((e) => e.toPort));
    for (const key of connectedFromBad) if (key.startsWith(`${id}.`)) connected.add(key.slice(id.length + 1));
    for (const port of p.inputs)
      if (port.required && !connected.has(port.name))
        add({ pointer: `/nodes/${nodeIndex.get(id)}`, message: `node '${id}' is missing required input '${port.name}' (connect an edge to '${id}.${port.name}')` });
    if (p.variadic && connected.size === 0)
      add({ pointer: `/nodes/${nodeIndex.get(id)}`, message: `node '${id}' has no inputs (connect at least one edge to it)` });
  }
  if (!doc.nodes.some((n) => (n as { kind?: unknown } | null)?.kind === 'output'))
    add({ pointer: '/nodes', message: 'the graph has no output node' });

  // With a cycle the order covers only the nodes outside it; those still get their
  // type and branch checks, so one run of the validator lists every problem.
  const { order, complete } = topoOrder(nodes, incoming, add);
  const loopBodies = checkLoops(nodes, nodeIndex, outgoing, incoming, add);
  const types = checkTypes(order, nodes, ports, incoming, add);
  const scopes = checkScopes(order, nodes, nodeIndex, incoming, add);

  if (problems.length || !complete) return { problems };
  return {
    problems,
    analysis: { spec: doc as GraphSpec, nodes, ports, incoming, outgoing, order, types, scopes, loopBodies },
  };
}

type Add = (p: GraphProblem) => void;

function checkRegex(regex: string | undefined, flags: string | undefined, pointer: string, add: Add) {
  if (regex === undefined) return;
  try {
    new RegExp(regex, flags);
  } catch (err) {
    add({ pointer, message: `invalid regular expression: ${(err as Error).message}` });
    return;
  }
  const found = backtrackingFeature(regex);
  if (found) {
    add({
      pointer,
      message: `${found} is not supported: a graph's regular expression must run in linear time, and backreferences and lookarounds can make matching hang on a long text`,
    });
  }
}

const lookarounds: [string, string][] = [
  ['(?<=', 'lookbehind'],
  ['(?<!', 'negative lookbehind'],
  ['(?=', 'lookahead'],
  ['(?!', 'negative lookahead'],
];

/** The first backreference or lookaround of a (valid) pattern, outside character classes, as a phrase. */
function backtrackingFeature(source: string): string | undefined {
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') {
      const next = source[i + 1] ?? '';
      if (!inClass && /[1-9]/.test(next)) return `the backreference \\${source.slice(i + 1).match(/^\d+/)![0]}`;
      if (!inClass && next === 'k' && source[i + 2] === '<') return `the named backreference ${source.slice(i).match(/^\\k<[^>]*>?/)![0]}`;
      i++;
    } else if (inClass) {
      if (c === ']') inClass = false;
    } else if (c === '[') {
      inClass = true;
    } else if (c === '(') {
      const hit = lookarounds.find(([open]) => source.startsWith(open, i));
      if (hit) return `the ${hit[1]} ${hit[0]}`;
    }
  }
  return undefined;
}

function checkNodes(nodes: Map<string, NodeSpec>, nodeIndex: Map<string, number>, add: Add) {
  const names = new Map<string, string>();
  for (const [id, n] of nodes) {
    const at = `/nodes/${nodeIndex.get(id)}`;
    if (n.kind === 'input' || n.kind === 'output') {
      const name = `${n.kind}:${n.name ?? id}`;
      if (names.has(name)) add({ pointer: `${at}/name`, message: `${n.kind} name '${n.name ?? id}' is already used by node '${names.get(name)}'` });
      else names.set(name, id);
    }
    if (n.kind === 'route') {
      const seen = new Set<string>();
      n.branches.forEach((b, k) => {
        if (seen.has(b.name)) add({ pointer: `${at}/branches/${k}/name`, message: `duplicate branch name '${b.name}'` });
        seen.add(b.name);
        checkRegex(b.when.regex, b.when.flags, `${at}/branches/${k}/when/regex`, add);
      });
    }
    if (n.kind === 'loop') checkRegex(n.stop?.regex, n.stop?.flags, `${at}/stop/regex`, add);
  }
}

/**
 * A node's `provider` must name one of the graph's `providers`, and a node on a remote
 * provider cannot ask for what only Skein's own runtime does: the stages that shape the
 * forward pass, and structured output (Skein's sampler masks tokens; the remote's does not);
 * nor an assistant prefix on a server declared unable to continue one.
 */
function checkProviders(providers: GraphSpec['providers'], nodes: Map<string, NodeSpec>, nodeIndex: Map<string, number>, add: Add) {
  const declared = Object.keys(providers ?? {});
  for (const [id, n] of nodes) {
    if (!('provider' in n) || n.provider === undefined) continue;
    const at = `/nodes/${nodeIndex.get(id)}`;
    const name = n.provider;
    if (!Object.hasOwn(providers ?? {}, name)) {
      add({ pointer: `${at}/provider`, message: `unknown provider '${name}' (${declared.length ? `declared: ${declared.join(', ')}` : 'the graph declares no providers'})` });
      continue;
    }
    if (n.kind === 'route' && n.by !== 'model') {
      add({ pointer: `${at}/provider`, message: 'a route only calls a model with by: model; by value it has nothing to send to a provider' });
    }
    const stages = 'stages' in n ? (n.stages ?? {}) : {};
    for (const stage of forwardStages) {
      if ((stages as Record<string, unknown>)[stage] === undefined) continue;
      add({
        pointer: `${at}/stages/${stage}`,
        message: `${stage} changes the model's forward pass, which provider '${name}' runs on its own server behind an API that cannot shape it; run the node locally, or use compress (it runs here before the request leaves)`,
      });
    }
    const startsAnswer = n.kind === 'skeleton' || n.kind === 'expand' || (n.kind === 'generate' && n.assistantPrefix !== undefined);
    if (startsAnswer && providers?.[name]?.continueFinalMessage === false) {
      add({
        pointer: `${at}/provider`,
        message: `this ${n.kind} node starts the assistant's answer itself (an assistant prefix), and provider '${name}' declares continueFinalMessage: false (its server would answer a new turn instead of continuing it); run the node locally or on a server that continues a final assistant message`,
      });
    }
    if (n.kind === 'generate' && n.chat === false) {
      add({ pointer: `${at}/chat`, message: `provider '${name}' is called through its chat completions API; a raw-text prompt (chat: false) cannot be sent to it` });
    }
    if (n.kind === 'generate' && n.output !== undefined) {
      add({ pointer: `${at}/output`, message: `structured output is enforced by Skein's own sampler (constrained decoding), which provider '${name}' does not run; run the node locally` });
    }
    if (n.kind === 'route' && n.answers !== undefined) {
      add({ pointer: `${at}/answers`, message: `answers are enforced by Skein's own sampler (a choice constraint), which provider '${name}' does not run; run the node locally, or match the free text with conditions` });
    }
  }
}

function resolveEnd(
  text: string,
  end: 'from' | 'to',
  index: number,
  known: Set<string>,
  ports: Map<string, NodePorts>,
  add: Add,
): { node: string; port: string } | undefined {
  const pointer = `/edges/${index}/${end}`;
  const [node, explicitPort] = text.split('.') as [string, string | undefined];
  if (!known.has(node)) {
    add({ pointer, message: `edge ${end === 'from' ? 'source' : 'target'} '${node}' is not a node of this graph` });
    return undefined;
  }
  const p = ports.get(node);
  if (!p) return undefined; // the node has schema problems, already reported
  const list: PortDef[] = end === 'from' ? p.outputs : p.inputs;
  const kind = end === 'from' ? 'output' : 'input';
  if (explicitPort === undefined) {
    if (end === 'to' && p.variadic) return { node, port: '' }; // named after its source below
    if (list.length === 1) return { node, port: list[0]!.name };
    add({
      pointer,
      message: list.length
        ? `node '${node}' has several ${kind}s (${list.map((d) => d.name).join(', ')}): write '${node}.<${kind}>'`
        : `node '${node}' has no ${kind}s`,
    });
    return undefined;
  }
  if (end === 'to' && p.variadic) return { node, port: explicitPort };
  if (!list.some((d) => d.name === explicitPort)) {
    add({
      pointer,
      message: `node '${node}' has no ${kind} '${explicitPort}'${list.length ? ` (${kind}s: ${list.map((d) => d.name).join(', ')})` : ''}`,
    });
    return undefined;
  }
  return { node, port: explicitPort };
}

const isBackEdge = (nodes: Map<string, NodeSpec>, e: ResolvedEdge) => nodes.get(e.to)?.kind === 'loop' && e.toPort === 'next';

/** Kahn's order over the non-loop-back edges; a leftover means a cycle not through a loop. */
function topoOrder(nodes: Map<string, NodeSpec>, incoming: Map<string, ResolvedEdge[]>, add: Add): { order: string[]; complete: boolean } {
  const pending = new Map<string, number>();
  const users = new Map<string, string[]>();
  for (const id of nodes.keys()) (pending.set(id, 0), users.set(id, []));
  for (const [id, edges] of incoming)
    for (const e of edges) {
      if (isBackEdge(nodes, e) || !nodes.has(e.from)) continue;
      pending.set(id, pending.get(id)! + 1);
      users.get(e.from)!.push(id);
    }
  const order: string[] = [];
  const ready = [...nodes.keys()].filter((id) => pending.get(id) === 0);
  while (ready.length) {
    const id = ready.shift()!;
    order.push(id);
    for (const u of users.get(id)!) {
      pending.set(u, pending.get(u)! - 1);
      if (pending.get(u) === 0) ready.push(u);
    }
  }
  if (order.length === nodes.size) return { order, complete: true };
  const cycle = findCycle(nodes, incoming, new Set(order));
  add({
    pointer: `/edges/${cycle.edge}`,
    message: `cycle ${cycle.path.join(' → ')}: a cycle must pass through a loop node's 'next' input`,
  });
  return { order, complete: false };
}

function findCycle(nodes: Map<string, NodeSpec>, incoming: Map<string, ResolvedEdge[]>, done: Set<string>) {
  // Walk backwards along incoming edges among the unsorted nodes until a node repeats.
  let cur = [...nodes.keys()].find((id) => !done.has(id))!;
  const path: string[] = [];
  const edges: number[] = [];
  while (!path.includes(cur)) {
    path.push(cur);
    const e = incoming.get(cur)!.find((x) => !isBackEdge(nodes, x) && !done.has(x.from) && nodes.has(x.from))!;
    edges.push(e.index);
    cur = e.from;
  }
  const start = path.indexOf(cur);
  const loop = path.slice(start).reverse();
  return { path: [...loop, loop[0]!], edge: edges[edges.length - 1]! };
}

function checkLoops(
  nodes: Map<string, NodeSpec>,
  nodeIndex: Map<string, number>,
  outgoing: Map<string, ResolvedEdge[]>,
  incoming: Map<string, ResolvedEdge[]>,
  add: Add,
): Map<string, Set<string>> {
  const bodies = new Map<string, Set<string>>();
  for (const [id, n] of nodes) {
    if (n.kind !== 'loop') continue;
    // The body is what runs each turn: fed (transitively) by `body` and feeding `next`.
    const fed = new Set<string>();
    const stack = outgoing.get(id)!.filter((e) => e.fromPort === 'body').map((e) => e.to);
    while (stack.length) {
      const cur = stack.pop()!;
      if (cur === id || fed.has(cur)) continue;
      fed.add(cur);
      for (const e of outgoing.get(cur) ?? []) stack.push(e.to);
    }
    const feeds = new Set<string>();
    const back = incoming.get(id)!.filter((e) => e.toPort === 'next').map((e) => e.from);
    while (back.length) {
      const cur = back.pop()!;
      if (cur === id || feeds.has(cur)) continue;
      feeds.add(cur);
      for (const e of incoming.get(cur) ?? []) back.push(e.from);
    }
    const body = new Set([...fed].filter((n) => feeds.has(n)));
    bodies.set(id, body);
    const next = incoming.get(id)!.find((e) => e.toPort === 'next');
    if (next && next.from !== id && !body.has(next.from))
      add({ pointer: `/edges/${next.index}`, message: `loop '${id}': its 'next' input must come from its body (nodes fed by '${id}.body')` });
    for (const member of body)
      for (const e of outgoing.get(member) ?? [])
        if (!body.has(e.to) && !(e.to === id && e.toPort === 'next'))
          add({
            pointer: `/edges/${e.index}`,
            message: `node '${member}' runs once per turn of loop '${id}' but feeds '${e.to}' outside it: take the loop's result from '${id}.out'`,
          });
    if (body.size === 0 && nodeIndex.has(id) && !next)
      add({ pointer: `/nodes/${nodeIndex.get(id)}`, message: `loop '${id}' has an empty body` });
  }
  return bodies;
}

function checkTypes(
  order: string[],
  nodes: Map<string, NodeSpec>,
  ports: Map<string, NodePorts>,
  incoming: Map<string, ResolvedEdge[]>,
  add: Add,
): Map<string, PortType> {
  const types = new Map<string, PortType>();
  for (const id of order) {
    const p = ports.get(id)!;
    const ins = incoming.get(id)!;
    const typeOf = (e: ResolvedEdge) => types.get(`${e.from}.${e.fromPort}`) ?? 'any';
    for (const e of ins) {
      if (isBackEdge(nodes, e)) continue;
      const want = p.inputs.find((d) => d.name === e.toPort)?.type ?? 'any';
      const got = typeOf(e);
      if (!portTypeAccepts(want, got))
        add({ pointer: `/edges/${e.index}`, message: `type mismatch: '${e.from}.${e.fromPort}' gives ${got} but '${id}.${e.toPort}' takes ${want}` });
    }
    for (const out of p.outputs) {
      let t = out.type;
      if (out.pass === '*') {
        const all = new Set(ins.map(typeOf));
        t = all.size === 1 ? [...all][0]! : 'any';
      } else if (out.pass) {
        const src = ins.find((e) => e.toPort === out.pass);
        t = src ? typeOf(src) : 'any';
      }
      types.set(`${id}.${out.name}`, t);
    }
  }
  return types;
}

function checkScopes(
  order: string[],
  nodes: Map<string, NodeSpec>,
  nodeIndex: Map<string, number>,
  incoming: Map<string, ResolvedEdge[]>,
  add: Add,
): Map<string, string[]> {
  const nodeScope = new Map<string, string[]>();
  const portScope = (e: ResolvedEdge): string[] => {
    const base = nodeScope.get(e.from) ?? [];
    const kind = nodes.get(e.from)?.kind;
    return kind === 'fork' || kind === 'route' ? [...base, `${e.from}.${e.fromPort}`] : base;
  };
  for (const id of order) {
    const scopes = incoming.get(id)!.filter((e) => !isBackEdge(nodes, e)).map(portScope);
    const node = nodes.get(id)!;
    let scope: string[] = [];
    if (node.kind === 'join') {
      // A join closes the branches it gathers: its scope is what its inputs share.
      scope = scopes.reduce((acc, s) => acc.filter((x, i) => s[i] === x), scopes[0] ?? []);
    } else {
      for (const s of scopes) {
        const [long, short] = s.length >= scope.length ? [s, scope] : [scope, s];
        if (short.some((x, i) => long[i] !== x)) {
          add({
            pointer: `/nodes/${nodeIndex.get(id)}`,
            message: `node '${id}' takes inputs from different branches (${short.join('/') || 'none'} and ${long.join('/')}): join them first`,
          });
        }
        scope = long;
      }
    }
    nodeScope.set(id, scope);
  }
  return nodeScope;
}
