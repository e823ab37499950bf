/**
 * The graph editor: a JSON textarea with a line gutter, validated as you type — syntax
 * first (in the page), then the schema and graph checks through POST /v1/graphs/validate.
 * Problems are listed with their JSON pointers, marked in the gutter, and clicking one
 * selects the offending value in the text.
 *
 * @example
 * const editor = new GraphEditor({ textarea, gutter, problems, status, api, onGraph: draw });
 * editor.setText(JSON.stringify(graph, null, 2));
 */
import type { GraphProblem } from '../../core/errors.js';
import type { Api } from './api.js';
import { clear, h } from './dom.js';
import { lineCol, locatePointer, syntaxErrorOffset, type Span } from './json-location.js';

export interface EditorParts {
  textarea: HTMLTextAreaElement;
  gutter: HTMLElement;
  problems: HTMLElement;
  status: HTMLElement;
  api: Api;
  /** Called with the parsed JSON whenever the text parses (valid or not), else null. */
  onGraph: (json: unknown | null) => void;
  /** Called after each validation with whether the graph is runnable. */
  onValidity?: (valid: boolean) => void;
}

interface Located extends GraphProblem {
  span?: Span;
}

export class GraphEditor {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private inflight: AbortController | undefined;
  private lines = 0;
  valid = false;

  constructor(private readonly p: EditorParts) {
    p.textarea.addEventListener('input', () => this.changed());
    p.textarea.addEventListener('scroll', () => (p.gutter.scrollTop = p.textarea.scrollTop));
    p.textarea.addEventListener('keydown', (e) => {
      if (e.key !== 'Tab') return;
      e.preventDefault();
      const { selectionStart: s, selectionEnd: end, value } = p.textarea;
      p.textarea.value = `${value.slice(0, s)}  ${value.slice(end)}`;
      p.textarea.selectionStart = p.textarea.selectionEnd = s + 2;
      this.changed();
    });
  }

  get text(): string {
    return this.p.textarea.value;
  }

  setText(text: string): void {
    this.p.textarea.value = text;
    this.p.textarea.scrollTop = 0;
    this.changed(0);
  }

  private changed(delay = 250): void {
    this.renderGutter([]);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.validate(), delay);
  }

  private renderGutter(marked: number[]): void {
    const count = this.text.split('\n').length;
    if (count !== this.lines || marked.length) {
      this.lines = count;
      clear(this.p.gutter);
      const bad = new Set(marked);
      for (let i = 1; i <= count; i++) this.p.gutter.append(h('div', bad.has(i) ? { class: 'bad' } : null, String(i)));
    } else this.p.gutter.querySelectorAll('.bad').forEach((el) => el.classList.remove('bad'));
    this.p.gutter.scrollTop = this.p.textarea.scrollTop;
  }

  private async validate(): Promise<void> {
    const text = this.text;
    this.inflight?.abort();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      const offset = syntaxErrorOffset(text) ?? text.length;
      const where = lineCol(text, offset);
      this.show(false, [{ pointer: `line ${where.line}:${where.col}`, message: (err as Error).message, span: { start: offset, end: Math.min(offset + 1, text.length) } }], 'JSON syntax error');
      this.p.onGraph(null);
      return;
    }
    this.p.onGraph(json);
    const controller = new AbortController();
    this.inflight = controller;
    this.p.status.className = 'status is-pending';
    this.p.status.textContent = 'Checking…';
    try {
      const result = await this.p.api.validate(json, controller.signal);
      if (controller.signal.aborted) return;
      const located = result.problems.map((pr) => ({ ...pr, span: locatePointer(text, pr.pointer) }));
      this.show(result.valid, located, result.valid ? 'Valid graph' : `${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}`);
    } catch (err) {
      if (controller.signal.aborted) return;
      this.show(false, [], `Could not validate: ${(err as Error).message}`);
    }
  }

  private show(valid: boolean, problems: Located[], label: string): void {
    this.valid = valid;
    this.p.onValidity?.(valid);
    this.p.status.className = `status ${valid ? 'is-ok' : 'is-bad'}`;
    this.p.status.textContent = label;
    clear(this.p.problems);
    const lines: number[] = [];
    for (const pr of problems) {
      if (pr.span) lines.push(lineCol(this.text, pr.span.start).line);
      const item = h(
        'li',
        { class: pr.span ? 'clickable' : '', title: pr.span ? 'Show in the editor' : '' },
        h('code', { class: 'pointer' }, pr.pointer || '/'),
        h('span', null, pr.message),
      );
      if (pr.span) {
        const span = pr.span;
        item.addEventListener('click', () => this.select(span));
      }
      this.p.problems.append(item);
    }
    this.renderGutter(lines);
  }

  /** Replaces the text with `json`, pretty-printed, and selects the value at `pointer`. */
  replaceJson(json: unknown, pointer: string): void {
    this.p.textarea.value = JSON.stringify(json, null, 2);
    this.changed(0);
    const span = locatePointer(this.text, pointer);
    if (span) this.select(span);
  }

  private select(span: Span): void {
    const ta = this.p.textarea;
    ta.focus();
    ta.setSelectionRange(span.start, span.end);
    const line = lineCol(this.text, span.start).line;
    const lineHeight = parseFloat(getComputedStyle(ta).lineHeight) || 18;
    ta.scrollTop = Math.max(0, (line - 4) * lineHeight);
  }
}
