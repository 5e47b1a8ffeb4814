// The mask decoder run in the page: onnxruntime-web (WebAssembly, served by samserve) on the server's cached
// embedding, with the server's own pre- and post-processing, so that a click or a hover preview needs no request.
// The rules mirror src/model/family.rs (points into the decoder's frame), src/model/decoder.rs (inputs, outputs,
// mask tokens) and src/mask/upscale.rs + full_size.rs (bilinear to the image, threshold, stability score); every
// float step is rounded to f32 as Rust computes it, so equal logits give equal masks.
import { rleString } from './rle.mjs';

/** (scores, low-res logits) output pairs of the decoder layouts the page runs (SamOnnxModel's, EdgeSAM's, SAM 2's). */
const OUTPUT_NAMES = [['iou_predictions', 'low_res_masks'], ['scores', 'masks'], ['iou_predictions', 'masks']];
const STABILITY_OFFSET = 1;
const f32 = Math.fround;

/** Why the page cannot decode in this browser, or null when it can try. */
export function unsupportedReason(model) {
  if (typeof WebAssembly !== 'object') return 'this browser runs no WebAssembly';
  if (!model || !model.browser_decoder) return `the decoder of ${model ? model.name : 'this model'} cannot run in a browser`;
  return null;
}

let runtime = null;

/** onnxruntime-web, loaded once; threads where the page is cross-origin isolated (samserve sends COOP/COEP). */
async function onnxRuntime() {
  runtime = runtime || import('/assets/ort/ort.wasm.min.mjs').then((ort) => {
    ort.env.wasm.wasmPaths = '/assets/ort/';
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    return ort;
  });
  return runtime;
}

async function fetchBytes(url, headers) {
  const response = await fetch(url, { headers });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.arrayBuffer();
}

/** A model's decoder session in this page. */
export class LocalDecoder {
  static async load(model, headers) {
    const ort = await onnxRuntime();
    const started = performance.now();
    const bytes = await fetchBytes(model.decoder_url, headers);
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    return new LocalDecoder(ort, session, model, performance.now() - started);
  }

  constructor(ort, session, model, loadMs) {
    this.ort = ort;
    this.session = session;
    this.model = model;
    this.loadMs = loadMs;
    this.threads = ort.env.wasm.numThreads;
    const outputs = OUTPUT_NAMES.find(([s, m]) => session.outputNames.includes(s) && session.outputNames.includes(m));
    if (!outputs) throw new Error('the decoder has no known (scores, low-res masks) outputs');
    [this.scoresOutput, this.lowResOutput] = outputs;
    this.takesMaskInput = session.inputNames.includes('mask_input');
    this.queue = Promise.resolve(); // one run at a time: a session takes no concurrent runs
  }

  /** The image's embedding, downloaded in the dtype the server decodes from: equal inputs, equal masks. */
  async embedding(imageId, headers) {
    const dtype = this.model.embedding_dtype || 'f32';
    const bytes = await fetchBytes(`/v1/images/${imageId}/embedding?dtype=${dtype}`, headers);
    return new Embedding(this.ort, bytes);
  }

  /**
   * The masks the server's `POST /segment` gives for one prompt ({points: [[x, y, label]], box}), best first;
   * `maskInput`: earlier low-res logits to refine (Float32Array), or null; `limit`: how many of the best masks to
   * bring to full size (a hover preview draws one).
   */
  decode(embedding, prompt, multimask, maskInput, limit = Infinity) {
    const run = this.queue.then(() => this.run(embedding, prompt, multimask, maskInput, limit));
    this.queue = run.catch(() => {});
    return run;
  }

  async run(embedding, prompt, multimask, maskInput, limit) {
    const { ort } = this;
    const { family, original, resized, inputSize, lowResSize } = embedding;
    const [coords, labels] = pointInputs(family, prompt, original, resized);
    const feeds = { ...embedding.tensors };
    feeds.point_coords = new ort.Tensor('float32', coords, [1, labels.length, 2]);
    feeds.point_labels = new ort.Tensor('float32', labels, [1, labels.length]);
    if (this.takesMaskInput) {
      const [h, w] = lowResSize;
      feeds.mask_input = new ort.Tensor('float32', maskInput || new Float32Array(h * w), [1, 1, h, w]);
      feeds.has_mask_input = new ort.Tensor('float32', new Float32Array([maskInput ? 1 : 0]), [1]);
    }
    // Only the graph's own upsampled output depends on it, which is not read (see src/model/decoder.rs).
    if (this.session.inputNames.includes('orig_im_size')) {
      feeds.orig_im_size = new ort.Tensor('float32', new Float32Array([1, 1]), [2]);
    }
    const outputs = await this.session.run(feeds);
    const lowRes = outputs[this.lowResOutput];
    const scores = outputs[this.scoresOutput].data;
    const masks = masksFromLogits(embedding, scores, lowRes.data, lowRes.dims.slice(-2), multimask, limit);
    for (const value of Object.values(outputs)) value.dispose?.();
    return masks;
  }
}

