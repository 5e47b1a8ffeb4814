"""The numbers of BENCHMARKS.md, in one run: samserve over HTTP and in process, side by side with the official
segment-anything code (PyTorch, CPU), and the ratios.

python tools/benchmarks.py [--out BENCHMARKS.md] [--seconds 10] [--only NAME]

Needs the tools' virtual environment, `wrk` (apt-get install wrk) and the Rust toolchain: it builds the release
binary, runs `cargo bench --bench pipeline` (the bare, in-process side), starts `samserve serve`, and drives it with
wrk. Cargo builds into SAMSERVE_BENCH_TARGET (a target folder; default: the repository's target/), where the binary
is then taken from: a folder of its own keeps the runs clear of another build. Models: the AMG fixture model
(tests/fixtures/models/amg: the samserve-s architecture with confident weights, whose PyTorch weights the official
side loads), the built-in samserve-s (its architecture with random weights on the official side: timings do not
depend on the weights, except mask counts in "segment everything", which is measured with the fixture models only)
and the SAM 2 fixture model (tests/fixtures/models/sam2-samexporter, whose network make_sam2_fixtures.py builds
again from its seed for the official SAM2ImagePredictor and SAM2AutomaticMaskGenerator).

--only NAME measures only the models whose name contains NAME (any case) and merges them into the JSON beside --out,
keeping the other models' stored results; the report says which models were measured in a later run than the rest.
"""

import argparse
import datetime
import http.client
import io
import json
import os
import platform
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools import mask as coco_mask
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

import make_sam2_fixtures
from sam_tiny import build_sam
from train_default import CONFIG as SAMSERVE_S_CONFIG

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TARGET = Path(os.environ.get("SAMSERVE_BENCH_TARGET") or ROOT / "target")
CARGO_ENV = {**os.environ, "CARGO_TARGET_DIR": str(TARGET)}
BINARY = TARGET / "release" / "samserve"
PHOTO = FIXTURES / "images" / "landscape.png"
LARGE = FIXTURES / "images" / "large.jpg"
THREADS = 2


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[max(1, int(np.ceil(q * len(ordered)))) - 1]


