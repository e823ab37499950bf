/**
 * KV sharing over a fork's common prefix, the work behind `shareKv` and expand's
 * `shareKv` option: the longest common text of the branches' rendered prompts is
 * prefilled once in the engine (one greedy token, taken from the prefill's own logits, so
 * no decode step), whose prefix cache then keeps its full KV blocks for every branch to
 * adopt. Emits one `kvShare` stage event — what it decided to share, what the shared
 * prefill cost — and completes; fewer than two prompts or no common text, and it
 * completes at once. Unsubscribing cancels the prefill.
 */
import { EMPTY, map, filter, type Observable } from 'rxjs';
import type { Engine } from '../../core/engine.js';
import { operatorEvent, type OperatorEvent } from '../../core/events.js';

export function prefillSharedPrefix(engine: Engine, prompts: string[], scope: { node: string; branch?: string; owner?: string }): Observable<OperatorEvent> {
  const prefix = prompts.length < 2 ? '' : commonPrefix(prompts);
  if (prefix === '') return EMPTY;
  const t0 = performance.now();
  return engine.generate({ prompt: prefix, sampling: { maxTokens: 1, temperature: 0 }, ...(scope.owner !== undefined ? { owner: scope.owner } : {}) }).pipe(
    filter((event) => event.type === 'done'),
    map((event) =>
      operatorEvent<OperatorEvent>({
        type: 'stage',
        node: scope.node,
        branch: scope.branch,
        stage: 'kvShare',
        decided: { branches: prompts.length, prefixChars: prefix.length },
        figures: { tokensIn: event.type === 'done' ? event.usage.promptTokens : 0, tokensOut: 0, wallMs: performance.now() - t0 },
      }),
    ),
  );
}

export function commonPrefix(texts: string[]): string {
  let n = texts[0]!.length;
  for (const t of texts) {
    let i = 0;
    while (i < n && t.charCodeAt(i) === texts[0]!.charCodeAt(i)) i++;
    n = i;
  }
  return texts[0]!.slice(0, n);
}