/**
 * The decoder's answer (per-token scores, [tokens, h, w] low-res logits) as the server's `masks` for the request,
 * best first (the `limit` best): score, stability_score, area, bbox, rle, plus the mask itself and its low-res logits.
 */
export function masksFromLogits({ family, original, resized, inputSize }, scores, logits, [h, w], multimask, limit = Infinity) {
  // Sorted as the server sorts its masks: by score, ties in token order (a stable sort).
  const tokens = answerTokens(scores, multimask).sort((a, b) => scores[b] - scores[a]).slice(0, limit);
  return tokens.map((token) => {
    const lowRes = logits.slice(token * h * w, (token + 1) * h * w);
    // SAM: to the input square, cropped to the resized image, then to the original; SAM 2: straight to the original.
    const atInput = family === 'sam' ? resize(lowRes, h, w, inputSize, inputSize, resized[0], resized[1]) : lowRes;
    const [inH, inW] = family === 'sam' ? resized : [h, w];
    const full = resize(atInput, inH, inW, original[0], original[1], original[0], original[1]);
    return { score: shortestF32(scores[token]), lowRes, ...encode(full, original) };
  });
}

/** A downloaded embedding (safetensors): its tensors by decoder input name, and the frames the server used. */
class Embedding {
  constructor(ort, bytes) {
    const headerLength = Number(new DataView(bytes).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(bytes, 8, headerLength)));
    const meta = header.__metadata__;
    const start = 8 + headerLength;
    this.family = meta.family;
    this.original = JSON.parse(meta.original_size);
    this.resized = JSON.parse(meta.resized_size);
    this.inputSize = Number(meta.input_size);
    this.lowResSize = JSON.parse(meta.low_res_size);
    this.bytes = bytes.byteLength;
    this.tensors = {};
    for (const [name, tensor] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const { dtype, shape, data_offsets: [from, to] } = tensor;
      const raw = bytes.slice(start + from, start + to);
      const data = dtype === 'F16' ? widen(new Uint16Array(raw)) : new Float32Array(raw);
      this.tensors[name] = new ort.Tensor('float32', data, shape);
    }
  }
}

/** IEEE half floats to f32 (exact). */
function widen(halves) {
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i += 1) {
    const h = halves[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) out[i] = sign * fraction * 2 ** -24;
    else if (exponent === 31) out[i] = fraction ? NaN : sign * Infinity;
    else out[i] = sign * (1024 + fraction) * 2 ** (exponent - 25);
  }
  return out;
}

/**
 * The prompt's points as the decoder takes them (Family::write_points): SAM puts the points, then the box corners
 * (labels 2 and 3), scaled by resized / original in f64, and pads a prompt without a box with (0, 0) labelled -1;
 * SAM 2 puts the corners first, divides by the original size and multiplies by its input size in f32.
 */
function pointInputs(family, prompt, original, resized) {
  const points = prompt.points.map(([x, y, label]) => [x, y, label]);
  const corners = prompt.box ? [[prompt.box[0], prompt.box[1], 2], [prompt.box[2], prompt.box[3], 3]] : [];
  let slots;
  if (family === 'sam') {
    const [scaleY, scaleX] = [resized[0] / original[0], resized[1] / original[1]];
    slots = [...points, ...corners].map(([x, y, label]) => [f32(x * scaleX), f32(y * scaleY), label]);
    if (!prompt.box) slots.push([0, 0, -1]);
  } else {
    const scale = (v, side, size) => f32(f32(f32(v) / side) * size);
    slots = [...corners, ...points].map(([x, y, label]) => [
      scale(x, original[1], resized[1]), scale(y, original[0], resized[0]), label,
    ]);
  }
  return [Float32Array.from(slots.flatMap(([x, y]) => [x, y])), Float32Array.from(slots.map((slot) => slot[2]))];
}