def timed(repeats, work):
    work()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1e3)
    return {"p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99)}


# ---- the official code --------------------------------------------------------------------------------------------


def official(config, weights):
    """SamPredictor and SamAutomaticMaskGenerator on the photo: set_image, one click with RLE, everything."""
    torch.set_num_threads(THREADS)
    sam = build_sam(config, seed=0)
    if weights:
        sam.load_state_dict(torch.load(weights))
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    predictor = SamPredictor(sam)
    click = np.array([[image.shape[1] * 0.6, image.shape[0] * 0.6]])

    def predict_rle():
        masks, _, _ = predictor.predict(click, np.array([1]), multimask_output=False)
        coco_mask.encode(np.asfortranarray(masks[0].astype(np.uint8)))

    with torch.no_grad():
        results = {"set_image": timed(10, lambda: predictor.set_image(image))}
        predictor.set_image(image)
        results["predict_click_rle"] = timed(200, predict_rle)
        if weights:
            results["everything"] = timed(3, lambda: SamAutomaticMaskGenerator(sam).generate(image))
            crops = SamAutomaticMaskGenerator(sam, crop_n_layers=1)
            results["everything_crops"] = timed(2, lambda: crops.generate(image))
            large = np.asarray(Image.open(LARGE).convert("RGB"))
            results["everything_large"] = timed(1, lambda: SamAutomaticMaskGenerator(sam).generate(large))
    return results


def official_sam2():
    """SAM2ImagePredictor and SAM2AutomaticMaskGenerator on the photo, with the SAM 2 fixture model's network
    (make_sam2_fixtures.build_model, set up as that script sets it up): set_image, one click with RLE, everything
    (also with a crop layer, and on the large photo). The fixture's decoder has only the three multimask candidates:
    samserve answers a single-mask request with the best-scored one, as make_sam2_fixtures.py's single-mask cases do,
    so the official click is predict with multimask_output=True, keeping the argmax of the scores."""
    torch.set_num_threads(THREADS)
    model = make_sam2_fixtures.build_model()
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    predictor = make_sam2_fixtures.make_predictor(model)
    click = np.array([[image.shape[1] * 0.6, image.shape[0] * 0.6]])

    def predict_rle():
        masks, scores, _ = predictor.predict(click, np.array([1]), multimask_output=True)
        coco_mask.encode(np.asfortranarray(masks[int(np.argmax(scores))].astype(np.uint8)))

    counts = []

    def generate(pixels, **params):
        """The official generator, default parameters but `params`, its predictor given the model's feature sizes
        (make_sam2_fixtures.amg_cases); its mask count goes to `counts`."""
        generator = SAM2AutomaticMaskGenerator(model, **params)
        make_sam2_fixtures.fit_feature_sizes(generator.predictor, model)
        counts.append(len(generator.generate(pixels)))

    with torch.no_grad():
        results = {"set_image": timed(10, lambda: predictor.set_image(image))}
        predictor.set_image(image)
        results["predict_click_rle"] = timed(200, predict_rle)
        results["everything"] = timed(3, lambda: generate(image))
        results["everything_masks"] = counts[-1]
        try:
            results["everything_crops"] = timed(2, lambda: generate(image, crop_n_layers=1))
            results["everything_crops_masks"] = counts[-1]
        except IndexError as error:
            # sam2 1.1.0 with crop layers and no mask kept in any crop: box_area of an empty crop_boxes.
            results["everything_crops_error"] = f"{type(error).__name__}: {error}"
        large = np.asarray(Image.open(LARGE).convert("RGB"))
        results["everything_large"] = timed(1, lambda: generate(large))
        results["everything_large_masks"] = counts[-1]
    return results


def official_batch_rate(config, weights, files):
    """Images per second of the obvious official loop: set_image, one box, RLE."""
    torch.set_num_threads(THREADS)
    sam = build_sam(config, seed=0)
    sam.load_state_dict(torch.load(weights))
    predictor = SamPredictor(sam)
    started = time.perf_counter()
    with torch.no_grad():
        for path in files:
            image = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
            predictor.set_image(image)
            box = np.array([0.2 * image.shape[1], 0.2 * image.shape[0], 0.7 * image.shape[1], 0.7 * image.shape[0]])
            masks, _, _ = predictor.predict(box=box, multimask_output=False)
            coco_mask.encode(np.asfortranarray(masks[0].astype(np.uint8)))
    return len(files) / (time.perf_counter() - started)


# ---- samserve in process ------------------------------------------------------------------------------------------


def bare(model, *extra):
    output = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "pipeline", "--", "--json", "--model", model, "--threads",
         str(THREADS), *extra],
        cwd=ROOT, check=True, capture_output=True, text=True, env=CARGO_ENV,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# ---- samserve over HTTP -------------------------------------------------------------------------------------------


