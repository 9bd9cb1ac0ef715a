// The browser half of tests/chart_page.rs: drives Debian's chromium through
// playwright-core (no browser download) against the chart page of a mesh the
// Rust test started, and answers the test's commands, one JSON line each way
// (commands on stdin, events on stdout; diagnostics on stderr).
//
// Environment: CHART_URL, CHROMIUM (executable), NODE_MODULES (a directory
// holding playwright-core), FIXTURES (protobuf vectors from prost, JSON),
// SCREENSHOT (where to save the PNG).
//
// Commands: expect_price {price} (wait until the page's last price is it),
// wait_status {status}, screenshot, close; any command may set the test's
// `phase` (problems are reported with it), `phase` alone only does that.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const require = createRequire(join(env('NODE_MODULES'), 'noop.js'));
const { chromium } = require('playwright-core');

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const log = (...args) => console.error('[chart_page.mjs]', ...args);

/** Colors of the page (web/style.css, web/app.js). */
const BACKGROUND = [0x13, 0x17, 0x22];
const UP = [0x26, 0xa6, 0x9a];
const DOWN = [0xef, 0x53, 0x50];

const profile = mkdtempSync(join(tmpdir(), 'tickmesh-chart-profile-'));
let context;
let page;
const problems = [];

async function main() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: env('CHROMIUM'),
    headless: true,
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
    viewport: { width: 1280, height: 720 },
    deviceScaleFactor: 1,
    timeout: 60_000,
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30_000);

  // Browser-side problems fail the test, except failed requests while the
  // test has the mesh down on purpose (phase "restart").
  let phase = 'load';
  page.on('pageerror', (e) => problems.push(`${phase}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) {
      problems.push(`${phase}: console ${m.type()}: ${m.text()}`);
    }
  });
  page.on('requestfailed', (r) => {
    const failure = r.failure()?.errorText ?? '';
    problems.push(`${phase}: request failed: ${r.method()} ${new URL(r.url()).pathname} ${failure}`);
  });
  const state = () => page.evaluate(() => JSON.parse(JSON.stringify(window.tickmeshChart)));

  const started = Date.now();
  await page.goto(env('CHART_URL'), { waitUntil: 'load' });
  await page.waitForFunction(
    () => {
      const s = window.tickmeshChart;
      return s && s.ready && s.stream.status === 'live' && s.candleCount > 0 && s.last;
    },
    null,
    { timeout: 60_000, polling: 50 },
  );
  const loadedMs = Date.now() - started;

  // The page's protobuf codec against prost's bytes.
  const fixtures = JSON.parse(readFileSync(env('FIXTURES'), 'utf8'));
  const codec = await page.evaluate(async (fixtures) => {
    const proto = await import('/chart/proto.js');
    const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
    const unhex = (text) => Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));
    return {
      encoded: fixtures.encode.map((f) => hex(proto.encode(proto.schemas[f.message], f.value))),
      decoded: fixtures.decode.map((f) => proto.decode(proto.schemas[f.message], unhex(f.hex))),
    };
  }, fixtures);
  fixtures.encode.forEach((f, i) => assert.equal(codec.encoded[i], f.hex, `encode ${f.message} ${JSON.stringify(f.value)}`));
  fixtures.decode.forEach((f, i) => assert.deepEqual(codec.decoded[i], f.expect, `decode ${f.message}`));

  // Scroll left (drag the chart to the right) until every page is loaded.
  const first = await state();
  const box = await page.locator('#chart').boundingBox();
  let drags = 0;
  for (; drags < 30; drags++) {
    const s = await state();
    if (s.historyExhausted) break;
    const y = box.y + box.height / 2;
    await page.mouse.move(box.x + 150, y);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width - 150, y, { steps: 8 });
    await page.mouse.up();
    await page.waitForFunction(
      (pages) => window.tickmeshChart.pagesLoaded > pages || window.tickmeshChart.historyExhausted,
      s.pagesLoaded,
      { timeout: 5_000, polling: 50 },
    ).catch(() => {});
  }
  const paged = await state();
  // Back to the newest candle, as a user would with the "now" button.
  await page.click('#to-now');

  emit({
    event: 'ready',
    loadedMs,
    codecVectors: fixtures.encode.length + fixtures.decode.length,
    firstPages: first.pagesLoaded,
    firstCandles: first.candleCount,
    drags,
    state: paged,
  });

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    phase = command.phase || phase;
    switch (command.cmd) {
      case 'expect_price': {
        await page.waitForFunction((price) => window.tickmeshChart.lastPrice === price, command.price, {
          timeout: command.timeoutMs || 20_000,
          polling: 5,
        });
        const seenAt = Date.now();
        emit({ event: 'price_seen', seenAt, state: await state() });
        break;
      }
      case 'phase':
        emit({ event: 'phase_set', phase });
        break;
      case 'wait_status': {
        await page.waitForFunction((status) => window.tickmeshChart.stream.status === status, command.status, {
          timeout: 20_000,
          polling: 20,
        });
        emit({ event: 'status_seen', state: await state() });
        break;
      }
      case 'screenshot': {
        await page.waitForTimeout(300);
        const path = env('SCREENSHOT');
        await page.screenshot({ path, fullPage: false });
        const chartBox = await page.locator('#chart').boundingBox();
        emit({ event: 'screenshot', path, pixels: await pixelStats(readFileSync(path), chartBox) });
        break;
      }
      case 'close': {
        await context.close();
        emit({ event: 'closed', problems });
        lines.close();
        return;
      }
      default:
        throw new Error(`unknown command ${line}`);
    }
  }
}

/** Decodes the PNG in a blank page and counts the chart area's pixels by color. */
async function pixelStats(png, box) {
  const blank = await context.newPage();
  try {
    return await blank.evaluate(
      async ({ data, box, colors }) => {
        const image = new Image();
        image.src = `data:image/png;base64,${data}`;
        await image.decode();
        const canvas = document.createElement('canvas');
        canvas.width = image.width;
        canvas.height = image.height;
        const context2d = canvas.getContext('2d');
        context2d.drawImage(image, 0, 0);
        const x = Math.round(box.x);
        const y = Math.round(box.y);
        const w = Math.round(box.width);
        const h = Math.round(box.height);
        const pixels = context2d.getImageData(x, y, w, h).data;
        const near = (i, c) => Math.abs(pixels[i] - c[0]) <= 12 && Math.abs(pixels[i + 1] - c[1]) <= 12 && Math.abs(pixels[i + 2] - c[2]) <= 12;
        const counts = { width: image.width, height: image.height, area: w * h, background: 0, up: 0, down: 0, other: 0 };
        for (let i = 0; i < pixels.length; i += 4) {
          if (near(i, colors.background)) counts.background++;
          else if (near(i, colors.up)) counts.up++;
          else if (near(i, colors.down)) counts.down++;
          else counts.other++;
        }
        return counts;
      },
      { data: png.toString('base64'), box, colors: { background: BACKGROUND, up: UP, down: DOWN } },
    );
  } finally {
    await blank.close();
  }
}

main()
  .catch(async (e) => {
    log(e.stack || String(e));
    if (problems.length) log('browser problems:', problems);
    if (page) {
      const state = await page.evaluate(() => JSON.stringify(window.tickmeshChart)).catch((e) => `(${e.message})`);
      log('page state:', state);
    }
    emit({ event: 'error', message: String(e.message || e) });
    process.exitCode = 1;
    if (context) await context.close().catch(() => {});
  })
  .finally(() => {
    rmSync(profile, { recursive: true, force: true });
    // stdin may still hold the event loop open.
    process.exit();
  });
