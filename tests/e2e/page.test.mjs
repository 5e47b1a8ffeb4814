// The web page end to end: the real `samserve serve` on an ephemeral port, driven in headless Debian Chromium.
// Run by .ci/run after `cargo test` (which builds target/debug/samserve); screenshots go to target/e2e-screenshots.
import { after, before, beforeEach, afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { masksFromLogits } from '../../assets/local_decoder.mjs';
import { rleCounts } from '../../assets/rle.mjs';
import { chromiumPath, landscape, root, startServer } from './server.mjs';

const binary = process.env.SAMSERVE_BIN || join(root, 'target', 'debug', 'samserve');
const screenshots = join(root, 'target', 'e2e-screenshots');
const WIDTH = 640;
const HEIGHT = 427;
// Most tests watch the page's segment requests: they ask it to decode on the server. The tests of decoding in the
// page (further down) open it without.
const SERVER_DECODING = '/?decoder=server';

let server;
let base;
let browser;
let context;
let page;

before(async () => {
  mkdirSync(screenshots, { recursive: true });
  server = await startServer(binary, ['tiny']);
  base = server.address;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.child.kill();
});

beforeEach(async () => {
  context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  page = await context.newPage();
  await page.goto(base + SERVER_DECODING);
});

afterEach(async () => {
  await context.close();
});

// ---- helpers ---------------------------------------------------------------------------------------------------

/** Opens the fixture image in the page; returns its image_id (content-addressed: the API gives the same). */
async function openLandscape({ hover = false } = {}) {
  if (!hover) await page.uncheck('#hover-toggle');
  await page.setInputFiles('#file-input', landscape);
  await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
  const response = await fetch(`${base}/v1/images`, { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: readFileSync(landscape) });
  const upload = await response.json();
  assert.equal(upload.cached, true, 'the page uploaded the same image');
  return upload.image_id;
}

/** Starts a server with these model folders and opens the fixture image on its page (hover off). */
async function openLandscapeOn(models) {
  const other = await startServer(binary, models);
  await page.goto(other.address + SERVER_DECODING);
  await page.uncheck('#hover-toggle');
  await page.setInputFiles('#file-input', landscape);
  await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
  return other;
}

/** Screen position of an image pixel (the canvas is scaled to fit). */
async function screen(x, y) {
  await page.evaluate(() => window.scrollTo(0, 0)); // a long object list scrolls the page as buttons are clicked
  const box = await page.locator('#prompt-canvas').boundingBox();
  return [box.x + (x / WIDTH) * box.width, box.y + (y / HEIGHT) * box.height];
}

/** Pixels with alpha > 0 on a canvas of the page. */
function painted(id) {
  return page.evaluate((canvasId) => {
    const canvas = document.getElementById(canvasId);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let count = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) count += 1;
    return count;
  }, id);
}

/** Does `act`, waits for the page's segment call, and returns the request body it sent and the JSON answer. */
async function segmentCall(act) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/segment') && r.request().method() === 'POST'),
    act(),
  ]);
  const answer = await response.json();
  await page.waitForFunction(() => !document.querySelector('#undo').disabled);
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => done())));
  return { sent: JSON.parse(response.request().postData()), answer };
}

/** The same request straight to the API. */
async function apiSegment(path, body) {
  const response = await fetch(`${base}${path}`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(response.status, 200);
  return response.json();
}

function closeTo(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);
}

/** Decodes a downloaded PNG in the page and counts its pixels that are opaque and (optionally) white. */
function countPng(bytes, { white }) {
  return page.evaluate(async ({ data, onlyWhite }) => {
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(data)], { type: 'image/png' }));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext('2d');
    context.drawImage(bitmap, 0, 0);
    const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    let count = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      const opaque = pixels[i + 3] === 255;
      if (opaque && (!onlyWhite || pixels[i] === 255)) count += 1;
    }
    return { count, width: bitmap.width, height: bitmap.height };
  }, { data: [...bytes], onlyWhite: white });
}

async function downloaded(button) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(button)]);
  const path = await download.path();
  return { bytes: readFileSync(path), name: download.suggestedFilename() };
}

// ---- tests -----------------------------------------------------------------------------------------------------

