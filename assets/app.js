// samserve web page: open an image, click to segment. Plain JS modules, no build step; talks to the REST API of
// this server.
import { rleCounts } from './rle.mjs';
import { LocalDecoder, unsupportedReason } from './local_decoder.mjs';

const COLOURS = [
  [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128], [170, 110, 40],
];
const HOVER_INTERVAL_MS = 100;
const DRAG_THRESHOLD_PX = 5;
const EVERYTHING_PATH = '/v1/images/{image_id}/everything';

const $ = (id) => document.getElementById(id);

// What the page shows. `objects` and `selected` are what undo/redo restore.
const state = {
  image: null, // {id, width, height, fileName, bitmap, singleMask, maskInput, boxes, embedding}
  file: null, // the open image's file, uploaded again when another model is chosen
  objects: [], // {id, name, colour, visible, points: [[x, y, label]], box: [x0, y0, x1, y1] | null, result}
  selected: null,
  nextId: 1,
};
const history = { undo: [], redo: [] };
const masks = new Map(); // RLE counts -> decoded Uint8Array (row-major, 1 = mask)
// Where clicks are decoded: in this page (`local`, a LocalDecoder) or by the server, and why.
const decoding = { local: null, reason: 'no image yet', sessions: new Map() }; // sessions: decoder_url -> Promise

// ---- API -------------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The API key, when the server asks for one (401): kept in sessionStorage, so for this tab only.
const KEY_STORAGE = 'samserve-api-key';

function authorization() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Shows the key form: the server needs a key, or refused the one given. */
function askForKey() {
  const refused = Boolean(sessionStorage.getItem(KEY_STORAGE));
  $('key-text').textContent = refused
    ? 'The server refused this key. Enter another one.'
    : 'This server needs an API key. The page keeps it for this tab only.';
  $('key-form').hidden = false;
  $('key-input').focus();
}

function useKey(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $('key-input').value.trim());
  $('key-input').value = '';
  $('key-form').hidden = true;
  showStatus('');
  modelList = null;
  offerModels();
}

async function apiError(response) {
  if (response.status === 401) askForKey();
  try {
    const body = await response.json();
    return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    return new ApiError(response.status, 'http_' + response.status, `the server answered ${response.status}`);
  }
}

async function postJson(path, body, signal) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...authorization() },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await apiError(response);
  return response.json();
}

/** Uploads with XMLHttpRequest, which (unlike fetch) reports upload progress. */
function uploadImage(file, model, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('POST', model ? `/v1/images?model=${encodeURIComponent(model)}` : '/v1/images');
    const type = file.type && file.type.startsWith('image/') ? file.type : 'application/octet-stream';
    request.setRequestHeader('Content-Type', type);
    for (const [name, value] of Object.entries(authorization())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total, 'Uploading…');
    };
    request.upload.onload = () => onProgress(1, 'Encoding…');
    request.onerror = () => reject(new ApiError(0, 'network', 'the server could not be reached'));
    request.onload = () => {
      if (request.status === 401) askForKey();
      let body = null;
      try { body = JSON.parse(request.responseText); } catch { /* handled below */ }
      if (request.status === 200 && body) resolve(body);
      else if (body && body.error) reject(new ApiError(request.status, body.error.code, body.error.message));
      else reject(new ApiError(request.status, 'http_' + request.status, `the server answered ${request.status}`));
    };
    request.send(file);
  });
}

// ---- Masks -----------------------------------------------------------------------------------------------------

/** A mask as a row-major Uint8Array, decoded once per RLE. */
function decodeMask(rle) {
  let mask = masks.get(rle.counts);
  if (mask) return mask;
  const [height, width] = rle.size;
  mask = new Uint8Array(width * height);
  let index = 0;
  rleCounts(rle.counts).forEach((run, i) => {
    if (i % 2 === 1) {
      for (let j = index; j < index + run; j += 1) mask[(j % height) * width + Math.floor(j / height)] = 1;
    }
    index += run;
  });
  masks.set(rle.counts, mask);
  return mask;
}

/** An ImageData of the mask: `rgba` where set, transparent elsewhere. */
function maskImage(mask, width, height, rgba) {
  const image = new ImageData(width, height);
  const pixels = new Uint32Array(image.data.buffer);
  const value = new Uint32Array(new Uint8ClampedArray(rgba).buffer)[0];
  for (let i = 0; i < mask.length; i += 1) if (mask[i]) pixels[i] = value;
  return image;
}