class Server:
    def __init__(self, model_args, extra=()):
        self.data = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [str(BINARY), "--device", "cpu", "--threads", str(THREADS), "serve", "--port", "0", "--data-dir",
             self.data.name, *model_args, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RUST_LOG": "warn"},
        )
        self.base = self.process.stdout.readline().split()[-1]
        for _ in range(600):
            try:
                if urllib.request.urlopen(self.base + "/readyz").status == 200:
                    break
            except OSError:
                time.sleep(0.05)

    def post(self, path, body, content_type):
        request = urllib.request.Request(self.base + path, data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def rss_mb(self):
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def metric(self, name):
        text = urllib.request.urlopen(self.base + "/metrics").read().decode()
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def close(self):
        self.process.terminate()
        self.process.wait()
        self.data.cleanup()


def wrk(url, body, connections, seconds):
    """wrk with a POST body: requests/s, p50 and p99 in ms, and errors (non-2xx and socket errors)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
    threads = min(connections, THREADS)
    output = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", script.name, url],
        check=True, capture_output=True, text=True,
    ).stdout
    os.unlink(script.name)
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(label):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)$", output, re.M).groups()
        return float(value) * units[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency(50),
        "p99": latency(99),
        "errors": errors + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def distinct_pngs(count, size=(320, 240), seed=0):
    """`count` different small photos-to-be (noise on a gradient), as PNG bytes."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    for _ in range(count):
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        yield buffer.getvalue()


def photo_variants(count, seed=0):
    """`count` distinct PNGs of the photo, each with a few pixels changed by one level and saved as the photo is (PIL's
    defaults give its very bytes): uploads that each run the encoder, with the photo's size and decoding work."""
    pixels = np.asarray(Image.open(PHOTO).convert("RGB"))
    rng = np.random.default_rng(seed)
    for _ in range(count):
        varied = pixels.copy()
        varied[rng.integers(0, pixels.shape[0], 8), rng.integers(0, pixels.shape[1], 8)] ^= 1
        buffer = io.BytesIO()
        Image.fromarray(varied).save(buffer, "PNG")
        yield buffer.getvalue()


def http_side(server, seconds, bench_model):
    photo = PHOTO.read_bytes()
    image_id = server.post("/v1/images", photo, "image/png")["image_id"]
    width, height = Image.open(PHOTO).size
    body = json.dumps({"prompts": [{"points": [[width * 0.6, height * 0.6]], "labels": [1]}], "output": ["rle"]})
    url = f"{server.base}/v1/images/{image_id}/segment"
    results = {"prompt": wrk(url, body, 1, seconds)}
    # Uploads that each run the encoder (distinct bytes), one at a time on a kept-alive connection, as a client sees
    # them. They are the same kind of bytes as the photo that the bare side decodes: like for like. Made before the
    # timing: encoding PNGs in between slowed the server's next encoder run by a fifth (caches, cores).
    pngs = list(photo_variants(60, seed=1))
    # The bare side of this comparison again, right before the uploads (the server idle): the two minutes between
    # the in-process run and this point moved either side by up to a tenth.
    results["bare_decode_and_encode"] = bare(bench_model, "--only", "decode_and_encode")["stages"]["decode_and_encode"]
    address = urlparse(server.base)
    connection = http.client.HTTPConnection(address.hostname, address.port)
    times = []
    for png in pngs:
        started = time.perf_counter()
        connection.request("POST", "/v1/images", png, {"Content-Type": "image/png"})
        json.loads(connection.getresponse().read())
        times.append((time.perf_counter() - started) * 1e3)
    connection.close()
    results["upload_encode"] = {"p50": percentile(times, 0.5), "p99": percentile(times, 0.99)}
    results["sweep"] = {c: wrk(url, body, c, seconds) for c in (1, 4, 16, 64)}
    return results


def batch_rate(model_args, files, prompts):
    folder = tempfile.TemporaryDirectory()
    prompts_file = Path(folder.name) / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    started = time.perf_counter()
    subprocess.run([str(BINARY), "--device", "cpu", "batch", *model_args, *map(str, files), "--prompts",
                    str(prompts_file), "--output", str(Path(folder.name) / "out.json")],
                   check=True, capture_output=True)
    rate = len(files) / (time.perf_counter() - started)
    folder.cleanup()
    return rate


def memory(model_args):
    """Bytes per cached embedding, and resident memory after 1000 distinct uploads with a 512 MB cache."""
    server = Server(model_args, ["--cache-mb", "512"])
    idle = server.rss_mb()
    for png in distinct_pngs(1000, seed=2):
        server.post("/v1/images", png, "image/png")
    result = {
        "idle_mb": idle,
        "after_mb": server.rss_mb(),
        "entries": server.metric("samserve_embedding_cache_entries"),
        "cache_mb": server.metric("samserve_embedding_cache_bytes") / 2**20,
    }
    server.close()
    return result


# ---- the report ---------------------------------------------------------------------------------------------------


def machine():
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores, "
            f"{memory_kb / 2**20:.0f} GiB; {rustc}; PyTorch {torch.__version__}; ONNX Runtime 1.32.0; "
            f"{THREADS} threads per side")


def ratio(baseline, ours):
    return f"{baseline / ours:.2f}x" if ours else "n/a"