test('a click draws the mask the API gives for the same click', async () => {
  const imageId = await openLandscape();
  const [x, y] = await screen(475, 365);
  const { sent, answer } = await segmentCall(() => page.mouse.click(x, y));
  const prompt = sent.prompts[0];
  closeTo(prompt.points[0][0], 475, 1, 'x in image pixels');
  closeTo(prompt.points[0][1], 365, 1, 'y in image pixels');
  assert.deepEqual(prompt.labels, [1]);
  assert.equal(sent.multimask, true, 'a single click asks for the candidates');
  const direct = await apiSegment(`/v1/images/${imageId}/segment`, sent);
  const area = direct.results[0].masks[0].area;
  assert.ok(area > 0);
  assert.equal(answer.results[0].masks[0].area, area);
  closeTo(await painted('mask-canvas'), area, Math.max(2, area * 0.01), 'drawn pixels vs API area');
  assert.equal(await page.locator('#candidates button').count(), 3, 'the three candidates are offered');
  await page.locator('#candidates button').nth(1).click();
  const second = direct.results[0].masks[1].area;
  closeTo(await painted('mask-canvas'), second, Math.max(2, second * 0.01), 'the picked candidate is drawn');
  await page.locator('#candidates button').nth(0).click();
  await page.screenshot({ path: join(screenshots, 'click.png') });

  // A background click where the mask is shrinks it, and the refinement sends the previous logits.
  const inside = await page.evaluate(([px, py]) => {
    const canvas = document.getElementById('mask-canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let best = null;
    for (let yy = 0; yy < canvas.height; yy += 1) {
      for (let xx = 0; xx < canvas.width; xx += 1) {
        const d = Math.hypot(xx - px, yy - py);
        if (data[4 * (yy * canvas.width + xx) + 3] > 0 && (!best || d > best.d)) best = { xx, yy, d };
      }
    }
    return best;
  }, [475, 365]);
  const before = await painted('mask-canvas');
  const [bx, by] = await screen(inside.xx + 0.5, inside.yy + 0.5);
  const refined = await segmentCall(() => page.mouse.click(bx, by, { button: 'right' }));
  assert.deepEqual(refined.sent.prompts[0].labels, [1, 0]);
  assert.equal(refined.sent.prompts[0].mask_input, answer.results[0].masks[0].logits_id);
  const after = await painted('mask-canvas');
  assert.ok(after < before, `a background point shrinks the mask: ${before} -> ${after}`);
  await page.screenshot({ path: join(screenshots, 'background-click.png') });
});

test('dragging draws a box prompt', async () => {
  await openLandscape();
  const [x0, y0] = await screen(400, 320);
  const [x1, y1] = await screen(550, 415);
  const { sent, answer } = await segmentCall(async () => {
    await page.mouse.move(x0, y0);
    await page.mouse.down();
    await page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, { steps: 4 });
    await page.mouse.move(x1, y1, { steps: 4 });
    await page.mouse.up();
  });
  const box = sent.prompts[0].box;
  [400, 320, 550, 415].forEach((v, i) => closeTo(box[i], v, 1.5, `box[${i}]`));
  assert.equal(sent.prompts[0].points, undefined);
  assert.equal(sent.multimask, false);
  const area = answer.results[0].masks[0].area;
  closeTo(await painted('mask-canvas'), area, Math.max(2, area * 0.01), 'drawn pixels vs API area');
  await page.screenshot({ path: join(screenshots, 'box.png') });
});

