/**
 * `compressPrompt`: one model call per input, with LLMLingua-style prompt compression
 * applied by the runtime before prefill: `compress(...)` then `generate(...)` (see
 * operators/stages.ts and runtime/stages/compress.ts). A thin `generate`: the prompt goes to the engine whole and
 * the engine drops the low-information words, so the text never round-trips through
 * JavaScript. The engine protects the prompt's last line (the usual place of the
 * question); give `question` to keep it word for word wherever it sits, and `keep` for
 * any other phrase that must survive (names, numbers, format instructions).
 *
 * @example
 * of({ prompt: longReport, question: 'Which city is named?' })
 *   .pipe(compressPrompt(engine, { rate: 0.5, sampling: { maxTokens: 16 } }))
 *   .subscribe(console.log);
 */
import { of, throwError, type OperatorFunction } from 'rxjs';
import type { Engine } from '../core/engine.js';
import { BadRequestError } from '../core/errors.js';
import type { OperatorEvent } from '../core/events.js';
import { generate, type GenerateOptions } from './generate.js';
import { perValue, type Flow } from './internal/operate.js';
import { compress } from './stages.js';

export interface CompressPromptOptions extends Omit<GenerateOptions, 'engine'> {
  /** Fraction of the prompt's tokens to keep, in (0, 1]. */
  rate: number;
  /** Phrases never dropped. */
  keep?: string[];
}

/** A prompt, or a context with its question (appended after a blank line and always kept). */
export type CompressPromptInput = string | { prompt: string; system?: string; question?: string };

export function compressPrompt(engine: Engine, options: CompressPromptOptions): OperatorFunction<Flow<CompressPromptInput>, OperatorEvent> {
  const { rate, keep, ...rest } = options;
  return perValue((input: CompressPromptInput) => {
    if (!(Number.isFinite(rate) && rate > 0 && rate <= 1)) return throwError(() => new BadRequestError('compress.rate', `must be in (0, 1], got ${rate}`));
    const question = typeof input === 'string' ? undefined : input.question;
    const prompt = typeof input === 'string' ? input : question ? `${input.prompt}\n\n${question}` : input.prompt;
    const system = typeof input === 'string' ? undefined : input.system;
    const phrases = [...(keep ?? []), ...(question ? [question] : [])];
    return of(system ? { prompt, system } : prompt).pipe(compress({ rate, ...(phrases.length ? { keep: phrases } : {}) }), generate({ ...rest, engine }));
  }, options.context?.branch);
}