def official_code(name):
    """The official side's one-click row label, and notes, in the report: SAM's unless the model's setup has its
    own."""
    setup = model_setups().get(name)
    return {"click": "SamPredictor.predict + RLE", **(setup[3].get("official_code", {}) if setup else {})}


def report(results, seconds, before=None):
    lines = ["# samserve benchmarks", "",
             "Made by `python tools/benchmarks.py` (one run, everything side by side on the same machine). "
             "Times in milliseconds. A ratio is the baseline's time over samserve's (above 1: samserve is faster) "
             "unless said otherwise.", "",
             f"Machine: {results['machine']}. Photo: tests/fixtures/images/landscape.png (640x427); wrk runs "
             f"{seconds} s per point.", ""]
    if any("run" in model for model in results["models"].values()):
        lines[2] += (" A model measured later on its own (`--only`) says so under its heading: its two sides still "
                     "come from one run, but compare its ratios, not its times, with the other models'.")
    for name, model in results["models"].items():
        stages, http, official_side = model["bare"]["stages"], model["http"], model["official"]
        code = official_code(name)
        bare_upload = http.get("bare_decode_and_encode", stages["decode_and_encode"])
        lines += [f"## {name}", ""]
        if "run" in model:
            run = model["run"]
            load = " and ".join(f"{value:.1f}" for value in run.get("load", []))
            lines += [f"Measured in a separate run (`--only`, {run['date']}; {run['machine']}; wrk {run['seconds']} s "
                      "per point) and merged into this report's results"
                      + (f"; 1-minute load average {load} at its start and end (its own threads included)"
                         if load else "")
                      + (f"; run at niceness {run['nice']}" if run.get("nice") else "") + "."
                      + (f" {run['note']}" if run.get("note") else ""), ""]
        lines += ["### 1. One click (single mask as RLE, cached embedding)", "",
                  "| | p50 | p99 |", "| --- | --- | --- |",
                  f"| samserve over HTTP (wrk, 1 connection) | {http['prompt']['p50']:.2f} | {http['prompt']['p99']:.2f} |",
                  f"| in process: decoder run only | {stages['decoder_run']['p50']:.2f} | {stages['decoder_run']['p99']:.2f} |",
                  f"| in process: decoder + masks + RLE | {stages['segment_click_rle']['p50']:.2f} | {stages['segment_click_rle']['p99']:.2f} |",
                  f"| official {code['click']} | {official_side['predict_click_rle']['p50']:.2f} | {official_side['predict_click_rle']['p99']:.2f} |",
                  "",
                  f"HTTP / bare decoder run: {http['prompt']['p50'] / stages['decoder_run']['p50']:.2f} (p50); "
                  f"HTTP / in-process segment: {http['prompt']['p50'] / stages['segment_click_rle']['p50']:.2f}; "
                  f"official / HTTP: {ratio(official_side['predict_click_rle']['p50'], http['prompt']['p50'])}.", ""]
        if "click_note" in code:
            lines += [code["click_note"], ""]
        lines += ["### 2. Encode (image bytes to cached embedding)", "",
                  "| | p50 | p99 |", "| --- | --- | --- |",
                  f"| upload over HTTP (distinct re-encodes of the photo, sequential) | {http['upload_encode']['p50']:.2f} | {http['upload_encode']['p99']:.2f} |",
                  f"| in process: decode + preprocess + encoder (just before the uploads) | {bare_upload['p50']:.2f} | {bare_upload['p99']:.2f} |",
                  f"| in process: preprocess + encoder | {stages['encode']['p50']:.2f} | {stages['encode']['p99']:.2f} |",
                  f"| official set_image (preprocess + encoder) | {official_side['set_image']['p50']:.2f} | {official_side['set_image']['p99']:.2f} |",
                  "",
                  f"Throughput of HTTP uploads relative to the bare in-process path: "
                  f"{bare_upload['p50'] / http['upload_encode']['p50']:.2f}x; "
                  f"official set_image / samserve encode: {ratio(official_side['set_image']['p50'], stages['encode']['p50'])}.", ""]
        if "everything" in official_side:

            def masks(count, official_key):
                """The mask count, and the official generator's where the run kept it and it differs."""
                official_count = official_side.get(official_key, count)
                return f"{count} masks" + (f"; official: {official_count}" if official_count != count else "")

            rows = [("default parameters", "everything", stages.get("everything"), model["bare"]["everything_masks"]),
                    ("crop_n_layers=1", "everything_crops", stages.get("everything_crops"),
                     model["bare"]["everything_crops_masks"])]
            if "large" in model:
                rows.append(("default parameters on a 2304x1536 photo", "everything_large",
                             model["large"]["stages"]["everything"], model["large"]["everything_masks"]))
            lines += ["### 3. Segment everything", "",
                      "| | samserve | official | speed-up |", "| --- | --- | --- | --- |"]
            lines += [f"| {label} ({masks(count, key + '_masks')}) | {ours['p50']:.0f} | "
                      f"{official_side[key]['p50']:.0f} | {ratio(official_side[key]['p50'], ours['p50'])} |"
                      if key in official_side else
                      f"| {label} ({count} masks) | {ours['p50']:.0f} | fails (below) | n/a |"
                      for label, key, ours, count in rows if ours and (key in official_side or key + "_error"
                                                                        in official_side)]
            lines += ["", "Both sides start from the decoded image (the encoder run included). The generator's network "
                      "work (1024 decoder prompts per crop) is the same on both sides; samserve's gain is in what "
                      "follows it, so it grows with the image size (the official code upsamples every candidate to "
                      "full size).", ""]
            for label, key, *_ in rows:
                if key + "_error" in official_side:
                    lines += [f"The official generator failed with {label}: `{official_side[key + '_error']}`.", ""]
            if "generator_note" in code:
                lines += [code["generator_note"], ""]
        if "batch" in model:
            lines += ["### 4. Batch (one box per image, COCO RLE out)", "",
                      f"`samserve batch`: {model['batch']['samserve']:.1f} images/s; the official loop "
                      f"(set_image, predict, RLE): {model['batch']['official']:.1f} images/s; "
                      f"{model['batch']['samserve'] / model['batch']['official']:.2f}x.", ""]
        lines += ["### 5. Concurrency (wrk, one click per request)", "",
                  "| connections | requests/s | p50 | p99 | p99/p50 | errors |", "| --- | --- | --- | --- | --- | --- |"]
        for connections, point in http["sweep"].items():
            lines.append(f"| {connections} | {point['rps']:.0f} | {point['p50']:.2f} | {point['p99']:.2f} | "
                         f"{point['p99'] / point['p50']:.2f} | {point['errors']} |")
        lines.append("")
        if "memory" in model:
            m = model["memory"]
            per = m["cache_mb"] * 2**20 / max(m["entries"], 1)
            lines += ["### 6. Memory", "",
                      f"{per / 1024:.0f} KiB per cached embedding. Resident memory: {m['idle_mb']:.0f} MB when ready, "
                      f"{m['after_mb']:.0f} MB after 1000 distinct uploads (--cache-mb 512; {m['entries']:.0f} "
                      f"embeddings cached, {m['cache_mb']:.0f} MB): {m['after_mb'] - m['idle_mb'] - m['cache_mb']:.0f} MB "
                      "above the idle process plus the cache.", ""]
    lines += before_and_after(before, results)
    return "\n".join(lines)


