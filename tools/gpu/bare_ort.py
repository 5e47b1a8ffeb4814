"""Bare ONNX Runtime: a model folder's encoder and decoder files run alone through onnxruntime's Python API, the
baseline of the GPU report (tools/gpu/check.sh). One click per decoder run, as samserve's `decoder_run` stage; on
CUDA the embedding stays on the GPU (IoBinding), as samserve keeps it.

python3 tools/gpu/bare_ort.py MODEL_DIR [--device cuda|cpu] [--runs N]

Prints one line of JSON: p50 and p99 milliseconds of `encoder_run` and `decoder_run`, and the providers used.
"""

import argparse
import json
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort


def timed(runs, work):
    work()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1e3)
    samples.sort()
    at = lambda q: samples[max(1, int(np.ceil(q * len(samples)))) - 1]  # noqa: E731
    return {"p50": at(0.5), "p99": at(0.99)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    manifest = tomllib.loads((args.model / "model.toml").read_text())
    providers = ["CUDAExecutionProvider"] if args.device == "cuda" else ["CPUExecutionProvider"]
    encoder = ort.InferenceSession(str(args.model / manifest["encoder"]), providers=providers)
    decoder = ort.InferenceSession(str(args.model / manifest["decoder"]), providers=providers)
    for session in (encoder, decoder):
        if session.get_providers()[0] != providers[0]:
            raise SystemExit(f"{providers[0]} is not available: {session.get_providers()}")

    size = manifest["image_size"]
    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    encoder_input = encoder.get_inputs()[0].name
    results = {"encoder_run": timed(args.runs, lambda: encoder.run(None, {encoder_input: pixels}))}

    embedding = encoder.run(None, {encoder_input: pixels})[0]
    low_res = 4 * embedding.shape[2]
    feeds = {
        "point_coords": np.array([[[size * 0.6, size * 0.4], [0.0, 0.0]]], dtype=np.float32),
        "point_labels": np.array([[1.0, -1.0]], dtype=np.float32),
        "mask_input": np.zeros((1, 1, low_res, low_res), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
    }
    if any(i.name == "orig_im_size" for i in decoder.get_inputs()):
        feeds["orig_im_size"] = np.array([1.0, 1.0], dtype=np.float32)  # as samserve feeds it (unused output)
    binding = decoder.io_binding()
    binding.bind_ortvalue_input("image_embeddings", ort.OrtValue.ortvalue_from_numpy(embedding, args.device, 0))
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for output in ("iou_predictions", "low_res_masks"):
        binding.bind_output(output, "cpu")

    def decode():
        decoder.run_with_iobinding(binding)
        binding.copy_outputs_to_cpu()

    results["decoder_run"] = timed(args.runs * 4, decode)
    results["providers"] = providers
    print(json.dumps(results))


if __name__ == "__main__":
    main()
