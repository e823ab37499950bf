import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/fixtures/temp-dir.js';
import { RunDatabase } from './run-db.js';
import { resumePlan } from './resume.js';

/** The tables of a data folder as the server before migration 1 wrote them, with one interrupted run in them. */
function oldDataDir(): string {
  const dir = tempDir('skein-rundb-');
  const db = new Database(join(dir, 'runs.db'));
  db.exec(`
    CREATE TABLE runs (id TEXT PRIMARY KEY, graph TEXT NOT NULL, model TEXT NOT NULL, seed INTEGER, input TEXT NOT NULL,
      definition TEXT, state TEXT NOT NULL, created_at INTEGER NOT NULL, ended_at INTEGER, error TEXT, usage TEXT,
      tokens_out INTEGER NOT NULL DEFAULT 0, ttft_ms REAL);
    CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
    CREATE TABLE node_outputs (run_id TEXT NOT NULL, node TEXT NOT NULL, output TEXT, PRIMARY KEY (run_id, node)) WITHOUT ROWID;
  `);
  db.prepare("INSERT INTO runs (id, graph, model, seed, input, definition, state, created_at) VALUES ('run_old', 'g', 'm', 7, '{\"q\":\"x\"}', '{\"name\":\"g\"}', 'running', 1)").run();
  const events = [
    { type: 'run-start', runId: 'run_old', seq: 0, t: 0, graph: 'g', seed: 7 },
    { type: 'node-end', runId: 'run_old', seq: 1, t: 1, node: 'a', output: 'first answer', metrics: {} },
  ];
  for (const e of events) db.prepare('INSERT INTO events (run_id, seq, body) VALUES (?, ?, ?)').run('run_old', e.seq, JSON.stringify(e));
  db.prepare("INSERT INTO node_outputs VALUES ('run_old', 'a', '\"first answer\"')").run();
  db.close();
  return dir;
}

const tables = (dir: string) => {
  const db = new Database(join(dir, 'runs.db'), { readonly: true });
  const names = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name);
  const version = db.pragma('user_version', { simple: true });
  db.close();
  return { names, version };
};

describe('RunDatabase migrations', () => {
  it('drops the redundant node_outputs table of an existing data folder and resumes from node-end events', () => {
    const dir = oldDataDir();
    const db = RunDatabase.open(dir);
    const { runs, interrupted } = db.recover(10);
    db.close();
    expect(interrupted).toEqual(['run_old']);
    expect(tables(dir)).toEqual({ names: ['events', 'runs'], version: 1 });
    const plan = resumePlan(runs[0]!);
    expect(plan).toMatchObject({ seed: 7, input: { q: 'x' } });
    expect({ ...plan.outputs }).toEqual({ a: 'first answer' });
  });

  it('creates a new data folder at the latest version and opens it again unchanged', () => {
    const dir = tempDir('skein-rundb-');
    RunDatabase.open(dir).close();
    expect(tables(dir)).toEqual({ names: ['events', 'runs'], version: 1 });
    RunDatabase.open(dir).close();
    expect(tables(dir)).toEqual({ names: ['events', 'runs'], version: 1 });
  });
});
