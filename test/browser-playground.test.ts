// The playground in a real headless Chromium (playwright-core, the system's
// /usr/bin/chromium): load the page, see validation, run the Skeleton-of-Thought example
// and watch its point panes fill side by side, cancel a run, reopen a past one; saves a
// screenshot to test-artifacts/playground.png. Skipped, saying why, without a browser.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../runtime/server/index.js';
import { loadExampleGraphs } from '../runtime/server/graphs.js';
import type { FakeEngine } from './fakes/fake-engine.js';
import { createServerTestEngine } from './fakes/server-engine.js';

const CHROMIUM = process.env.SKEIN_CHROMIUM ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) console.warn(`browser test skipped: no Chromium at ${CHROMIUM} (install it: apt-get install -y chromium)`);

const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');
const sot = loadExampleGraphs().find((g) => g.name === 'sot')!.graph as { nodes: unknown[]; edges: unknown[] };

describe.skipIf(!haveBrowser)('playground in headless Chromium', () => {
  let server: RunningServer;
  let engine: FakeEngine;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    engine = createServerTestEngine(60, ['compress']);
    server = await startServer({
      engine,
      port: 0,
      print: () => {},
      log: () => {},
    });
    profile = mkdtempSync(join(tmpdir(), 'skein-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1440, height: 1000 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });

  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it('loads with the SoT example selected and validated', async () => {
    await page.goto(server.url);
    await expect.poll(() => page.locator('#example').inputValue()).toBe('sot');
    await page.locator('#graph-status.is-ok').waitFor();
    expect(await page.locator('#graph-status').textContent()).toBe('Valid graph');
    expect(await page.locator('#model').textContent()).toBe('fake-mini');
    expect(await page.locator('svg.diagram g.node').count()).toBe(sot.nodes.length);
    // The input box starts from the graph's own input defaults.
    expect(JSON.parse(await page.locator('#input-json').inputValue())).toEqual({ question: 'How do I plan a small garden?' });
    expect(await page.locator('#model-note').isHidden()).toBe(true);
  });

  it('shows graph problems with their JSON pointers as you type', async () => {
    const bad = `/edges/${sot.edges.length}/to`;
    const graph = { ...sot, edges: [...sot.edges, { from: 'expand', to: 'missing' }] };
    await page.locator('#graph-json').fill(JSON.stringify(graph, null, 2));
    await page.locator('#problems li code', { hasText: bad }).waitFor();
    await page.locator('#problems li', { hasText: bad }).click();
    const selected = await page.locator('#graph-json').evaluate((ta: HTMLTextAreaElement) => ta.value.slice(ta.selectionStart, ta.selectionEnd));
    expect(selected).toBe('"missing"');
    expect(await page.locator('#gutter .bad').count()).toBeGreaterThan(0);
    expect(await page.locator('#run').isDisabled()).toBe(true);
    // The schema's node kinds are offered; adding one appends it and selects it.
    await page.locator('#example').selectOption('sot');
    await page.locator('#graph-status.is-ok').waitFor();
    await page.locator('#palette button[data-kind="fork"]').click();
    const added = await page.locator('#graph-json').evaluate((ta: HTMLTextAreaElement) => ta.value.slice(ta.selectionStart, ta.selectionEnd));
    expect(JSON.parse(added)).toEqual({ id: 'fork', kind: 'fork', branches: ['item1', 'item2'] });
    await page.locator('#graph-status.is-bad').waitFor();
    await page.locator('#graph-json').fill('{ "nodes": [ }');
    await page.locator('#graph-status', { hasText: 'JSON syntax error' }).waitFor();
    await page.locator('#example').selectOption('chat');
    await page.locator('#example').selectOption('sot');
    await page.locator('#graph-status.is-ok').waitFor();
  });

  it('runs the SoT example: the diagram lights up and each point streams into its own pane', async () => {
    // Panes must fill while the run is still going (streaming, not a final dump): watch
    // every DOM change in the page rather than sampling it from here.
    await page.evaluate(() => {
      const w = window as unknown as { sawStreaming?: boolean };
      w.sawStreaming = false;
      new MutationObserver(() => {
        const running = document.querySelector('#run-info .chip')?.textContent === 'running';
        const panes = Array.from(document.querySelectorAll('.stream-group[data-node="expand"] .pane-body'));
        if (running && panes.length === 3 && panes.every((p) => p.textContent)) w.sawStreaming = true;
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await page.locator('#run').click();
    await page.locator('svg.diagram g.node.is-running').first().waitFor();
    const points = page.locator('.stream-group[data-node="expand"] .pane');
    await expect.poll(() => points.count(), { timeout: 10_000 }).toBe(3);
    await page.locator('#run-info .chip.is-ok').waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (window as unknown as { sawStreaming?: boolean }).sawStreaming)).toBe(true);
    for (let i = 0; i < 3; i++) expect(await points.nth(i).locator('.pane-body').textContent()).toMatch(/builds skill \(point \d\)/);
    // The three points sit side by side: same row, increasing x.
    const boxes = await Promise.all([0, 1, 2].map((i) => points.nth(i).boundingBox()));
    expect(new Set(boxes.map((b) => Math.round(b!.y))).size).toBe(1);
    expect(boxes[0]!.x).toBeLessThan(boxes[1]!.x);
    expect(await page.locator('svg.diagram g.node[data-node="expand"]').getAttribute('class')).toMatch(/is-done/);
    expect(await page.locator('svg.diagram g.node[data-node="expand"] .dot.is-done').count()).toBe(3);
    expect(await page.locator('svg.diagram g.node[data-node="direct"]').getAttribute('class')).not.toMatch(/is-/);
    expect(await page.locator('svg.timeline .lane-label').count()).toBeGreaterThanOrEqual(4);
    expect(await page.locator('table.metrics tbody tr').count()).toBeGreaterThanOrEqual(4);
    expect(await page.locator('#output').isVisible()).toBe(true);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'playground.png'), fullPage: true });
  });

  it('cancels a running run and the engine stops', async () => {
    await page.locator('#example').selectOption('chat');
    await page.locator('#input-json').fill(JSON.stringify({ question: 'a long answer please' }));
    await page.locator('#graph-status.is-ok').waitFor();
    await page.locator('#run').click();
    await page.locator('.stream-group[data-node="answer"] .pane').waitFor();
    expect(await page.locator('#cancel').isEnabled()).toBe(true);
    await page.locator('#cancel').click();
    await page.locator('#run-info .chip.is-cancelled').waitFor();
    await expect.poll(() => engine.live).toBe(0);
    expect(engine.cancelled).toBeGreaterThanOrEqual(1);
    expect(await page.locator('#run').isEnabled()).toBe(true);
  });

  it('opens a past run from the list and replays it', async () => {
    await page.locator('.run-item:has(.chip.is-ok)').first().click();
    await page.locator('#run-info .chip.is-ok').waitFor();
    await expect.poll(() => page.locator('.stream-group[data-node="expand"] .pane').count()).toBe(3);
    await page.locator('#replay').click();
    await expect.poll(() => page.locator('.stream-group[data-node="expand"] .pane').count(), { timeout: 15_000 }).toBe(3);
    await expect.poll(() => page.locator('#replay').isEnabled(), { timeout: 15_000 }).toBe(true);
    expect(await page.locator('#run-info .chip').textContent()).toBe('ok');
    expect(pageErrors).toEqual([]);
  });

  it('shows a stage track under the node, live: what the stage decided and what it cost', async () => {
    await page.locator('#example').selectOption('compress-qa');
    await page.locator('#graph-status.is-ok').waitFor();
    await page.locator('#run').click();
    const chip = page.locator('.stream-group[data-node="answer"] .stage-chip[data-stage="compress"]');
    await chip.waitFor();
    // Shown while the answer is still streaming, not only at the end.
    await expect.poll(() => page.locator('#run-info .chip').textContent()).toBe('running');
    expect(await chip.locator('.stage-did').textContent()).toMatch(/^compress \d+→\d+ tok$/);
    expect(await chip.locator('.stage-decided').textContent()).toBe('rate=0.7');
    expect(await chip.locator('.stage-cost').textContent()).toBe('0 ms');
    await page.locator('#run-info .chip.is-ok').waitFor({ timeout: 15_000 });
    expect(await page.locator('.stream-group[data-node="answer"] .stage-chip').count()).toBe(1);
    expect(pageErrors).toEqual([]);
    expect(await page.locator('svg.timeline .stage-block.stage-compress').count()).toBe(1);
    expect(await page.locator('svg.timeline .stage-text').first().textContent()).toMatch(/^compress \d+→\d+ tok$/);
    await page.screenshot({ path: join(ARTIFACTS, 'playground-stages.png'), fullPage: true });
  });
});

describe.skipIf(!haveBrowser)('playground against a server with a token', () => {
  let server: RunningServer;
  let context: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    server = await startServer({ engine: createServerTestEngine(5), port: 0, token: 'pg-secret', print: () => {}, log: () => {} });
    profile = mkdtempSync(join(tmpdir(), 'skein-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it('asks for the token when it has none, and uses the one in the URL fragment', async () => {
    const page = await context.newPage();
    await page.goto(server.url);
    await page.locator('#token-form').waitFor();
    await page.locator('#token').fill('pg-secret');
    await page.locator('#token-form button').click();
    await expect.poll(() => page.locator('#example option').count()).toBeGreaterThan(1);
    const fresh = await context.newPage();
    await fresh.goto(`${server.url}#token=pg-secret`);
    await expect.poll(() => fresh.locator('#example option').count()).toBeGreaterThan(1);
    // The token leaves the address bar once read.
    expect(fresh.url()).not.toContain('pg-secret');
    expect(await fresh.locator('#token-form').isHidden()).toBe(true);
  });
});

