/**
 * A deterministic Engine double for dataflow tests. Replies are scripted per prompt
 * pattern (first match wins; the default echoes the last user text) and streamed word by
 * word, one token per word, each after `delayMs` on the given scheduler (so marble tests
 * can drive it with TestScheduler). It honours maxTokens, stop strings and unsubscribe,
 * counts live generations so leak and cancel tests can assert zero, and records requests.
 *
 * @example
 * const engine = createFakeEngine({ delayMs: 1, script: [{ match: /skeleton/i, reply: '1. a\n2. b' }] });
 */
import { Observable, asyncScheduler, type SchedulerLike } from 'rxjs';
import type { ChatMessage, Engine, EngineStats, GenerateEvent, GenerateRequest } from '../../core/engine.js';
import { StageUnavailableError } from '../../core/errors.js';
import type { StageName } from '../../core/stages.js';

export interface FakeRule {
  /** Tested against the rendered prompt (chat template applied, assistant prefix included). */
  match: RegExp | string | ((prompt: string, request: GenerateRequest) => boolean);
  /** The reply text (continuing after the prompt), or an error to fail with after `failAfter` tokens. */
  reply?: string | ((prompt: string, request: GenerateRequest) => string);
  error?: Error;
  failAfter?: number;
  /** Overrides the engine's delay for this reply. */
  delayMs?: number;
}

export interface FakeEngineOptions {
  script?: FakeRule[];
  delayMs?: number;
  scheduler?: SchedulerLike;
  modelName?: string;
  /** Stages its pretend model runs; any other fails the request with StageUnavailableError. */
  supportedStages?: StageName[];
}

export interface FakeEngine extends Engine {
  /** Generations subscribed and neither finished nor unsubscribed. */
  readonly live: number;
  readonly started: number;
  readonly finished: number;
  readonly cancelled: number;
  /** The highest number of generations live at once. */
  readonly peakLive: number;
  readonly requests: GenerateRequest[];
  /** The rendered prompt of every request, in order. */
  readonly prompts: string[];
}

/** Stable small ids for words, so token ids are reproducible. */
function wordId(word: string): number {
  let h = 7;
  for (const ch of word) h = (h * 31 + ch.codePointAt(0)!) % 30000;
  return h + 2;
}

/** Splits text into tokens that keep their leading whitespace: "a b" → ["a", " b"]. */
export function fakeTokens(text: string): string[] {
  return text.match(/\s*\S+|\s+$/g) ?? [];
}

export function renderFakeChat(messages: ChatMessage[], assistantPrefix?: string): string {
  return messages.map((m) => `<|${m.role}|>\n${m.content}\n`).join('') + `<|assistant|>\n${assistantPrefix ?? ''}`;
}

