/**
 * Durable runs: every run record and its events (node-end events carry each node's
 * completed output, which is what a resume reuses: resume.ts), in one SQLite file (better-sqlite3, WAL mode) under the server's data folder, so that a restart
 * or a crash loses nothing that was already written. Events are appended as they come,
 * batched into one transaction per turn of the event loop (one fsync-free commit in WAL
 * mode instead of one per token); a run's end is written at once.
 *
 * At start, `recover()` reads the newest runs back, and any run that was still running
 * when the process stopped is marked interrupted: its stream gets the run-end it never
 * had, so a client replaying it sees how it ended.
 *
 * @example
 * const db = RunDatabase.open('.skein');
 * const { runs, interrupted } = db.recover(100);
 * db.close();
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { RunEvent } from '../../core/events.js';
import type { RunPersistence, RunRecord, RunState } from './runs.js';

/** The error a run that was in flight when the server stopped ends with. */
export const INTERRUPTED_ERROR = {
  name: 'InterruptedError',
  code: 'interrupted',
  message: 'the server stopped while this run was in flight',
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  graph TEXT NOT NULL,
  model TEXT NOT NULL,
  seed INTEGER,
  input TEXT NOT NULL,
  definition TEXT,
  state TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  ended_at INTEGER,
  error TEXT,
  usage TEXT,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  ttft_ms REAL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS events (
  run_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
`;

/**
 * Schema changes, in order; `PRAGMA user_version` counts those a data folder has had, so
 * a folder written by an older server is brought up to date when it is opened.
 * 1: drop `node_outputs`. It repeated the outputs the node-end events already store, and
 *    resume reads those (one source, no chance of the two disagreeing).
 */
const MIGRATIONS: string[] = ['DROP TABLE IF EXISTS node_outputs;'];

interface RunRow {
  id: string;
  graph: string;
  model: string;
  seed: number | null;
  input: string;
  definition: string | null;
  state: string;
  created_at: number;
  ended_at: number | null;
  error: string | null;
  usage: string | null;
  tokens_out: number;
  ttft_ms: number | null;
}

export class RunDatabase implements RunPersistence {
  private pending: Array<[string, RunEvent]> = [];
  private flushScheduled = false;
  private closed = false;
  private readonly insertRun: Database.Statement;
  private readonly insertEvent: Database.Statement;
  private readonly updateEnd: Database.Statement;
  private readonly markEnd: Database.Statement;
  private readonly writeBatch: (batch: Array<[string, RunEvent]>) => void;

  private constructor(private readonly db: Database.Database) {
    db.pragma('journal_mode = WAL');
    // WAL with NORMAL sync survives a process crash; only a power loss may lose the last commits.
    db.pragma('synchronous = NORMAL');
    db.exec(SCHEMA);
    migrate(db);
    this.insertRun = db.prepare(
      'INSERT OR REPLACE INTO runs (id, graph, model, seed, input, definition, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.insertEvent = db.prepare('INSERT OR REPLACE INTO events (run_id, seq, body) VALUES (?, ?, ?)');
    this.updateEnd = db.prepare('UPDATE runs SET state = ?, ended_at = ?, error = ?, usage = ?, tokens_out = ?, ttft_ms = ?, seed = ? WHERE id = ?');
    this.markEnd = db.prepare("UPDATE runs SET state = 'interrupted', ended_at = ?, error = ? WHERE id = ?");
    this.writeBatch = db.transaction((batch: Array<[string, RunEvent]>) => {
      for (const [runId, event] of batch) this.insertEvent.run(runId, event.seq, JSON.stringify(event));
    });
  }

  /** Opens (creating when needed) `dir/runs.db`. */
  static open(dir: string): RunDatabase {
    mkdirSync(dir, { recursive: true });
    return new RunDatabase(new Database(join(dir, 'runs.db')));
  }

  started(record: RunRecord): void {
    this.insertRun.run(
      record.id,
      record.graph,
      record.model,
      record.seed ?? null,
      JSON.stringify(record.input),
      record.definition === undefined ? null : JSON.stringify(record.definition),
      record.state,
      record.createdAt,
    );
  }

  event(runId: string, event: RunEvent): void {
    this.pending.push([runId, event]);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes the run's end (and every event still waiting) now. */
  ended(record: RunRecord): void {
    this.flush();
    this.updateEnd.run(
      record.state,
      record.endedAt ?? Date.now(),
      record.error ? JSON.stringify(record.error) : null,
      record.usage ? JSON.stringify(record.usage) : null,
      record.tokensOut,
      record.ttftMs ?? null,
      record.seed ?? null,
      record.id,
    );
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.closed || !this.pending.length) return;
    const batch = this.pending;
    this.pending = [];
    this.writeBatch(batch);
  }

  /**
   * The newest `limit` runs with their events, oldest first. Runs left running by a
   * process that stopped are marked interrupted first, with a run-end event appended.
   */
  recover(limit: number): { runs: RunRecord[]; interrupted: string[] } {
    const interrupted = this.markInterrupted();
    const rows = this.db.prepare('SELECT * FROM runs ORDER BY created_at DESC LIMIT ?').all(limit) as RunRow[];
    const runs = rows.reverse().map((row) => this.toRecord(row));
    return { runs, interrupted };
  }

  /** One run with its events, as stored (a run still marked running is left as it is). */
  load(id: string): RunRecord | undefined {
    const row = this.db.prepare('SELECT * FROM runs WHERE id = ?').get(id) as RunRow | undefined;
    return row ? this.toRecord(row) : undefined;
  }

  private toRecord(row: RunRow): RunRecord {
    const events = this.db.prepare('SELECT body FROM events WHERE run_id = ? ORDER BY seq').all(row.id) as Array<{ body: string }>;
    const record: RunRecord = {
      id: row.id,
      graph: row.graph,
      model: row.model,
      input: JSON.parse(row.input) as Record<string, unknown>,
      state: row.state as RunState,
      createdAt: row.created_at,
      events: events.map((e) => JSON.parse(e.body) as RunEvent),
      tokensOut: row.tokens_out,
    };
    if (row.seed !== null) record.seed = row.seed;
    if (row.definition !== null) record.definition = JSON.parse(row.definition);
    if (row.ended_at !== null) record.endedAt = row.ended_at;
    if (row.error !== null) record.error = JSON.parse(row.error);
    if (row.usage !== null) record.usage = JSON.parse(row.usage);
    if (row.ttft_ms !== null) record.ttftMs = row.ttft_ms;
    return record;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.db.close();
  }

  private markInterrupted(): string[] {
    const running = this.db.prepare("SELECT id, created_at FROM runs WHERE state = 'running'").all() as Array<{ id: string; created_at: number }>;
    const lastSeq = this.db.prepare('SELECT MAX(seq) AS seq FROM events WHERE run_id = ?');
    const now = Date.now();
    this.db.transaction(() => {
      for (const { id, created_at } of running) {
        const seq = ((lastSeq.get(id) as { seq: number | null }).seq ?? -1) + 1;
        const end: RunEvent = { type: 'run-end', runId: id, seq, t: now - created_at, status: 'error', error: INTERRUPTED_ERROR, usage: {} };
        this.insertEvent.run(id, seq, JSON.stringify(end));
        this.markEnd.run(now, JSON.stringify(INTERRUPTED_ERROR), id);
      }
    })();
    return running.map((r) => r.id);
  }
}

/** Applies the migrations a database has not had yet, each with its version bump in one transaction. */
function migrate(db: Database.Database): void {
  const done = db.pragma('user_version', { simple: true }) as number;
  for (let v = done; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