function chosenMask(object) {
  return object.result ? object.result.masks[object.result.chosen] : null;
}

// ---- Drawing ---------------------------------------------------------------------------------------------------

const canvases = () => ['image-canvas', 'mask-canvas', 'hover-canvas', 'prompt-canvas'].map($);

/** Draws every visible object's mask, each as an opaque layer, then the stack at the chosen opacity. */
function drawMasks() {
  const canvas = $('mask-canvas');
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  const { width, height } = state.image;
  for (const object of state.objects) {
    const chosen = chosenMask(object);
    if (!object.visible || !chosen) continue;
    const layer = new OffscreenCanvas(width, height);
    layer.getContext('2d').putImageData(maskImage(decodeMask(chosen.rle), width, height, [...object.colour, 255]), 0, 0);
    context.drawImage(layer, 0, 0);
  }
  canvas.style.opacity = $('opacity').value;
}

function drawHover(mask) {
  const canvas = $('hover-canvas');
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!mask || !state.image) return;
  const object = selectedObject();
  const colour = object ? object.colour : COLOURS[0];
  context.putImageData(maskImage(mask, state.image.width, state.image.height, [...colour, 110]), 0, 0);
}

/** Points and box of the selected object, and the box being dragged; sizes constant on screen. */
function drawPrompts(dragBox) {
  const canvas = $('prompt-canvas');
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  const scale = state.image.width / canvas.getBoundingClientRect().width || 1;
  const object = selectedObject();
  const boxes = [object && object.box, dragBox].filter(Boolean);
  context.lineWidth = 2 * scale;
  for (const [x0, y0, x1, y1] of boxes) {
    context.strokeStyle = '#ffffff';
    context.setLineDash([6 * scale, 4 * scale]);
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  context.setLineDash([]);
  for (const [x, y, label] of object ? object.points : []) {
    context.beginPath();
    context.arc(x, y, 5 * scale, 0, 2 * Math.PI);
    context.fillStyle = label === 1 ? '#22c55e' : '#ef4444';
    context.fill();
    context.strokeStyle = '#ffffff';
    context.stroke();
  }
}

function render() {
  drawMasks();
  drawPrompts(null);
  renderObjectList();
  renderCandidates();
  $('new-object').disabled = !state.image;
  $('reset').disabled = state.objects.length === 0;
  $('undo').disabled = history.undo.length === 0;
  $('redo').disabled = history.redo.length === 0;
  const hasMask = Boolean(selectedObject() && chosenMask(selectedObject()));
  $('export-mask').disabled = !hasMask;
  $('export-cutout').disabled = !hasMask;
  $('export-coco').disabled = !state.objects.some(chosenMask);
}

// ---- Objects and history ---------------------------------------------------------------------------------------

function selectedObject() {
  return state.objects.find((object) => object.id === state.selected) || null;
}

function snapshot() {
  return structuredClone({ objects: state.objects, selected: state.selected });
}

/** Call before every change that undo should revert. */
function remember() {
  history.undo.push(snapshot());
  history.redo.length = 0;
}

function restore(saved) {
  state.objects = saved.objects;
  state.selected = saved.selected;
  drawHover(null);
  render();
}

function undo() {
  if (history.undo.length === 0) return;
  history.redo.push(snapshot());
  restore(history.undo.pop());
}

function redo() {
  if (history.redo.length === 0) return;
  history.undo.push(snapshot());
  restore(history.redo.pop());
}

function newObject() {
  const id = state.nextId;
  state.nextId += 1;
  const object = { id, name: `Object ${id}`, colour: COLOURS[(id - 1) % COLOURS.length], visible: true, points: [], box: null, result: null };
  state.objects.push(object);
  state.selected = id;
  return object;
}

/** The selected object, or a new one when there is none. */
function objectToEdit() {
  return selectedObject() || newObject();
}

function renderObjectList() {
  const list = $('object-list');
  list.replaceChildren();
  for (const object of state.objects) {
    const item = document.createElement('li');
    item.className = object.id === state.selected ? 'selected' : '';
    item.dataset.objectId = object.id;
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${object.colour.join(',')})`;
    const visible = document.createElement('input');
    visible.type = 'checkbox';
    visible.checked = object.visible;
    visible.setAttribute('aria-label', `Show ${object.name}`);
    visible.addEventListener('change', () => { remember(); object.visible = visible.checked; render(); });
    const name = document.createElement('input');
    name.type = 'text';
    name.value = object.name;
    name.setAttribute('aria-label', `Name of ${object.name}`);
    name.addEventListener('change', () => { remember(); object.name = name.value.trim() || object.name; render(); });
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = '✕';
    remove.setAttribute('aria-label', `Delete ${object.name}`);
    remove.addEventListener('click', (event) => { event.stopPropagation(); deleteObject(object.id); });
    item.append(swatch, visible, name, remove);
    item.addEventListener('click', (event) => {
      // The row's own controls act on their own (re-rendering here would swallow their change events).
      if (event.target.closest('input, button')) return;
      state.selected = object.id;
      render();
    });
    list.append(item);
  }
}

function deleteObject(id) {
  remember();
  state.objects = state.objects.filter((object) => object.id !== id);
  if (state.selected === id) state.selected = null;
  render();
}

function renderCandidates() {
  const object = selectedObject();
  const section = $('candidates-section');
  const container = $('candidates');
  container.replaceChildren();
  section.hidden = !object || !object.result || object.result.masks.length < 2;
  if (section.hidden) return;
  object.result.masks.forEach((mask, index) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.setAttribute('role', 'radio');
    button.setAttribute('aria-checked', String(index === object.result.chosen));
    button.textContent = `${index + 1}: ${mask.score.toFixed(2)}`;
    button.title = `Candidate ${index + 1}, predicted IoU ${mask.score.toFixed(3)}, ${mask.area} pixels`;
    button.addEventListener('click', () => { remember(); object.result.chosen = index; render(); });
    container.append(button);
  });
}

// ---- Prompts ---------------------------------------------------------------------------------------------------

/** The API prompt of an object (plus an extra point for hover previews). Refines from its current mask. */
function promptOf(object, extraPoint, withMaskInput) {
  const points = extraPoint ? [...object.points, extraPoint] : object.points;
  const prompt = {};
  if (points.length) {
    prompt.points = points.map(([x, y]) => [x, y]);
    prompt.labels = points.map(([, , label]) => label);
  }
  if (object.box) prompt.box = object.box;
  const current = chosenMask(object);
  const refine = withMaskInput && state.image.maskInput;
  if (refine && current && current.logits_id) prompt.mask_input = current.logits_id;
  const single = points.length === 1 && !object.box;
  return { prompt, multimask: single && !state.image.singleMask };
}

/** The answer of POST /segment for the object's prompt, from the decoder in this page or from the server. */
async function segment(object, extraPoint, signal) {
  if (decoding.local) {
    try {
      return await segmentLocally(object, extraPoint);
    } catch (error) {
      useServer(`the decoder in this page failed (${error.message || error})`);
    }
  }
  const { prompt, multimask } = promptOf(object, extraPoint, true);
  const request = (body) => postJson(`/v1/images/${state.image.id}/segment`, body, signal);
  try {
    return await request({ prompts: [prompt], multimask, output: ['rle'] });
  } catch (error) {
    // The previous logits may have left the server's cache: SAM then starts from the prompts alone.
    if (!(error instanceof ApiError) || error.code !== 'logits_not_found') throw error;
    delete prompt.mask_input;
    return request({ prompts: [prompt], multimask, output: ['rle'] });
  }
}

/** The server's answer shape, decoded here: masks carry their low-res logits (`lowRes`) instead of a logits_id. */
async function segmentLocally(object, extraPoint) {
  const { prompt, multimask } = promptOf(object, extraPoint, false);
  const points = (prompt.points || []).map(([x, y], i) => [x, y, prompt.labels[i]]);
  const current = chosenMask(object);
  const maskInput = state.image.maskInput && current && current.lowRes ? current.lowRes : null;
  // A hover preview (an extra point) draws only the best mask.
  const limit = extraPoint ? 1 : Infinity;
  const found = await decoding.local.decode(state.image.embedding, { points, box: prompt.box }, multimask, maskInput, limit);
  const answer = found.map(({ mask, ...entry }) => {
    masks.set(entry.rle.counts, mask);
    return entry;
  });
  return { results: [{ masks: answer }] };
}

/** Adds a point or sets the box of the selected object, then asks for its new mask. */
async function addPrompt(change) {
  if (!state.image) return;
  cancelHover();
  remember();
  const object = objectToEdit();
  change(object);
  render();
  const started = performance.now();
  try {
    const answer = await segment(object, null);
    object.result = { masks: answer.results[0].masks, chosen: 0 };
    showStatus('');
  } catch (error) {
    showError(error);
  }
  render();
  performance.measure('click-to-mask', { start: started, end: performance.now(), detail: decodingMode() });
}

// ---- Hover preview ---------------------------------------------------------------------------------------------

// busy: a preview being decoded in the page (the next one waits for it).
const hover = { timer: null, pending: null, latest: 0, controller: null, busy: false };

function cancelHover() {
  clearTimeout(hover.timer);
  hover.timer = null;
  hover.pending = null;
  hover.latest += 1; // answers to earlier requests are now stale
  if (hover.controller) hover.controller.abort();
  drawHover(null);
}

/**
 * Decoded in the page, a preview follows the mouse: the latest position is decoded as soon as the previous preview
 * is drawn. From the server, at most one request per interval. Either way a newer position replaces the waiting
 * one and stale answers are dropped.
 */
function scheduleHover(point) {
  hover.pending = point;
  if (hover.timer || hover.busy) return;
  hover.timer = setTimeout(previewHover, decoding.local ? 0 : HOVER_INTERVAL_MS);
}

async function previewHover() {
  hover.timer = null;
  const target = hover.pending;
  hover.pending = null;
  if (!target || !state.image || !$('hover-toggle').checked) return;
  hover.latest += 1;
  const ticket = hover.latest;
  if (hover.controller) hover.controller.abort();
  hover.controller = new AbortController();
  const object = selectedObject() || { points: [], box: null, result: null };
  const started = performance.now();
  const local = Boolean(decoding.local);
  hover.busy = local;
  try {
    const answer = await segment(object, [...target, 1], hover.controller.signal);
    if (ticket === hover.latest) {
      drawHover(decodeMask(answer.results[0].masks[0].rle));
      performance.measure('hover-preview', { start: started, end: performance.now(), detail: decodingMode() });
    }
  } catch {
    // a dropped or failed preview changes nothing
  }
  hover.busy = false;
  if (local && hover.pending) scheduleHover(hover.pending);
}

// ---- Pointer input ---------------------------------------------------------------------------------------------

/** Scales the image, small or large, to the largest size that fits the stage and the window, keeping its aspect. */
function fitToStage() {
  if (!state.image) return;
  const stage = $('stage');
  const room = [stage.clientWidth, window.innerHeight - stage.getBoundingClientRect().top - 16];
  const scale = Math.max(Math.min(room[0] / state.image.width, room[1] / state.image.height), 0.01);
  const canvas = $('image-canvas');
  canvas.style.width = `${Math.floor(state.image.width * scale)}px`;
  canvas.style.height = `${Math.floor(state.image.height * scale)}px`;
}

/** Event position in original image pixels (the canvas is scaled to fit the window). */
function imagePoint(event) {
  const rect = $('prompt-canvas').getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.image.width;
  const y = ((event.clientY - rect.top) / rect.height) * state.image.height;
  return [Math.min(Math.max(x, 0), state.image.width), Math.min(Math.max(y, 0), state.image.height)];
}

const drag = { start: null, screenStart: null, moved: false };

function onPointerDown(event) {
  if (!state.image || (event.button !== 0 && event.button !== 2)) return;
  drag.start = imagePoint(event);
  drag.screenStart = [event.clientX, event.clientY];
  drag.moved = false;
  drag.button = event.button;
  $('prompt-canvas').setPointerCapture(event.pointerId);
}

function dragBox(event) {
  const [x, y] = imagePoint(event);
  const [x0, y0] = drag.start;
  return [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
}

function onPointerMove(event) {
  if (!state.image) return;
  if (drag.start) {
    const distance = Math.hypot(event.clientX - drag.screenStart[0], event.clientY - drag.screenStart[1]);
    // A decoder without a box input (the transformers export) takes the drag as a click where it ends.
    if (drag.button === 0 && state.image.boxes && distance > DRAG_THRESHOLD_PX) drag.moved = true;
    if (drag.moved) {
      cancelHover();
      drawPrompts(dragBox(event));
    }
    return;
  }
  scheduleHover(imagePoint(event));
}

function onPointerUp(event) {
  if (!drag.start) return;
  const { moved, button } = drag;
  const box = moved ? dragBox(event) : null;
  const point = imagePoint(event);
  drag.start = null;
  if (box) {
    addPrompt((object) => { object.box = box; });
  } else {
    const background = button === 2 || event.altKey || event.shiftKey;
    addPrompt((object) => { object.points.push([point[0], point[1], background ? 0 : 1]); });
  }
}

// ---- Opening images --------------------------------------------------------------------------------------------

async function openImage(file) {
  if (!file) return;
  cancelHover();
  showStatus('');
  $('upload').hidden = false;
  const progress = (fraction, text) => {
    $('upload-progress').value = Math.round(fraction * 100);
    $('upload-text').textContent = text;
  };
  progress(0, 'Uploading…');
  try {
    const info = await uploadImage(file, $('model-select').value, progress);
    state.file = file;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
    } catch {
      throw new ApiError(0, 'browser', 'the server read this image but this browser cannot display its format');
    }
    const { singleMask, maskInput, boxes } = await abilities(info.model);
    progress(1, 'Loading the decoder…');
    const embedding = await prepareDecoding(info);
    state.image = {
      id: info.image_id, width: info.width, height: info.height, fileName: file.name || 'image', bitmap, singleMask,
      maskInput, boxes, embedding,
    };
    // A decoder with one mask per prompt has no candidates to offer, and no grid of them to segment everything.
    $('everything').disabled = singleMask;
    $('everything').title = singleMask ? 'this model gives one mask per prompt' : '';
    state.objects = [];
    state.selected = null;
    history.undo.length = 0;
    history.redo.length = 0;
    masks.clear();
    for (const canvas of canvases()) {
      canvas.width = info.width;
      canvas.height = info.height;
    }
    $('image-canvas').getContext('2d').drawImage(bitmap, 0, 0, info.width, info.height);
    $('placeholder').hidden = true;
    $('canvases').hidden = false;
    fitToStage();
    const how = info.cached ? 'already encoded' : `encoded in ${info.encode_ms.toFixed(0)} ms`;
    showDecodingMode();
    progress(1, `${info.width}×${info.height}, ${how}`);
    render();
  } catch (error) {
    $('upload').hidden = true;
    showError(error);
  }
}

// ---- Export ----------------------------------------------------------------------------------------------------

function download(blob, fileName) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = fileName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function baseName() {
  return state.image.fileName.replace(/\.[^.]*$/, '');
}

async function canvasBlob(draw) {
  const canvas = new OffscreenCanvas(state.image.width, state.image.height);
  draw(canvas.getContext('2d'));
  return canvas.convertToBlob({ type: 'image/png' });
}

async function exportMask() {
  const object = selectedObject();
  const chosen = object && chosenMask(object);
  if (!chosen) return;
  const { width, height } = state.image;
  const mask = decodeMask(chosen.rle);
  const blob = await canvasBlob((context) => {
    context.fillStyle = '#000000';
    context.fillRect(0, 0, width, height);
    const layer = new OffscreenCanvas(width, height);
    layer.getContext('2d').putImageData(maskImage(mask, width, height, [255, 255, 255, 255]), 0, 0);
    context.drawImage(layer, 0, 0);
  });
  download(blob, `${baseName()}-${object.name}.png`);
}

async function exportCutout() {
  const object = selectedObject();
  const chosen = object && chosenMask(object);
  if (!chosen) return;
  const { width, height, bitmap } = state.image;
  const mask = decodeMask(chosen.rle);
  const blob = await canvasBlob((context) => {
    context.drawImage(bitmap, 0, 0, width, height);
    const pixels = context.getImageData(0, 0, width, height);
    for (let i = 0; i < mask.length; i += 1) if (!mask[i]) pixels.data[4 * i + 3] = 0;
    context.putImageData(pixels, 0, 0);
  });
  download(blob, `${baseName()}-${object.name}-cutout.png`);
}

function exportCoco() {
  const { width, height, fileName } = state.image;
  const annotations = state.objects.filter(chosenMask).map((object, index) => {
    const mask = chosenMask(object);
    return {
      id: index + 1, image_id: 1, category_id: 1, segmentation: mask.rle, area: mask.area, bbox: mask.bbox,
      iscrowd: 0, score: mask.score, name: object.name,
    };
  });
  const coco = {
    images: [{ id: 1, file_name: fileName, width, height }],
    categories: [{ id: 1, name: 'object' }],
    annotations,
  };
  download(new Blob([JSON.stringify(coco)], { type: 'application/json' }), `${baseName()}-coco.json`);
}

/** The loaded models (GET /v1/models), asked once; an empty list when the server cannot say. */
let modelList = null;
function models() {
  modelList = modelList || fetch('/v1/models', { headers: authorization() })
    .then((response) => {
      if (response.status === 401) askForKey();
      return response.ok ? response.json() : { models: [] };
    })
    .then((body) => body.models || [])
    .catch(() => []);
  return modelList;
}

/**
 * What the model's decoder can do: whether it gives one mask per prompt (then no multimask requests), whether it
 * takes mask_input (EdgeSAM's does not: clicks then start from the prompts alone) and boxes (the transformers
 * export does not: no box drawing).
 */
async function abilities(model) {
  const listed = (await models()).find((entry) => entry.name === model);
  return {
    singleMask: Boolean(listed && listed.single_mask),
    maskInput: !listed || listed.mask_input !== false,
    boxes: !listed || listed.boxes !== false,
  };
}

// ---- Where clicks are decoded ----------------------------------------------------------------------------------

/**
 * Loads the model's decoder into the page (once per decoder) and the image's embedding, and returns the
 * embedding; null, with the reason kept, where the page cannot decode and the server does it. `?decoder=server`
 * in the page's address asks for the server.
 */
async function prepareDecoding(info) {
  decoding.local = null;
  const model = (await models()).find((entry) => entry.name === info.model);
  const reason = new URLSearchParams(location.search).get('decoder') === 'server'
    ? 'asked for by ?decoder=server'
    : unsupportedReason(model);
  if (reason) return useServer(reason);
  try {
    let session = decoding.sessions.get(model.decoder_url);
    if (!session) {
      session = LocalDecoder.load(model, authorization());
      decoding.sessions.set(model.decoder_url, session);
      session.catch(() => decoding.sessions.delete(model.decoder_url));
    }
    const decoder = await session;
    const embedding = await decoder.embedding(info.image_id, authorization());
    decoding.local = decoder;
    decoding.reason = null;
    return embedding;
  } catch (error) {
    return useServer(`the decoder could not be loaded in this page (${error.message || error})`);
  }
}

function useServer(reason) {
  decoding.local = null;
  decoding.reason = reason;
  showDecodingMode();
  return null;
}

function decodingMode() {
  return decoding.local ? 'local' : 'server';
}

function showDecodingMode() {
  const element = $('decoder-mode');
  const local = decoding.local;
  element.dataset.mode = decodingMode();
  element.textContent = local
    ? `Clicks decoded in this page (WebAssembly, ${local.threads} thread${local.threads === 1 ? '' : 's'})`
    : `Clicks decoded on the server: ${decoding.reason}`;
  element.title = local ? `decoder loaded in ${local.loadMs.toFixed(0)} ms` : '';
  element.hidden = !state.image && !local;
}

// ---- Choosing the model ----------------------------------------------------------------------------------------

/** Fills the model picker (shown when the server has several) and starts on the default model. */
async function offerModels() {
  const listed = await models();
  const select = $('model-select');
  select.replaceChildren();
  for (const model of listed) {
    const option = document.createElement('option');
    option.value = model.name;
    option.textContent = `${model.name} (${model.family})`;
    option.selected = model.default;
    select.append(option);
  }
  $('model-picker').hidden = listed.length < 2;
  showNotice();
}

/** The chosen model's notice (the built-in demo model says how to get a real one). */
async function showNotice() {
  const chosen = (await models()).find((entry) => entry.name === $('model-select').value);
  $('notice').textContent = (chosen && chosen.notice) || '';
  $('notice').hidden = !(chosen && chosen.notice);
}

/** Another model answers from now on: the open image is uploaded again for it. */
function changeModel() {
  showNotice();
  if (state.file) openImage(state.file);
}

// ---- "Segment everything" (shown once the server offers it) ----------------------------------------------------

async function offerEverything() {
  try {
    const response = await fetch('/openapi.json');
    const openapi = await response.json();
    $('everything').hidden = !(openapi.paths && openapi.paths[EVERYTHING_PATH]);
  } catch {
    $('everything').hidden = true;
  }
}

async function segmentEverything() {
  if (!state.image) return;
  try {
    const answer = await postJson(`/v1/images/${state.image.id}/everything`, { output: ['rle'] });
    remember();
    for (const mask of answer.masks) {
      const object = newObject();
      object.result = { masks: [mask], chosen: 0 };
    }
    render();
  } catch (error) {
    showError(error);
  }
}

// ---- Status ----------------------------------------------------------------------------------------------------

function showStatus(text, kind) {
  const status = $('status');
  status.textContent = text;
  status.className = kind || '';
  status.hidden = !text;
}

function showError(error) {
  if (error && error.name === 'AbortError') return;
  const message = error instanceof ApiError ? error.message : String(error && error.message ? error.message : error);
  showStatus(`Error: ${message.charAt(0).toUpperCase()}${message.slice(1)}.`);
}

// ---- Wiring ----------------------------------------------------------------------------------------------------

function isTyping(event) {
  return event.target instanceof HTMLInputElement && ['text', 'password'].includes(event.target.type);
}

function onKeyDown(event) {
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && key === 'z') {
    event.preventDefault();
    if (event.shiftKey) redo(); else undo();
  } else if ((event.ctrlKey || event.metaKey) && key === 'y') {
    event.preventDefault();
    redo();
  } else if (isTyping(event) || event.ctrlKey || event.metaKey || event.altKey) {
    // leave the key to the text field or the browser
  } else if (key === 'n') {
    startNewObject();
  } else if ((key === 'delete' || key === 'backspace') && state.selected !== null) {
    deleteObject(state.selected);
  } else if (key === 'h' && selectedObject()) {
    remember();
    selectedObject().visible = !selectedObject().visible;
    render();
  }
}

function startNewObject() {
  if (!state.image) return;
  remember();
  newObject();
  render();
}

function resetAll() {
  if (!state.objects.length) return;
  remember();
  state.objects = [];
  state.selected = null;
  drawHover(null);
  render();
}

function wire() {
  $('file-input').addEventListener('change', (event) => openImage(event.target.files[0]));
  const stage = $('stage');
  stage.addEventListener('dragover', (event) => { event.preventDefault(); stage.classList.add('dragging'); });
  stage.addEventListener('dragleave', () => stage.classList.remove('dragging'));
  stage.addEventListener('drop', (event) => {
    event.preventDefault();
    stage.classList.remove('dragging');
    openImage(event.dataTransfer.files[0]);
  });
  document.addEventListener('paste', (event) => {
    const item = [...event.clipboardData.items].find((entry) => entry.kind === 'file');
    if (item) openImage(item.getAsFile());
  });
  const canvas = $('prompt-canvas');
  canvas.addEventListener('pointerdown', onPointerDown);
  canvas.addEventListener('pointermove', onPointerMove);
  canvas.addEventListener('pointerup', onPointerUp);
  canvas.addEventListener('pointerleave', () => { if (!drag.start) cancelHover(); });
  canvas.addEventListener('contextmenu', (event) => event.preventDefault());
  document.addEventListener('keydown', onKeyDown);
  $('new-object').addEventListener('click', startNewObject);
  $('undo').addEventListener('click', undo);
  $('redo').addEventListener('click', redo);
  $('reset').addEventListener('click', resetAll);
  $('opacity').addEventListener('input', () => { $('mask-canvas').style.opacity = $('opacity').value; });
  $('hover-toggle').addEventListener('change', cancelHover);
  $('export-mask').addEventListener('click', exportMask);
  $('export-coco').addEventListener('click', exportCoco);
  $('export-cutout').addEventListener('click', exportCutout);
  $('everything').addEventListener('click', segmentEverything);
  window.addEventListener('resize', () => {
    fitToStage();
    drawPrompts(null);
  });
  $('model-select').addEventListener('change', changeModel);
  $('key-form').addEventListener('submit', useKey);
  render();
  offerModels();
  offerEverything();
}

wire();