export function createFakeEngine(options: FakeEngineOptions = {}): FakeEngine {
  const scheduler = options.scheduler ?? asyncScheduler;
  const script = options.script ?? [];
  const stats = { live: 0, started: 0, finished: 0, cancelled: 0, peakLive: 0 };
  const requests: GenerateRequest[] = [];
  const prompts: string[] = [];

  const promptOf = (r: GenerateRequest) =>
    r.prompt ?? (r.messages ? renderFakeChat(r.messages, r.assistantPrefix) : (r.ids ?? []).join(' '));

  const lastUser = (r: GenerateRequest) => [...(r.messages ?? [])].reverse().find((m) => m.role === 'user')?.content ?? r.prompt ?? '';

  const pick = (prompt: string, r: GenerateRequest): FakeRule | undefined =>
    script.find((rule) =>
      typeof rule.match === 'string' ? prompt.includes(rule.match) : rule.match instanceof RegExp ? rule.match.test(prompt) : rule.match(prompt, r),
    );

  const engine: FakeEngine = {
    modelName: options.modelName ?? 'fake',
    checkStage: (name) =>
      options.supportedStages?.includes(name)
        ? undefined
        : new StageUnavailableError(name, options.modelName ?? 'fake', 'the fake engine does not run it', 'list it in supportedStages'),
    get live() {
      return stats.live;
    },
    get started() {
      return stats.started;
    },
    get finished() {
      return stats.finished;
    },
    get cancelled() {
      return stats.cancelled;
    },
    get peakLive() {
      return stats.peakLive;
    },
    requests,
    prompts,
    generate(request: GenerateRequest): Observable<GenerateEvent> {
      return new Observable<GenerateEvent>((subscriber) => {
        // Refused before it counts as started, as the real engine refuses at submit.
        for (const [name, value] of Object.entries(request.stages ?? {})) {
          const refused = value === undefined ? undefined : engine.checkStage(name as StageName);
          if (refused) return subscriber.error(refused);
        }
        const prompt = promptOf(request);
        requests.push(request);
        prompts.push(prompt);
        stats.started++;
        stats.live++;
        stats.peakLive = Math.max(stats.peakLive, stats.live);
        // A supported stage reports as the real engine's do, before the first token: compress
        // keeps its rate of the prompt's (fake) tokens, others pass everything on.
        for (const [name, value] of Object.entries(request.stages ?? {})) {
          if (value === undefined) continue;
          const tokensIn = fakeTokens(prompt).length;
          const rate = (value as { rate?: number }).rate ?? 1;
          subscriber.next({ type: 'stage', stage: name as StageName, decided: { rate }, figures: { tokensIn, tokensOut: Math.round(tokensIn * rate), wallMs: 0 } });
        }
        let done = false;
        const rule = pick(prompt, request);
        const replyText =
          typeof rule?.reply === 'function' ? rule.reply(prompt, request) : (rule?.reply ?? `echo: ${lastUser(request)}`);
        const maxTokens = request.sampling?.maxTokens ?? 128;
        const stops = request.sampling?.stop ?? [];
        const tokens = fakeTokens(replyText);
        const delay = rule?.delayMs ?? options.delayMs ?? 0;
        const ids: number[] = [];
        let text = '';
        let i = 0;
        const t0 = scheduler.now();
        const finish = (reason: 'eos' | 'stop' | 'length') => {
          done = true;
          stats.live--;
          stats.finished++;
          const totalMs = scheduler.now() - t0;
          subscriber.next({
            type: 'done',
            reason,
            ids,
            text,
            usage: { promptTokens: fakeTokens(prompt).length, completionTokens: ids.length, cachedPromptTokens: 0 },
            metrics: { ttftMs: delay, totalMs, decodeTokensPerSec: totalMs > 0 ? (ids.length * 1000) / totalMs : 0 },
          });
          subscriber.complete();
        };
        const step = (): void => {
          if (rule?.error && i >= (rule.failAfter ?? 0)) {
            done = true;
            stats.live--;
            stats.finished++;
            return subscriber.error(rule.error);
          }
          if (i >= tokens.length) return finish('eos');
          if (ids.length >= maxTokens) return finish('length');
          const tok = tokens[i++]!;
          const id = wordId(tok.trim());
          ids.push(id);
          text += tok;
          subscriber.next({ type: 'token', id, text: tok });
          if (stops.some((s) => text.includes(s))) return finish('stop');
          schedule();
        };
        const schedule = () => subscriber.add(scheduler.schedule(step, delay));
        schedule();
        return () => {
          if (!done) {
            done = true;
            stats.live--;
            stats.cancelled++;
          }
        };
      });
    },
    tokenize: (text) => fakeTokens(text).map((t) => wordId(t.trim())),
    detokenize: (ids) => ids.map(String).join(' '),
    renderChat: renderFakeChat,
    stats: (): EngineStats => ({
      backend: 'fake',
      model: options.modelName ?? 'fake',
      kvBlocksTotal: 1024,
      // One pretend block per live generation: a leak shows up as blocks in use.
      kvBlocksUsed: stats.live,
      kvBlocksShared: 0,
      kvBlocksCached: 0,
      kvTensors: 0,
      queueDepth: 0,
      runningSequences: stats.live,
    }),
    close: async () => undefined,
  };
  return engine;
}

/** The SoT script most tests want: router answers A, skeletons are numbered, points expand. */
export function sotScript(points = ['Gather basic tools', 'Learn simple recipes', 'Practice every week']): FakeRule[] {
  return [
    { match: /Answer with one letter: A, B or C/, reply: 'A' },
    { match: /organizer responsible for only giving the skeleton/, reply: ` ${points[0]}\n${points.slice(1).map((p, i) => `${i + 2}. ${p}`).join('\n')}` },
    { match: /Continue and only continue the writing of point (\d+)/, reply: (prompt) => ` matters because it builds skill (point ${/point (\d+)\./.exec(prompt)?.[1]}).` },
  ];
}