test('moving the mouse shows a hover preview', async () => {
  await openLandscape({ hover: true });
  const [x, y] = await screen(390, 150);
  await page.mouse.move(x - 20, y - 20);
  await page.mouse.move(x, y, { steps: 5 });
  await page.waitForFunction(() => {
    const canvas = document.getElementById('hover-canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  }, null, { timeout: 10000 });
  assert.equal(await painted('mask-canvas'), 0, 'a preview is not a mask yet');
  await page.screenshot({ path: join(screenshots, 'hover.png') });
});

test('objects: new object, undo and redo', async () => {
  await openLandscape();
  const [ax, ay] = await screen(475, 365);
  const first = await segmentCall(() => page.mouse.click(ax, ay));
  const firstArea = first.answer.results[0].masks[0].area;
  await page.keyboard.press('n');
  assert.equal(await page.locator('#object-list li').count(), 2);
  const [bx, by] = await screen(390, 150);
  await segmentCall(() => page.mouse.click(bx, by));
  const both = await painted('mask-canvas');
  assert.ok(both > firstArea, 'the second object adds its mask');
  await page.screenshot({ path: join(screenshots, 'two-objects.png') });

  await page.keyboard.press('Control+z'); // the second object's click
  closeTo(await painted('mask-canvas'), firstArea, Math.max(2, firstArea * 0.01), 'after undo');
  await page.keyboard.press('Control+z'); // the second object itself
  assert.equal(await page.locator('#object-list li').count(), 1);
  await page.keyboard.press('Control+y');
  await page.keyboard.press('Control+y');
  assert.equal(await painted('mask-canvas'), both, 'redo brings both back');

  await page.getByRole('checkbox', { name: 'Show Object 2' }).click();
  closeTo(await painted('mask-canvas'), firstArea, Math.max(2, firstArea * 0.01), 'hidden object');
  await page.getByRole('button', { name: 'Delete Object 1' }).click();
  assert.equal(await page.locator('#object-list li').count(), 1);
  await page.click('#reset');
  assert.equal(await page.locator('#object-list li').count(), 0);
  assert.equal(await painted('mask-canvas'), 0);
});

test('exports are a valid mask PNG, COCO JSON and cut-out PNG', async () => {
  await openLandscape();
  const [x, y] = await screen(475, 365);
  const { answer } = await segmentCall(() => page.mouse.click(x, y));
  const best = answer.results[0].masks[0];

  const maskPng = await downloaded('#export-mask');
  assert.match(maskPng.name, /\.png$/);
  const maskPixels = await countPng(maskPng.bytes, { white: true });
  assert.deepEqual([maskPixels.width, maskPixels.height], [WIDTH, HEIGHT]);
  assert.equal(maskPixels.count, best.area, 'white pixels of the mask PNG');

  const coco = JSON.parse((await downloaded('#export-coco')).bytes.toString('utf8'));
  assert.deepEqual(coco.images, [{ id: 1, file_name: 'landscape.png', width: WIDTH, height: HEIGHT }]);
  assert.equal(coco.annotations.length, 1);
  const annotation = coco.annotations[0];
  assert.deepEqual(annotation.segmentation.size, [HEIGHT, WIDTH]);
  const runs = rleCounts(annotation.segmentation.counts);
  assert.equal(runs.reduce((a, b) => a + b, 0), WIDTH * HEIGHT, 'RLE covers the image');
  assert.equal(runs.filter((_, i) => i % 2 === 1).reduce((a, b) => a + b, 0), annotation.area);
  assert.equal(annotation.area, best.area);

  const cutout = await downloaded('#export-cutout');
  const opaque = await countPng(cutout.bytes, { white: false });
  assert.equal(opaque.count, best.area, 'opaque pixels of the cut-out');
});

test('a large image fits the window and clicks map to its pixels', async () => {
  await page.uncheck('#hover-toggle');
  await page.setInputFiles('#file-input', join(root, 'tests', 'fixtures', 'images', 'large.jpg'));
  await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
  const box = await page.locator('#prompt-canvas').boundingBox();
  assert.ok(box.width < 1280 && box.height < 800, `the canvas fits: ${box.width}x${box.height}`);
  const target = [1500.5, 900.25];
  const { sent } = await segmentCall(() =>
    page.mouse.click(box.x + (target[0] / 2304) * box.width, box.y + (target[1] / 1536) * box.height));
  const [x, y] = sent.prompts[0].points[0];
  closeTo(x, target[0], 0.5, 'x');
  closeTo(y, target[1], 0.5, 'y');
});

test('a small image is scaled up to fill the view and clicks map to its pixels', async () => {
  await page.uncheck('#hover-toggle');
  await page.setInputFiles('#file-input', join(root, 'tests', 'fixtures', 'images', 'tiny.png'));
  await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
  const box = await page.locator('#prompt-canvas').boundingBox();
  assert.ok(box.width > 37 * 10 && box.width <= 1280 && box.height < 800, `scaled up: ${box.width}x${box.height}`);
  closeTo(box.width / box.height, 37 / 23, 0.05, 'aspect ratio');
  const { sent } = await segmentCall(() => page.mouse.click(box.x + (20.5 / 37) * box.width, box.y + (11.5 / 23) * box.height));
  const [x, y] = sent.prompts[0].points[0];
  closeTo(x, 20.5, 0.1, 'x');
  closeTo(y, 11.5, 0.1, 'y');
});

test('the page loads without console errors and has an icon', async () => {
  const errors = [];
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(base);
  await page.waitForLoadState('networkidle');
  assert.deepEqual(errors, []);
  for (const path of ['/favicon.ico', '/assets/favicon.svg']) {
    const response = await fetch(`${base}${path}`);
    assert.equal(response.status, 200, path);
    assert.match(response.headers.get('content-type'), /image\/svg\+xml/);
  }
});

test('a corrupt file shows the server error in words', async () => {
  const broken = Buffer.from(readFileSync(landscape));
  broken.fill(0x5a, 100, 400);
  await page.setInputFiles('#file-input', { name: 'broken.png', mimeType: 'image/png', buffer: broken });
  const status = page.locator('#status');
  await status.waitFor({ state: 'visible' });
  const text = await status.textContent();
  assert.match(text, /could not be decoded/i);
  assert.equal(await page.locator('#canvases').isHidden(), true);
  await page.screenshot({ path: join(screenshots, 'error.png') });
});

test('the page is served with cross-origin isolation headers', async () => {
  const response = await fetch(base);
  assert.equal(response.headers.get('cross-origin-opener-policy'), 'same-origin');
  assert.equal(response.headers.get('cross-origin-embedder-policy'), 'require-corp');
  assert.equal(await page.evaluate(() => window.crossOriginIsolated), true);
  for (const control of ['#file-input', '#prompt-canvas', '#opacity']) {
    const label = await page.locator(control).evaluate((element) =>
      element.getAttribute('aria-label') || (element.labels && element.labels[0] && element.labels[0].textContent));
    assert.ok(label && label.trim(), `${control} is labelled`);
  }
});

test('segment everything draws one object per generated mask', async () => {
  // The AMG fixture model: its masks pass the generator's default thresholds.
  const amg = await openLandscapeOn(['amg']);
  try {
    await page.waitForSelector('#everything:not([hidden])');
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/everything') && r.request().method() === 'POST'),
      page.click('#everything'),
    ]);
    assert.equal(response.status(), 200);
    const answer = await response.json();
    assert.ok(answer.masks.length > 0, 'the generator found masks');
    await page.waitForFunction((n) => document.querySelectorAll('#object-list li').length === n, answer.masks.length);
    await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => done())));
    // What is painted is the union of the masks.
    const union = new Uint8Array(WIDTH * HEIGHT);
    for (const mask of answer.masks) {
      let position = 0;
      rleCounts(mask.rle.counts).forEach((run, i) => {
        if (i % 2 === 1) for (let k = position; k < position + run; k += 1) union[k] = 1;
        position += run;
      });
    }
    const unionArea = union.reduce((a, b) => a + b, 0);
    closeTo(await painted('mask-canvas'), unionArea, Math.max(2, unionArea * 0.01), 'painted pixels');
    await page.screenshot({ path: join(screenshots, 'everything.png') });
    await page.keyboard.press('Control+z');
    assert.equal(await page.locator('#object-list li').count(), 0, 'one undo takes them all back');
  } finally {
    amg.child.kill();
  }
});

