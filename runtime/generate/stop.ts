/**
 * Stop strings on streamed text. Text that could still become a stop string is held back,
 * so a stream never shows a stop string (or the start of one) that the final text then
 * loses; once one appears, the text before it is released and the rest is dropped.
 *
 * @example
 * const stop = new StopMatcher(['\n\n']);
 * stop.push('Hello\n'); // → { text: 'Hello', stopped: false }
 * stop.push('\nmore');  // → { text: '', stopped: true }
 */
export class StopMatcher {
  private held = '';
  private done = false;

  constructor(private readonly stops: readonly string[]) {}

  get stopped(): boolean {
    return this.done;
  }

  /** Adds decoded text; returns what may be shown now and whether a stop string was hit. */
  push(delta: string): { text: string; stopped: boolean } {
    if (this.done) return { text: '', stopped: true };
    const buf = this.held + delta;
    let cut = -1;
    for (const s of this.stops) {
      const at = buf.indexOf(s);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.done = true;
      this.held = '';
      return { text: buf.slice(0, cut), stopped: true };
    }
    // Hold back the longest tail that is a proper prefix of some stop string.
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** At the end of generation: the held-back text, which turned out not to be a stop. */
  flush(): string {
    const t = this.done ? '' : this.held;
    this.held = '';
    return t;
  }
}