def key_measures(model):
    """The measures the speed targets are about, for the before/after table (None where a run lacks one)."""
    stages, http, official_side = model["bare"]["stages"], model["http"], model["official"]
    measures = {
        "one click over HTTP, p50 (ms)": http["prompt"]["p50"],
        "HTTP / bare decoder run (target <= 1.25)": http["prompt"]["p50"] / stages["decoder_run"]["p50"],
        "official predict / HTTP (target >= 2)": official_side["predict_click_rle"]["p50"] / http["prompt"]["p50"],
        "upload throughput / bare decode + encode (target >= 0.9)":
            http.get("bare_decode_and_encode", stages["decode_and_encode"])["p50"] / http["upload_encode"]["p50"],
        "64 connections: requests/s": http["sweep"]["64"]["rps"],
    }
    if "everything" in official_side:
        measures["everything, official / samserve (target >= 3)"] = (
            official_side["everything"]["p50"] / stages["everything"]["p50"])
        if "everything_crops" in official_side:
            measures["everything with crops, official / samserve"] = (
                official_side["everything_crops"]["p50"] / stages["everything_crops"]["p50"])
    return measures


def keep_before(results, before):
    """Stores in each model's entry the key measures of the run before it (from `before`, where its entry there is
    another run's), unless the entry holds them already: the before/after table then survives merging one model's
    new run (`--only`) and rendering again."""
    for name, model in results["models"].items():
        old = (before or {}).get("models", {}).get(name)
        if "before" not in model and old is not None and old != model:
            model["before"] = key_measures(old)


