// The page's own numbers, in one run: click-to-mask-drawn and hover previews per second with the decoder in the
// page (WebAssembly) and on the server (a round trip per click), per model; what the page downloads to decode
// (the decoder, the embedding in f16 and f32) and how long the decoder takes to load.
//
//   node tests/e2e/bench_page.mjs [--out BENCHMARKS.md]
//
// Takes target/release/samserve (or SAMSERVE_BIN) and headless Chromium, as the browser tests do. The server is
// on this machine: a remote annotator's round trips add the network's latency to every server-decoded click.
// With --out, the section "In the page" of that file is replaced with the tables (the rest is tools/benchmarks.py's).
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { chromiumPath, landscape, root, startServer } from './server.mjs';

const binary = process.env.SAMSERVE_BIN || join(root, 'target', 'release', 'samserve');
const MODELS = ['samserve-s', 'sam-vit-b', 'sam2-samexporter'];
const CLICKS = 40;
const HOVER_SECONDS = 5;
const [WIDTH, HEIGHT] = [640, 427];
const SECTION = '## In the page';

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Opens the photo on a fresh page of `address` (`?decoder=server` for the server side); the page and its mode. */
async function openPage(browser, address) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(address);
  await page.setInputFiles('#file-input', landscape);
  await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
  const mode = page.locator('#decoder-mode');
  return { page, context, mode: await mode.getAttribute('data-mode'), title: await mode.getAttribute('title') };
}

async function imagePoint(page, x, y) {
  await page.evaluate(() => window.scrollTo(0, 0)); // clicking a control may have scrolled the page
  const box = await page.locator('#prompt-canvas').boundingBox();
  return [box.x + (x / WIDTH) * box.width, box.y + (y / HEIGHT) * box.height];
}

/** CLICKS single clicks, each on a new object (three candidates each) deleted once drawn, hover off:
 * click-to-mask-drawn times. */
async function clickTimes(page) {
  await page.uncheck('#hover-toggle');
  for (let i = 0; i < CLICKS; i += 1) {
    await page.keyboard.press('n');
    const [x, y] = await imagePoint(page, 30 + ((i * 97) % 580), 30 + ((i * 61) % 370));
    await page.mouse.click(x, y);
    await page.waitForFunction((n) => performance.getEntriesByName('click-to-mask').length >= n, i + 1);
    await page.keyboard.press('Delete');
  }
  return page.evaluate(() => performance.getEntriesByName('click-to-mask').map((entry) => entry.duration));
}

/** The mouse moving over the image for HOVER_SECONDS: previews drawn per second, and the time each took. */
async function hoverRate(page) {
  await page.check('#hover-toggle');
  await page.evaluate(() => performance.clearMeasures('hover-preview'));
  const started = Date.now();
  for (let i = 0; Date.now() - started < HOVER_SECONDS * 1000; i += 1) {
    const [x, y] = await imagePoint(page, 320 + 280 * Math.cos(i / 15), 213 + 180 * Math.sin(i / 11));
    await page.mouse.move(x, y);
    await page.waitForTimeout(4); // about 200 mouse events a second, more than any screen draws
  }
  const seconds = (Date.now() - started) / 1000;
  const previews = await page.evaluate(() => performance.getEntriesByName('hover-preview').map((e) => e.duration));
  return { perSecond: previews.length / seconds, p50: percentile(previews, 50) };
}

