/**
 * A terminal view of a run's progress: one line per node and branch with its state,
 * tokens so far and time, kept up to date from RunEvents. The CLI redraws it in place on
 * a terminal and prints only state changes otherwise; it holds no terminal code itself.
 *
 * @example
 * const view = new ProgressView();
 * run$.subscribe((e) => { view.apply(e); draw(view.lines()); });
 */
import type { RunEvent, StageFigures } from './events.js';

interface Row {
  key: string;
  node: string;
  branch?: string;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  tokens: number;
  started: number;
  ended?: number;
  note?: string;
  /** The last stage's figures, e.g. "compress 412→137 tok, 84 ms". */
  stage?: string;
}

function stageSummary(f: StageFigures): string {
  const tokens = f.tokensIn !== undefined && f.tokensOut !== undefined ? `${f.tokensIn}→${f.tokensOut} tok, ` : '';
  const shared = f.kvBlocksShared !== undefined ? `${f.kvBlocksShared} blocks shared, ` : '';
  return `${tokens}${shared}${Math.round(f.wallMs)} ms`;
}

const oneLine = (s: string, n = 48) => {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > n ? `${flat.slice(0, n - 1)}…` : flat;
};

export class ProgressView {
  private readonly rows = new Map<string, Row>();

  /** Applies one event; returns the row it changed state of, for line-by-line output. */
  apply(e: RunEvent): string | undefined {
    const key = (node: string, branch?: string) => (branch ? `${node} [${branch}]` : node);
    switch (e.type) {
      case 'node-start': {
        const row: Row = { key: key(e.node, e.branch), node: e.node, branch: e.branch, state: 'running', tokens: 0, started: e.t };
        this.rows.set(row.key, row);
        return this.format(row);
      }
      case 'text-delta': {
        const row = this.rows.get(key(e.node, e.branch)) ?? this.rows.get(e.node);
        if (row) row.tokens += e.tokenIds.length;
        return undefined;
      }
      case 'node-end': {
        const row = this.rows.get(key(e.node, e.branch));
        if (!row) return undefined;
        row.state = 'done';
        row.ended = e.t;
        if (typeof e.output === 'string') row.note = oneLine(e.output);
        return this.format(row);
      }
      case 'branch-error': {
        const row = this.rows.get(key(e.node, e.branch)) ?? { key: key(e.node, e.branch), node: e.node, branch: e.branch, state: 'failed', tokens: 0, started: e.t };
        row.state = 'failed';
        row.ended = e.t;
        row.note = e.error.message;
        this.rows.set(row.key, row);
        return this.format(row);
      }
      case 'run-end': {
        if (e.status === 'cancelled') {
          // Rows still running were stopped on request: cancelled, not failed.
          const stopped = [...this.rows.values()].filter((r) => r.state === 'running');
          for (const r of stopped) Object.assign(r, { state: 'cancelled', ended: e.t });
          return stopped.length ? stopped.map((r) => this.format(r)).join('\n') : undefined;
        }
        const node = e.status === 'error' ? e.error?.node : undefined;
        if (!node) return undefined;
        // A fatal failure sends no node-end: the failing node's last running row (a loop
        // turn's, say) is the one that failed; a node that never showed a row gets one.
        const rows = [...this.rows.values()].filter((r) => r.node === node);
        const row = rows.reverse().find((r) => r.state === 'running') ?? { key: node, node, state: 'failed', tokens: 0, started: e.t };
        row.state = 'failed';
        row.ended = e.t;
        row.note = e.error!.message;
        this.rows.set(row.key, row);
        return this.format(row);
      }
      case 'stage': {
        // A stage's figures go on its node's row, beside the output.
        const row = this.rows.get(key(e.node, e.branch)) ?? this.rows.get(e.node);
        if (row) row.stage = `${e.stage} ${stageSummary(e.figures)}`;
        return undefined;
      }
      case 'run-start':
        return undefined;
      default: {
        const never: never = e;
        return never;
      }
    }
  }

  lines(now?: number): string[] {
    return [...this.rows.values()].map((r) => this.format(r, now));
  }

  private format(r: Row, now?: number): string {
    const mark = r.state === 'running' ? '…' : r.state === 'done' ? '✓' : r.state === 'cancelled' ? '⊘' : '✗';
    const ms = (r.ended ?? now ?? r.started) - r.started;
    const tokens = r.tokens ? ` ${r.tokens} tok` : '';
    const note = r.note ?? (r.state === 'cancelled' ? 'cancelled' : undefined);
    return `${mark} ${r.key.padEnd(28)} ${String(ms).padStart(6)} ms${tokens}${r.stage ? `  [${r.stage}]` : ''}${note ? `  ${note}` : ''}`;
  }
}