test('a model with a single-mask decoder segments clicks without asking for candidates', async () => {
  const single = await openLandscapeOn(['samexporter-single']);
  try {
    const [x, y] = await screen(475, 365);
    const { sent, answer } = await segmentCall(() => page.mouse.click(x, y));
    assert.equal(sent.multimask, false, 'no multimask request to a single-mask decoder');
    assert.equal(answer.results[0].masks.length, 1);
    assert.ok(await painted('mask-canvas') > 0, 'the mask is drawn');
    assert.equal(await page.locator('#status').isVisible(), false, 'no error shown');
    assert.equal(await page.locator('#everything').isDisabled(), true, 'segment everything is not offered');
  } finally {
    single.child.kill();
  }
});

test('a model whose decoder takes no mask_input gets clicks without it', async () => {
  const edgesam = await openLandscapeOn(['edgesam']);
  try {
    const [x, y] = await screen(475, 365);
    await segmentCall(() => page.mouse.click(x, y));
    const [x2, y2] = await screen(500, 340);
    const { sent, answer } = await segmentCall(() => page.mouse.click(x2, y2));
    assert.equal(sent.prompts[0].points.length, 2);
    assert.equal(sent.prompts[0].mask_input, undefined, 'no mask_input to a decoder that takes none');
    assert.equal(answer.results[0].masks.length, 1);
    assert.equal(await page.locator('#status').isVisible(), false, 'no error shown');
  } finally {
    edgesam.child.kill();
  }
});

