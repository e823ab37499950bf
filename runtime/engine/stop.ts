/**
 * Streaming text with stop strings: text is released as it comes, except a tail that
 * could still grow into a stop string, which is held until it either completes one (the
 * generation ends, the stop string and anything after it dropped) or cannot any more.
 *
 * @example
 * const s = new StopText(['\n\n']);
 * s.push('a\n');          // { text: 'a', stopped: false }  ('\n' held)
 * s.push('\nb');          // { text: '',  stopped: true }
 */
export class StopText {
  /** Text released so far. */
  text = '';
  private held = '';
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Adds newly decoded text; `final` releases whatever is held when no stop string matched. */
  push(delta: string, final = false): { text: string; stopped: boolean } {
    const pending = this.held + delta;
    this.held = '';
    if (this.stops.length === 0) return this.release(pending, false);
    // A stop string may start inside text released earlier only if it was held; search
    // from the start of the pending text, which begins with everything held.
    let cut = -1;
    for (const stop of this.stops) {
      const at = pending.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) return this.release(pending.slice(0, cut), true);
    if (final) return this.release(pending, false);
    const keep = this.heldTail(pending);
    this.held = pending.slice(pending.length - keep);
    return this.release(pending.slice(0, pending.length - keep), false);
  }

  private release(text: string, stopped: boolean): { text: string; stopped: boolean } {
    this.text += text;
    return { text, stopped };
  }

  /** Length of the longest suffix of `s` that is a proper prefix of some stop string. */
  private heldTail(s: string): number {
    for (let n = Math.min(this.longest - 1, s.length); n > 0; n--) {
      const tail = s.slice(s.length - n);
      if (this.stops.some((stop) => stop.startsWith(tail))) return n;
    }
    return 0;
  }
}