def before_and_after(before, after):
    """The before/after tables: each model's stored measures of the run before its own (`keep_before`), or else
    its entry in `before` where that is another run."""
    tables = []
    for name, model in after["models"].items():
        old = model.get("before")
        if old is None:
            entry = (before or {}).get("models", {}).get(name)
            old = key_measures(entry) if entry is not None and entry != model else None
        if old is None:
            continue
        tables += [f"### {name}", "", "| measure | before | after |", "| --- | --- | --- |"]
        tables += [f"| {measure} | {old[measure]:.2f} | {value:.2f} |"
                   for measure, value in key_measures(model).items() if measure in old]
        tables.append("")
    if not tables:
        return []
    return ["## Before and after", "",
            "This run against the previous one (the BENCHMARKS.json this run replaced, or `--before`). Two runs are "
            "further apart in time than the sides of one run, so compare the ratios rather than the times.", "",
            *tables]


def model_setups():
    """name: (samserve serve's model arguments, the bench's --model, the official side, extras). Extras: "large"
    (everything on the large photo too), "batch" (the official batch loop, and `samserve batch` with these
    arguments), "memory" (the cache's memory), "official_code" (`official_code`: the official one-click row's label,
    and notes under the one-click and everything tables)."""
    fixture_dir = FIXTURES / "models" / "amg"
    weights = fixture_dir / "weights.pt"
    sam2_dir = FIXTURES / "models" / "sam2-samexporter"
    return {
        "Fixture model (tests/fixtures/models/amg; official weights on the PyTorch side)": (
            ["--model", str(fixture_dir)], str(fixture_dir), lambda: official(SAMSERVE_S_CONFIG, weights),
            {"large": True,
             "batch": (["--model", str(fixture_dir)], lambda files: official_batch_rate(SAMSERVE_S_CONFIG, weights,
                                                                                        files))}),
        "samserve-s, the built-in model": (
            ["--models", "/nonexistent"], "builtin", lambda: official(SAMSERVE_S_CONFIG, None), {"memory": True}),
        "SAM 2 fixture model (tests/fixtures/models/sam2-samexporter; the same network on the PyTorch side)": (
            ["--model", str(sam2_dir)], str(sam2_dir), official_sam2,
            {"large": True, "official_code": {
                "click": "SAM2ImagePredictor.predict + RLE",
                "click_note": "The fixture's decoder (samexporter's SAM 2 export) answers the three multimask "
                              "candidates only: samserve keeps the best-scored one for a single-mask request, and "
                              "the official side is predict with multimask_output=True and the argmax of the scores "
                              "(as in tools/make_sam2_fixtures.py).",
                "generator_note": "The official side is SAM2AutomaticMaskGenerator with its own defaults "
                                  "(pred_iou_thresh 0.8, which samserve also takes for a SAM 2 model), its predictor "
                                  "given the 512 model's feature sizes as in tools/make_sam2_fixtures.py. The "
                                  "untrained fixture's candidates span nearly the whole image with stability scores "
                                  "under 0.95, so that few or none pass the default filters (make_sam2_fixtures.py "
                                  "lowers them for its AMG cases): the times are then the network work and the "
                                  "filtering of every candidate, with little or nothing to encode. A failure with a "
                                  "crop layer is sam2 1.1.0's when no crop keeps a mask: `box_area` of the empty "
                                  "crop_boxes."}}),
    }