test('a SAM 2 model: clicks, candidates and refinement as with SAM', async () => {
  const sam2 = await openLandscapeOn(['sam2-samexporter']);
  try {
    const [x, y] = await screen(475, 365);
    const { sent, answer } = await segmentCall(() => page.mouse.click(x, y));
    assert.equal(sent.multimask, true, 'a single click asks for the candidates');
    assert.equal(await page.locator('#candidates button').count(), 3, 'the three candidates are offered');
    const area = answer.results[0].masks[0].area;
    closeTo(await painted('mask-canvas'), area, Math.max(2, area * 0.01), 'drawn pixels vs API area');
    const [x2, y2] = await screen(300, 200);
    const refined = await segmentCall(() => page.mouse.click(x2, y2));
    assert.equal(refined.sent.prompts[0].mask_input, answer.results[0].masks[0].logits_id, 'refined from the logits');
    assert.equal(await page.locator('#status').isVisible(), false, 'no error shown');
    assert.equal(await page.locator('#everything').isDisabled(), false, 'segment everything is offered');
  } finally {
    sam2.child.kill();
  }
});

test('the page offers a model picker and says when the model is only the demo one', async () => {
  const both = await startServer(binary, ['samserve-s', 'tiny']);
  try {
    await page.goto(both.address + SERVER_DECODING);
    await page.locator('#model-picker').waitFor({ state: 'visible' });
    const names = await page.locator('#model-select option').evaluateAll((options) => options.map((o) => o.value));
    assert.deepEqual(names, ['samserve-s', 'tiny']);
    assert.equal(await page.locator('#model-select').inputValue(), 'samserve-s', 'the default model is chosen');
    assert.match(await page.locator('#notice').textContent(), /demo model.*samserve serve --model mobilesam/);
    await page.uncheck('#hover-toggle');
    const isUpload = (request) => request.method() === 'POST' && new URL(request.url()).pathname === '/v1/images';
    let upload = page.waitForRequest(isUpload);
    await page.setInputFiles('#file-input', landscape);
    assert.equal(new URL((await upload).url()).searchParams.get('model'), 'samserve-s');
    await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
    upload = page.waitForRequest(isUpload);
    await page.selectOption('#model-select', 'tiny');
    assert.equal(new URL((await upload).url()).searchParams.get('model'), 'tiny', 'the open image goes to the new model');
    assert.equal(await page.locator('#notice').isVisible(), false, 'no notice for a real model folder');
    await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
    const [x, y] = await screen(475, 365);
    const { answer } = await segmentCall(() => page.mouse.click(x, y));
    assert.ok(answer.results[0].masks.length > 0);
  } finally {
    both.child.kill();
  }
});

test('with one model there is no picker', async () => {
  await page.waitForFunction(() => document.querySelectorAll('#model-select option').length === 1);
  assert.equal(await page.locator('#model-picker').isVisible(), false);
  assert.equal(await page.locator('#notice').isVisible(), false, 'the tiny fixture is not the demo model');
});

/** A port nobody listens on (yet). */
function freePort() {
  return new Promise((done) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => done(port));
    });
  });
}

/** Resolves once something accepts connections on the port. */
async function listening(port) {
  for (let i = 0; i < 200; i += 1) {
    const open = await new Promise((done) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); done(true); });
      socket.on('error', () => done(false));
    });
    if (open) return;
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