/** The tokens a request gets (Decoder::answer_tokens): four tokens are single + three candidates, three are the
 * candidates only (the best one answers a single-mask request), one is the graph's own choice. */
function answerTokens(scores, multimask) {
  const tokens = scores.length;
  if (tokens === 1) return [0];
  if (tokens === 3) {
    if (multimask) return [0, 1, 2];
    let best = 0;
    for (let t = 1; t < tokens; t += 1) if (scores[t] > scores[best]) best = t;
    return [best];
  }
  return multimask ? [1, 2, 3] : [0];
}

/** PyTorch's align_corners=False source taps, in f32 as src/mask/upscale.rs `taps`. */
function taps(inputLength, outputLength, keep) {
  const scale = f32(inputLength / outputLength);
  const lower = new Int32Array(keep);
  const upper = new Int32Array(keep);
  const weight = new Float32Array(keep);
  for (let dst = 0; dst < keep; dst += 1) {
    const source = Math.max(f32(f32(f32(dst + 0.5) * scale) - 0.5), 0);
    lower[dst] = Math.min(Math.floor(source), inputLength - 1);
    upper[dst] = Math.min(lower[dst] + 1, inputLength - 1);
    weight[dst] = f32(source - lower[dst]);
  }
  return { lower, upper, weight };
}

/** Bilinear resize of an inH x inW grid onto outH x outW, keeping the top-left keepH x keepW (upscale.rs `resize`):
 * the horizontal pass, then the vertical one, each lerp rounded to f32. */
function resize(input, inH, inW, outH, outW, keepH, keepW) {
  const columns = taps(inW, outW, keepW);
  const rows = taps(inH, outH, keepH);
  const rowsRead = keepH ? rows.upper[keepH - 1] + 1 : 0;
  const horizontal = new Float32Array(rowsRead * keepW);
  for (let r = 0; r < rowsRead; r += 1) {
    const row = r * inW;
    for (let x = 0; x < keepW; x += 1) {
      const w = columns.weight[x];
      horizontal[r * keepW + x] = f32(f32(input[row + columns.lower[x]] * f32(1 - w)) + f32(input[row + columns.upper[x]] * w));
    }
  }
  const output = new Float32Array(keepH * keepW);
  for (let y = 0; y < keepH; y += 1) {
    const w = rows.weight[y];
    const keep = f32(1 - w);
    const lower = rows.lower[y] * keepW;
    const upper = rows.upper[y] * keepW;
    for (let x = 0; x < keepW; x += 1) {
      output[y * keepW + x] = f32(f32(horizontal[lower + x] * keep) + f32(horizontal[upper + x] * w));
    }
  }
  return output;
}

/** Full-size logits -> the mask (row-major 0/1) and the fields of the API's mask entries: area, COCO bbox and RLE,
 * stability score. */
function encode(logits, [height, width]) {
  const mask = new Uint8Array(width * height);
  let [area, above, notBelow] = [0, 0, 0];
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const value = logits[y * width + x];
      if (value > STABILITY_OFFSET) above += 1;
      if (value > -STABILITY_OFFSET) notBelow += 1;
      if (value > 0) {
        mask[y * width + x] = 1;
        area += 1;
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = y;
      }
    }
  }
  // Column-major runs, the first counting zeros (COCO).
  const counts = [];
  let [value, run] = [0, 0];
  for (let x = 0; x < width; x += 1) {
    for (let y = 0; y < height; y += 1) {
      if (mask[y * width + x] !== value) {
        counts.push(run);
        [value, run] = [mask[y * width + x], 0];
      }
      run += 1;
    }
  }
  counts.push(run);
  const bbox = area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0];
  const stability = notBelow ? shortestF32(f32(f32(above) / f32(notBelow))) : 0;
  return { mask, area, bbox, stability_score: stability, rle: { size: [height, width], counts: rleString(counts) } };
}

/** An f32 as the shortest decimal that reads back to it, as the server's JSON writes it. */
function shortestF32(value) {
  for (let digits = 1; digits < 10; digits += 1) {
    const candidate = Number(value.toPrecision(digits));
    if (f32(candidate) === value) return candidate;
  }
  return value;
}