def measure(name, setup, seconds):
    server_args, bench_model, official_side, extras = setup
    print(f"{name}: in process", flush=True)
    entry = {"bare": bare(bench_model)}
    if extras.get("large"):
        entry["large"] = bare(bench_model, "--image", str(LARGE), "--only", "everything")
    # HTTP before the official side: right after the official generator's gigabytes of full-size masks, the
    # first wrk run measured one click 1.3x slower than the same run on a settled machine.
    print(f"{name}: HTTP", flush=True)
    server = Server(server_args)
    entry["http"] = http_side(server, seconds, bench_model)
    server.close()
    print(f"{name}: official", flush=True)
    entry["official"] = official_side()
    if "batch" in extras:
        model_args, official_rate = extras["batch"]
        files = sorted((FIXTURES / "images").glob("*.[pj][np]g"))
        files = [f for f in files if f.name != "rgb16.png"] * 3
        prompts = {}
        for f in set(files):
            w, h = ImageOps.exif_transpose(Image.open(f)).size
            prompts[f.name] = [{"box": [0.2 * w, 0.2 * h, 0.7 * w, 0.7 * h]}]
        entry["batch"] = {"samserve": batch_rate(model_args, files, prompts), "official": official_rate(files)}
    if extras.get("memory"):
        print(f"{name}: memory", flush=True)
        entry["memory"] = memory(server_args)
    return entry


# The section tests/e2e/bench_page.mjs writes (the page in a browser): kept as it is.
PAGE_SECTION = "## In the page"


def write_report(path, text):
    """Writes the report, keeping the page benchmark's section of the file it replaces."""
    old = path.read_text() if path.exists() else ""
    page = old[old.index(PAGE_SECTION):] if PAGE_SECTION in old else ""
    path.write_text(text + "\n" + ("\n" + page if page else ""))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--before", help="results to compare with (default: the JSON beside --out, from the last run)")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: write the report again from the JSON beside --out")
    parser.add_argument("--only", metavar="NAME",
                        help="measure only the models whose name contains NAME (any case), and merge them into the "
                             "JSON beside --out, keeping the other models' results")
    parser.add_argument("--note", help="with --only: a remark on the run (a repeat's numbers, the machine's state), "
                                       "printed under each measured model's heading")
    args = parser.parse_args()
    out_json = Path(args.out).with_suffix(".json")
    before_path = Path(args.before) if args.before else out_json
    before = json.loads(before_path.read_text()) if before_path.exists() else None
    if args.render_only:
        results = json.loads(out_json.read_text())
        keep_before(results, before)
        write_report(Path(args.out), report(results, results.get("seconds", args.seconds), before))
        print(f"wrote {args.out}")
        return
    setups = model_setups()
    if args.only:
        setups = {name: setup for name, setup in setups.items() if args.only.lower() in name.lower()}
        if not setups:
            parser.error(f"no model's name contains {args.only!r}")
        if not out_json.exists():
            parser.error(f"--only merges into {out_json}, which does not exist: run every model first")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True, env=CARGO_ENV)
    if args.only:
        results = json.loads(out_json.read_text())
        # The 1-minute load average before and after, and the niceness the run had: a run on its own may meet
        # other work on the machine.
        run = {"date": datetime.date.today().isoformat(), "machine": machine(), "seconds": args.seconds,
               "load": [os.getloadavg()[0]], "nice": os.nice(0), **({"note": args.note} if args.note else {})}
    else:
        results = {"machine": machine(), "seconds": args.seconds, "models": {}}
    for name, setup in setups.items():
        entry = measure(name, setup, args.seconds)
        if args.only:
            entry["run"] = run
        results["models"][name] = entry
    if args.only:
        run["load"].append(os.getloadavg()[0])
    results = json.loads(json.dumps(results, default=str))  # as it will be read back (string keys)
    keep_before(results, before)
    write_report(Path(args.out), report(results, results["seconds"], before))
    out_json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