/** A counter of a server's /metrics (0 when absent). */
async function counter(address, series) {
  const text = await (await fetch(`${address}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

test('with API keys the page asks for one, keeps it for this tab only, and works with it', async () => {
  const key = 'e2e-tenant-key-0123456789';
  const keyed = await startServer(binary, ['tiny'], ['--api-key-list', `team:${key}`]);
  try {
    await page.goto(keyed.address + SERVER_DECODING);
    await page.waitForSelector('#key-form', { state: 'visible' });
    await page.fill('#key-input', 'a-wrong-key-0123456789');
    await page.click('#key-form button');
    await page.waitForFunction(() => /refused/.test(document.getElementById('key-text').textContent));
    await page.fill('#key-input', key);
    await page.click('#key-form button');
    await page.waitForSelector('#key-form', { state: 'hidden' });
    await page.waitForFunction(() => document.querySelectorAll('#model-select option').length === 1);
    await page.uncheck('#hover-toggle');
    await page.setInputFiles('#file-input', landscape);
    await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
    const [x, y] = await screen(475, 365);
    const { answer } = await segmentCall(() => page.mouse.click(x, y));
    assert.ok(answer.results[0].masks.length > 0);
    assert.ok(await painted('mask-canvas') > 0, 'the mask is drawn');
    assert.equal(await page.locator('#status').isVisible(), false, 'no error shown');
    // Another tab starts without the key.
    const tab = await context.newPage();
    await tab.goto(keyed.address);
    await tab.waitForSelector('#key-form', { state: 'visible' });
  } finally {
    keyed.child.kill();
  }
});

test('the page works through nginx in front of replicas sharing Redis', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'samserve-e2e-replicas-'));
  // nginx's workers drop root: they must be able to write the request-body temp folders it makes in here.
  chmodSync(dir, 0o755);
  const redisPort = await freePort();
  const redis = spawn('/usr/bin/redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const replicas = [];
  let nginx;
  try {
    await listening(redisPort);
    for (let i = 0; i < 2; i += 1) {
      replicas.push(await startServer(binary, ['tiny'], ['--redis', `redis://127.0.0.1:${redisPort}`]));
    }
    const port = await freePort();
    const upstream = replicas.map((r) => `server ${new URL(r.address).host};`).join(' ');
    const temp = (name) => `${name}_temp_path ${join(dir, name)};`;
    writeFileSync(join(dir, 'nginx.conf'), `daemon off; worker_processes 1; pid ${join(dir, 'nginx.pid')};
      error_log ${join(dir, 'error.log')} warn; events { worker_connections 64; }
      http { access_log off; ${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp).join(' ')}
        client_max_body_size 64m; upstream samserve { ${upstream} }
        server { listen 127.0.0.1:${port}; location / { proxy_pass http://samserve; } } }`);
    nginx = spawn('/usr/sbin/nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' });
    await listening(port);
    await page.goto(`http://127.0.0.1:${port}${SERVER_DECODING}`);
    await page.uncheck('#hover-toggle');
    await page.setInputFiles('#file-input', landscape);
    await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
    // Clicks on one object: each after the first refines the last answer, on whichever replica nginx picks.
    for (const [px, py] of [[475, 365], [300, 200], [500, 340], [420, 300]]) {
      const [x, y] = await screen(px, py);
      const { answer } = await segmentCall(() => page.mouse.click(x, y));
      assert.ok(answer.results[0].masks.length > 0);
    }
    assert.equal(await page.locator('#status').isVisible(), false, 'no error shown');
    assert.ok(await painted('mask-canvas') > 0, 'the mask is drawn');
    const runs = await Promise.all(replicas.map((r) => counter(r.address, 'samserve_encoder_runs_total{model="tiny"}')));
    assert.equal(runs.reduce((a, b) => a + b, 0), 1, 'one encoder run over the replicas');
    const clicks = await Promise.all(replicas.map((r) => counter(r.address, 'samserve_decoder_runs_total{model="tiny"}')));
    assert.ok(clicks.every((count) => count > 0), `every replica answered clicks: ${clicks}`);
  } finally {
    nginx?.kill();
    for (const replica of replicas) replica.child.kill();
    redis.kill();
  }
});

// ---- decoding in the page --------------------------------------------------------------------------------------

/** 20 clicks and a box over four objects: a refinement chain (background clicks too), a box refined by clicks,
 * and single clicks that offer candidates. Positions in image pixels. */
const SESSION = [
  ['click', 475, 365], ['click', 500, 340], ['right', 300, 200], ['click', 450, 380], ['click', 520, 360],
  ['new'], ['box', 100, 50, 300, 250], ['click', 200, 150], ['right', 120, 60], ['click', 250, 120],
  ['new'], ['click', 390, 150], ['click', 410, 170], ['right', 600, 60],
  ...[[60, 380], [160, 330], [260, 400], [560, 250], [620, 410], [330, 60], [40, 40]].flatMap(([x, y]) => [['new'], ['click', x, y]]),
];

