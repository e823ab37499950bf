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
import { fakeChatGraph, fakeDataflow, fakeSotGraph } from './fakes/server-fake-dataflow.js';
import { createServerFakeEngine, type ServerFakeEngine } from './fakes/server-fake-engine.js';

const CHROMIUM = process.env.SKEIN_CHROMIUM ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) console.warn(`browser test skipped: no Chromium at ${CHROMIUM} (install it: apt-get install -y chromium)`);

const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');

describe.skipIf(!haveBrowser)('playground in headless Chromium', () => {
  let server: RunningServer;
  let engine: ServerFakeEngine;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    engine = createServerFakeEngine({ delayMs: 30 });
    server = await startServer({
      engine,
      dataflow: fakeDataflow,
      graphs: [
        { name: 'chat', file: 'graphs/chat.json', graph: fakeChatGraph },
        { name: 'sot', file: 'graphs/sot.json', description: fakeSotGraph.description, graph: fakeSotGraph },
      ],
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
    expect(await page.locator('svg.diagram g.node').count()).toBe(4);
    expect(JSON.parse(await page.locator('#input-json').inputValue())).toEqual({ question: 'How do I learn to cook?' });
  });

  it('shows graph problems with their JSON pointers as you type', async () => {
    const graph = { ...fakeSotGraph, edges: [...fakeSotGraph.edges, { from: 'expand', to: 'missing' }] };
    await page.locator('#graph-json').fill(JSON.stringify(graph, null, 2));
    await page.locator('#problems li code', { hasText: '/edges/3/to' }).waitFor();
    await page.locator('#problems li', { hasText: '/edges/3/to' }).click();
    expect(await page.locator('#gutter .bad').count()).toBeGreaterThan(0);
    expect(await page.locator('#run').isDisabled()).toBe(true);
    await page.locator('#graph-json').fill('{ "nodes": [ }');
    await page.locator('#graph-status', { hasText: 'JSON syntax error' }).waitFor();
    await page.locator('#example').selectOption('chat');
    await page.locator('#example').selectOption('sot');
    await page.locator('#graph-status.is-ok').waitFor();
  });

  it('runs the SoT example: the diagram lights up and each point streams into its own pane', async () => {
    await page.locator('#run').click();
    await page.locator('svg.diagram g.node.is-running').first().waitFor();
    for (const p of ['p1', 'p2', 'p3']) {
      await expect.poll(() => page.locator(`.pane[data-lane="expand/${p}"] .pane-body`).textContent(), { timeout: 10_000 }).toMatch(/\w+ \w+/);
    }
    await page.locator('#run-info .chip.is-ok').waitFor({ timeout: 15_000 });
    // The three points sit side by side: same row, increasing x.
    const boxes = await Promise.all(['p1', 'p2', 'p3'].map((p) => page.locator(`.pane[data-lane="expand/${p}"]`).boundingBox()));
    expect(new Set(boxes.map((b) => Math.round(b!.y))).size).toBe(1);
    expect(boxes[0]!.x).toBeLessThan(boxes[1]!.x);
    expect(await page.locator('svg.diagram g.node[data-node="expand"]').getAttribute('class')).toMatch(/is-done/);
    expect(await page.locator('svg.diagram g.node[data-node="expand"] .dot.is-done').count()).toBe(3);
    expect(await page.locator('svg.timeline .lane-label').count()).toBeGreaterThanOrEqual(4);
    expect(await page.locator('table.metrics tbody tr').count()).toBeGreaterThanOrEqual(4);
    expect(await page.locator('#output').isVisible()).toBe(true);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'playground.png'), fullPage: true });
  });

  it('cancels a running run and the engine stops', async () => {
    await page.locator('#run').click();
    await page.locator('.pane[data-lane="skeleton"]').waitFor();
    expect(await page.locator('#cancel').isEnabled()).toBe(true);
    await page.locator('#cancel').click();
    await page.locator('#run-info .chip.is-cancelled').waitFor();
    await expect.poll(() => engine.active).toBe(0);
    expect(await page.locator('#run').isEnabled()).toBe(true);
  });

  it('opens a past run from the list and replays it', async () => {
    await page.locator('.run-item:has(.chip.is-ok)').first().click();
    await page.locator('#run-info .chip.is-ok').waitFor();
    await expect.poll(() => page.locator('.pane[data-lane="expand/p3"] .pane-body').textContent()).toMatch(/\w+/);
    await page.locator('#replay').click();
    await page.locator('#run-info .chip.is-ok').waitFor({ timeout: 15_000 });
    expect(await page.locator('.pane').count()).toBeGreaterThanOrEqual(4);
    expect(pageErrors).toEqual([]);
  });
});
