/**
 * Saving and replaying runs: a run's events as JSON lines (one RunEvent per line), and
 * back as an Observable — at once, or on the original timeline (`t`), optionally faster.
 *
 * @example
 * const events = await firstValueFrom(run$.pipe(toArray()));
 * const text = saveEvents(events);
 * replayEvents(text, { timing: 'realtime', speed: 4 }).subscribe(render);
 */
import { Observable, asyncScheduler, type SchedulerLike } from 'rxjs';
import { BadRequestError } from './errors.js';
import { runEventTypes, type RunEvent } from './events.js';

const eventTypes = new Set<string>(runEventTypes);

export function saveEvents(events: Iterable<RunEvent>): string {
  let out = '';
  for (const e of events) out += `${JSON.stringify(e)}\n`;
  return out;
}

/** Parses JSON lines of RunEvents; a bad line is a BadRequestError naming its line number. */
export function parseEvents(text: string): RunEvent[] {
  const events: RunEvent[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let e: unknown;
    try {
      e = JSON.parse(line);
    } catch (err) {
      throw new BadRequestError(`events line ${i + 1}`, (err as Error).message);
    }
    const type = (e as { type?: unknown } | null)?.type;
    if (typeof type !== 'string' || !eventTypes.has(type)) throw new BadRequestError(`events line ${i + 1}`, `not a run event (type ${JSON.stringify(type)})`);
    events.push(e as RunEvent);
  });
  return events;
}

export interface ReplayOptions {
  /** 'instant' (default) emits everything at once; 'realtime' keeps the recorded gaps. */
  timing?: 'instant' | 'realtime';
  /** Realtime only: playback speed factor (default 1). */
  speed?: number;
  scheduler?: SchedulerLike;
}

export function replayEvents(source: string | RunEvent[], options: ReplayOptions = {}): Observable<RunEvent> {
  return new Observable<RunEvent>((subscriber) => {
    const events = typeof source === 'string' ? parseEvents(source) : source;
    if (options.timing !== 'realtime') {
      for (const e of events) subscriber.next(e);
      subscriber.complete();
      return undefined;
    }
    const scheduler = options.scheduler ?? asyncScheduler;
    const speed = options.speed ?? 1;
    const t0 = events[0]?.t ?? 0;
    let i = 0;
    const step = () => {
      const e = events[i];
      if (!e) return subscriber.complete();
      const due = (e.t - t0) / speed;
      const prev = i === 0 ? 0 : (events[i - 1]!.t - t0) / speed;
      return scheduler.schedule(() => {
        subscriber.next(e);
        i++;
        subscriber.add(step());
      }, Math.max(0, due - prev));
    };
    return step();
  });
}