/** Plays SESSION on the open page; after each prompt, the page's COCO export (the chosen mask of every object). */
async function playSession() {
  const exports = [];
  let prompts = 0;
  for (const [action, ...at] of SESSION) {
    if (action === 'new') {
      await page.keyboard.press('n');
      continue;
    }
    const [x, y] = await screen(at[0], at[1]);
    if (action === 'box') {
      const [x1, y1] = await screen(at[2], at[3]);
      await page.mouse.move(x, y);
      await page.mouse.down();
      await page.mouse.move(x1, y1, { steps: 8 });
      await page.mouse.up();
    } else {
      await page.mouse.click(x, y, { button: action === 'right' ? 'right' : 'left' });
    }
    prompts += 1;
    await page.waitForFunction((n) => performance.getEntriesByName('click-to-mask').length >= n, prompts)
      .catch((error) => { throw new Error(`prompt ${prompts} (${action} ${at}) was not answered: ${error.message}`); });
    exports.push((await downloaded('#export-coco')).bytes.toString('utf8'));
  }
  return exports;
}

/** Opens the fixture image on the page at `address` and waits until it is ready to click. */
async function openAt(address, { hover }) {
  await page.goto(address);
  if (!hover) await page.uncheck('#hover-toggle');
  await page.setInputFiles('#file-input', landscape);
  await page.waitForFunction(() => /encoded/.test(document.getElementById('upload-text').textContent));
  return page.locator('#decoder-mode');
}

/** A COCO RLE as a column-major 0/1 array. */
function rleMask({ size: [height, width], counts }) {
  const mask = new Uint8Array(height * width);
  let index = 0;
  rleCounts(counts).forEach((run, i) => {
    if (i % 2 === 1) mask.fill(1, index, index + run);
    index += run;
  });
  return mask;
}

function iou(a, b) {
  const [x, y] = [rleMask(a), rleMask(b)];
  let [both, either] = [0, 0];
  for (let i = 0; i < x.length; i += 1) {
    both += x[i] & y[i];
    either += x[i] | y[i];
  }
  return either ? both / either : 1;
}

/** Hover moves over the image, then SESSION, decoded in the page and then on the server: the page sends no segment
 * request, each mask matches the server's (IoU >= 0.99 at full size, same top candidate), and so do the exports. */
async function decodesLikeTheServer(models) {
  const server = await startServer(binary, models);
  try {
    const segmentRequests = [];
    page.on('request', (request) => { if (request.url().includes('/segment')) segmentRequests.push(request.url()); });
    const mode = await openAt(server.address, { hover: true });
    assert.equal(await mode.getAttribute('data-mode'), 'local', await mode.textContent());
    assert.match(await mode.textContent(), /decoded in this page \(WebAssembly, \d+ threads?\)/);
    for (let i = 0; i < 50; i += 1) {
      const [x, y] = await screen(40 + (i * 37) % 560, 40 + (i * 53) % 350);
      await page.mouse.move(x, y, { steps: 2 });
      await page.waitForTimeout(10);
    }
    await page.waitForFunction(() => performance.getEntriesByName('hover-preview').length > 0);
    assert.ok(await painted('hover-canvas') > 0, 'the preview is drawn');
    const local = await playSession();
    assert.deepEqual(segmentRequests, [], 'no segment request from 50 hover moves and 20 clicks');

    await openAt(server.address + SERVER_DECODING, { hover: false });
    assert.equal(await mode.getAttribute('data-mode'), 'server');
    const remote = await playSession();
    assert.ok(segmentRequests.length > 0, 'the server answered this time');
    let [masks, identical, scoreGap] = [0, 0, 0];
    for (const [step, [mine, theirs]] of local.map((text, i) => [text, remote[i]]).entries()) {
      const [a, b] = [JSON.parse(mine).annotations, JSON.parse(theirs).annotations];
      assert.equal(a.length, b.length, `objects after prompt ${step + 1}`);
      for (const [i, annotation] of a.entries()) {
        const overlap = iou(annotation.segmentation, b[i].segmentation);
        assert.ok(overlap >= 0.99, `prompt ${step + 1}, ${annotation.name}: IoU ${overlap.toFixed(4)} with the server's`);
        scoreGap = Math.max(scoreGap, Math.abs(annotation.score - b[i].score));
        masks += 1;
        identical += Number(annotation.segmentation.counts === b[i].segmentation.counts);
      }
    }
    // The same top candidate: scores differ only by the two runtimes' float rounding (WebAssembly's kernels sum in
    // another order than the server's), which is also why a mask may differ by a pixel or two. Given the same
    // decoder outputs the exports are the same bytes (the next test).
    assert.ok(scoreGap < 1e-4, `scores within ${scoreGap}`);
    console.log(`${models}: ${identical} of ${masks} exported masks identical to the server's, scores within ${scoreGap}`);
  } finally {
    server.child.kill();
  }
}