async function measure(browser, model) {
  const server = await startServer(binary, [model]);
  try {
    const local = await openPage(browser, server.address);
    if (local.mode !== 'local') throw new Error(`${model}: the page did not decode locally`);
    const upload = await fetch(`${server.address}/v1/images`, { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: readFileSync(landscape) });
    const imageId = (await upload.json()).image_id; // the page's image: ids are content-addressed
    const sizes = {};
    for (const dtype of ['f16', 'f32']) {
      sizes[dtype] = (await (await fetch(`${server.address}/v1/images/${imageId}/embedding?dtype=${dtype}`)).arrayBuffer()).byteLength;
    }
    const listed = (await (await fetch(`${server.address}/v1/models`)).json()).models.find((m) => m.name === model);
    sizes.decoder = (await (await fetch(`${server.address}${listed.decoder_url}`)).arrayBuffer()).byteLength;
    const loadMs = Number(/([\d.]+) ms/.exec(local.title)[1]);
    const localClicks = await clickTimes(local.page);
    const localHover = await hoverRate(local.page);
    await local.context.close();
    const remote = await openPage(browser, `${server.address}/?decoder=server`);
    const remoteClicks = await clickTimes(remote.page);
    const remoteHover = await hoverRate(remote.page);
    await remote.context.close();
    return { model, sizes, loadMs, localClicks, localHover, remoteClicks, remoteHover };
  } finally {
    server.child.kill();
  }
}

const megabytes = (bytes) => (bytes / 1e6).toFixed(2);
const ms = (value) => value.toFixed(1);

function report(results) {
  const lines = [
    SECTION, '',
    `Made by \`node tests/e2e/bench_page.mjs\` (one run, headless Chromium ${results.browserVersion} and the release `
      + `binary on the same ${cpus().length}-core machine; the page and the server share its cores). Photo: `
      + `tests/fixtures/images/landscape.png (${WIDTH}x${HEIGHT}). Click: ${CLICKS} single clicks, each a new object `
      + 'with three candidates (deleted after), from the mouse button to the mask drawn. Hover: the mouse moving over the image for '
      + `${HOVER_SECONDS} s; a preview is decoded as soon as the last one is drawn in the page, at most one request `
      + 'per 100 ms from the server. The server is local here: over a network, each server-decoded click and preview '
      + 'also waits a round trip, and a decoded-in-page one does not.', '',
    '| model | click p50, page | click p99, page | click p50, server | click p99, server | server / page (p50) '
      + '| previews/s, page | previews/s, server |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results.models) {
    const [lp50, rp50] = [percentile(r.localClicks, 50), percentile(r.remoteClicks, 50)];
    lines.push(`| ${r.model} | ${ms(lp50)} | ${ms(percentile(r.localClicks, 99))} | ${ms(rp50)} | `
      + `${ms(percentile(r.remoteClicks, 99))} | ${(rp50 / lp50).toFixed(2)} | ${r.localHover.perSecond.toFixed(1)} | `
      + `${r.remoteHover.perSecond.toFixed(1)} |`);
  }
  lines.push('', 'What the page downloads to decode, once per decoder and once per image, and the decoder\'s load '
    + '(fetch and session creation, the first image of a page):', '',
    '| model | decoder.onnx (MB) | decoder load (ms) | embedding f16 (MB) | embedding f32 (MB) |',
    '| --- | --- | --- | --- | --- |');
  for (const r of results.models) {
    lines.push(`| ${r.model} | ${megabytes(r.sizes.decoder)} | ${r.loadMs.toFixed(0)} | ${megabytes(r.sizes.f16)} | `
      + `${megabytes(r.sizes.f32)} |`);
  }
  return lines.join('\n') + '\n';
}

const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
try {
  const models = [];
  for (const model of MODELS) models.push(await measure(browser, model));
  const markdown = report({ browserVersion: browser.version(), models });
  process.stdout.write(markdown);
  const out = process.argv.indexOf('--out');
  if (out > 0) {
    const path = process.argv[out + 1];
    const text = readFileSync(path, 'utf8');
    const start = text.indexOf(SECTION);
    const end = start < 0 ? -1 : text.indexOf('\n## ', start + SECTION.length);
    const before = start < 0 ? text.trimEnd() + '\n\n' : text.slice(0, start);
    writeFileSync(path, before + markdown + (end < 0 ? '' : text.slice(end)));
  }
} finally {
  await browser.close();
}