test('clicks and hover previews are decoded in the page with the default model, as the server decodes them', async () => {
  await decodesLikeTheServer(['samserve-s']);
});

test('clicks and hover previews are decoded in the page with a SAM ViT-B-shaped decoder, as the server decodes them', async () => {
  await decodesLikeTheServer(['sam-vit-b']);
});

/** The embedding's metadata (the frames the decoder's outputs are brought back through). */
async function embeddingFrames(address, imageId) {
  const bytes = Buffer.from(await (await fetch(`${address}/v1/images/${imageId}/embedding`)).arrayBuffer());
  const meta = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')).__metadata__;
  const [original, resized] = [JSON.parse(meta.original_size), JSON.parse(meta.resized_size)];
  return { family: meta.family, original, resized, inputSize: Number(meta.input_size) };
}

test('clicks and hover previews are decoded in the page with a SAM 2 model, as the server decodes them', async () => {
  await decodesLikeTheServer(['sam2-samexporter']);
});

test('the page turns decoder outputs into the masks and exports the server gives, byte for byte', async () => {
  const sam2 = await startServer(binary, ['sam2-samexporter']);
  try {
    const prompts = [{ points: [[475.5, 365.25]], labels: [1] }, { points: [[300, 200], [310, 120]], labels: [1, 0] },
      { box: [100, 50, 300, 250] }, { points: [[200, 150]], labels: [0], box: [90, 40, 320, 260] }];
    for (const [address, image] of [[base, landscape], [base, join(root, 'tests', 'fixtures', 'images', 'large.jpg')],
      [sam2.address, landscape]]) {
      const type = image.endsWith('.png') ? 'image/png' : 'image/jpeg';
      const upload = await (await fetch(`${address}/v1/images`, { method: 'POST', headers: { 'Content-Type': type }, body: readFileSync(image) })).json();
      const frames = await embeddingFrames(address, upload.image_id);
      for (const prompt of prompts) {
        const body = { prompts: [prompt], multimask: true, output: ['rle', 'logits'] };
        const response = await fetch(`${address}/v1/images/${upload.image_id}/segment`, { method: 'POST', body: JSON.stringify(body) });
        for (const { logits, logits_id: _, ...server } of (await response.json()).results[0].masks) {
          const lowRes = new Float32Array(new Uint8Array(Buffer.from(logits.data, 'base64')).buffer);
          const [{ mask: _mask, lowRes: _lowRes, ...page }] = masksFromLogits(frames, [server.score], lowRes, logits.size, false);
          const inServerOrder = Object.fromEntries(Object.keys(server).map((key) => [key, page[key]]));
          assert.equal(JSON.stringify(inServerOrder), JSON.stringify(server), `${image}, ${JSON.stringify(prompt)}`);
        }
      }
    }
  } finally {
    sam2.child.kill();
  }
});

test('without WebAssembly the page decodes on the server and says so', async () => {
  await context.addInitScript(() => { delete globalThis.WebAssembly; }); // as in a browser with it turned off
  const mode = await openAt(base, { hover: false });
  assert.equal(await mode.getAttribute('data-mode'), 'server');
  assert.match(await mode.textContent(), /decoded on the server: this browser runs no WebAssembly/);
  const [x, y] = await screen(475, 365);
  const { answer } = await segmentCall(() => page.mouse.click(x, y));
  assert.ok(await painted('mask-canvas') > 0 && answer.results[0].masks.length === 3, 'the server decoded the click');
});

test('a model whose decoder cannot run in a browser is decoded on the server, and the page says why', async () => {
  const transformers = await startServer(binary, ['slimsam-transformers']);
  try {
    const mode = await openAt(transformers.address, { hover: false });
    assert.equal(await mode.getAttribute('data-mode'), 'server');
    assert.match(await mode.textContent(), /the decoder of slimsam-transformers cannot run in a browser/);
    const [x, y] = await screen(475, 365);
    await segmentCall(() => page.mouse.click(x, y));
  } finally {
    transformers.child.kill();
  }
});
